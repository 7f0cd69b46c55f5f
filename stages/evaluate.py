"""DVC stage `evaluate@<variant>-<seed>`: every attack of params.eval on the prepared test set
-> metrics/<variant>-<seed>.json and the per-example outcomes beside it."""

from part.pipeline import run_evaluate
from part.stage import variant_stage_app

app = variant_stage_app(run_evaluate, __doc__)

if __name__ == "__main__":
    app()
