"""Study stage `summarize@<seed>-<arm>`: summaries/<seed>/<arm>.json, what the analysis needs of
one arm of one seed (its dose, budget checks, and each model's correct and discordant counts),
from the arm's and the AT baseline's metrics, outcomes and budget traces
(part/study/summaries.py). Run from the study's directory."""

import typer

from part.study.summaries import write_summary
from part.ui import console, guarded

app = typer.Typer(add_completion=False, help=__doc__)


@app.command(help=__doc__)
@guarded
def main(seed: int = typer.Argument(..., help="one of the study's seeds"),
         arm: str = typer.Argument(..., help="the arm's name in study/params.yaml")) -> None:
    console.print(f"wrote {write_summary(seed, arm)}")


if __name__ == "__main__":
    app()
