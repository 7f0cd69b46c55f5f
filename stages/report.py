"""DVC stage `report`: paired statistics over seeds -> reports/study.json, reports/results.md and
the accuracy-robustness plot."""

from part.pipeline import run_report
from part.stage import stage_app

app = stage_app(run_report, __doc__)

if __name__ == "__main__":
    app()
