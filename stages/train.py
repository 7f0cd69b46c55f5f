"""DVC stages `train@baseline` and `train@part`: training that continues the shared burn-in."""

from part.pipeline import run_train
from part.stage import variant_stage_app

app = variant_stage_app(run_train, __doc__)

if __name__ == "__main__":
    app()
