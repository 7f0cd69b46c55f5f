"""Study stage `configure@<seed>-<run>`: seeds/<seed>/<run>/params.yaml from the default run's
params and the study's (part/study/config.py). Run from the study's directory."""

import typer

from part.study.config import write_run_params
from part.ui import console, guarded

app = typer.Typer(add_completion=False, help=__doc__)


@app.command(help=__doc__)
@guarded
def main(seed: int = typer.Argument(..., help="one of the study's seeds"),
         run_dir: str = typer.Argument(..., help="at, or one of the study's arms")) -> None:
    console.print(f"wrote {write_run_params(seed, run_dir)}")


if __name__ == "__main__":
    app()
