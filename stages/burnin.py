"""DVC stage `burnin@<seed>`: the base method on the uniform budget
-> models/burnin-<seed>.safetensors."""

from part.pipeline import run_burnin
from part.stage import seed_stage_app

app = seed_stage_app(run_burnin, __doc__)

if __name__ == "__main__":
    app()
