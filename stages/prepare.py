"""DVC stage `prepare`: the source data set -> data/prepared/{train,test}.safetensors."""

from part.pipeline import PREPARE_PARAMS, run_prepare
from part.stage import stage_app

# Prepare checks only the params it reads: the other choices' owners (attacks, models, ...) are
# not its code, and a change to them must not rerun it. Every later stage checks them all.
app = stage_app(run_prepare, __doc__, checks=PREPARE_PARAMS)

if __name__ == "__main__":
    app()
