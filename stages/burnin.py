"""DVC stage `burnin`: the base method on the uniform budget -> models/burnin.safetensors."""

from part.pipeline import run_burnin
from part.stage import stage_app

app = stage_app(run_burnin, __doc__)

if __name__ == "__main__":
    app()
