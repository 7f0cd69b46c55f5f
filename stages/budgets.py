"""DVC stage `budgets`: each variant's budget settings -> budgets/<variant>.json (the baseline's
names none of the CAM settings, so changing them never retrains it)."""

from part.pipeline import run_budgets
from part.stage import stage_app

app = stage_app(run_budgets, __doc__)

if __name__ == "__main__":
    app()
