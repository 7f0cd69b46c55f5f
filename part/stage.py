"""The one shape of every DVC stage command: read params.yaml, run one pipeline step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from part.params import Params, load_params
from part.ui import guarded

PARAMS_OPTION = typer.Option("params.yaml", "--params", help="the params file")


def stage_app(run: Callable[[Params], Any], description: str) -> typer.Typer:
    app = typer.Typer(add_completion=False, help=description)

    @app.command(help=description)
    @guarded
    def main(params: str = PARAMS_OPTION) -> None:
        run(load_params(params))

    return app


def variant_stage_app(run: Callable[[Params, str], Any], description: str) -> typer.Typer:
    app = typer.Typer(add_completion=False, help=description)

    @app.command(help=description)
    @guarded
    def main(variant: str = typer.Argument(..., help="baseline (uniform eps) or part (budget map)"),
             params: str = PARAMS_OPTION) -> None:
        run(load_params(params), variant)

    return app
