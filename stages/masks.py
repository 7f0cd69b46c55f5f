"""DVC stage `masks@<seed>`: CAM importance masks of every training sample from the burn-in model,
and a gallery of them -> masks/burnin-<seed>.safetensors, masks/gallery-<seed>.png."""

from part.pipeline import run_masks
from part.stage import seed_stage_app

app = seed_stage_app(run_masks, __doc__)

if __name__ == "__main__":
    app()
