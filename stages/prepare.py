"""DVC stage `prepare`: the source data set -> data/prepared/{train,test}.safetensors."""

from part.pipeline import run_prepare
from part.stage import stage_app

# Prepare checks only the params it reads: the other choices' owners (attacks, models, ...) are
# not its code, and a change to them must not rerun it. The next stage checks them all.
app = stage_app(run_prepare, __doc__, checks=("dataset", "data"))

if __name__ == "__main__":
    app()
