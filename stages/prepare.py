"""DVC stage `prepare`: the source data set -> data/prepared/{train,test}.safetensors."""

from part.pipeline import run_prepare
from part.stage import stage_app

app = stage_app(run_prepare, __doc__)

if __name__ == "__main__":
    app()
