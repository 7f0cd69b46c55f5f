"""DVC stages `train@baseline` and `train@part`: training after the shared burn-in."""

import typer

from part.params import load_params
from part.pipeline import run_train
from part.ui import guarded

app = typer.Typer(add_completion=False)


@app.command()
@guarded
def main(
    variant: str = typer.Argument(..., help="baseline (uniform eps) or part (CAM budget map)"),
    params: str = typer.Option("params.yaml", help="the params file"),
) -> None:
    run_train(load_params(params), variant)


if __name__ == "__main__":
    app()
