"""DVC stage `masks`: CAM importance masks of every training sample, from the burn-in model."""

from part.pipeline import run_masks
from part.stage import stage_app

app = stage_app(run_masks, __doc__)

if __name__ == "__main__":
    app()
