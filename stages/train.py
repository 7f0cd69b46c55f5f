"""DVC stage `train@<variant>-<seed>`: training that continues the seed's burn-in."""

from part.pipeline import run_train
from part.stage import variant_stage_app

app = variant_stage_app(run_train, __doc__)

if __name__ == "__main__":
    app()
