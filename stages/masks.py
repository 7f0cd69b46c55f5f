"""DVC stage `masks`: CAM importance masks of every training sample from the burn-in model."""

import typer

from part.params import load_params
from part.pipeline import run_masks
from part.ui import guarded

app = typer.Typer(add_completion=False)


@app.command()
@guarded
def main(params: str = typer.Option("params.yaml", help="the params file")) -> None:
    run_masks(load_params(params))


if __name__ == "__main__":
    app()
