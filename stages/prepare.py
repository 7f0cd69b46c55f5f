"""DVC stage `prepare`: the source data set -> data/prepared/{train,test}.safetensors."""

import typer

from part.params import load_params
from part.pipeline import run_prepare
from part.ui import guarded

app = typer.Typer(add_completion=False)


@app.command()
@guarded
def main(params: str = typer.Option("params.yaml", help="the params file")) -> None:
    run_prepare(load_params(params))


if __name__ == "__main__":
    app()
