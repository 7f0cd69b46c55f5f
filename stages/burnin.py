"""DVC stage `burnin`: the base method on the uniform budget -> models/burnin.safetensors."""

import typer

from part.params import load_params
from part.pipeline import run_burnin
from part.ui import guarded

app = typer.Typer(add_completion=False)


@app.command()
@guarded
def main(params: str = typer.Option("params.yaml", help="the params file")) -> None:
    run_burnin(load_params(params))


if __name__ == "__main__":
    app()
