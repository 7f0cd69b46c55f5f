"""Study stage `report`: study/report/ (results.md, study.json and one paired plot per arm)
from the per-seed summaries (summaries/<seed>/<arm>.json), with the pre-registered analysis
(part/study/analysis.py, part/study/report.py). Run from the study's directory."""

import typer

from part.study.report import run_study_report
from part.ui import console, guarded

app = typer.Typer(add_completion=False, help=__doc__)


@app.command(help=__doc__)
@guarded
def main() -> None:
    console.print(f"wrote {run_study_report()}")


if __name__ == "__main__":
    app()
