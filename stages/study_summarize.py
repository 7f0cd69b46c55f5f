"""Study stage `summarize@<arm>`: summaries/<arm>.json, what the report needs of one arm (its
dose, budget checks, its variants against the shared baseline and its primary comparisons
before Holm), from the arm's metrics, outcomes and budget traces and the shared baseline's
(part/study/summaries.py). Run from the study's directory."""

import typer

from part.study.summaries import write_arm_summary
from part.ui import console, guarded

app = typer.Typer(add_completion=False, help=__doc__)


@app.command(help=__doc__)
@guarded
def main(arm: str = typer.Argument(..., help="the arm's name in study/params.yaml")) -> None:
    console.print(f"wrote {write_arm_summary(arm)}")


if __name__ == "__main__":
    app()
