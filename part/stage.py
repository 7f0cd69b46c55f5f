"""The shapes of the DVC stage commands: read params.yaml, pick the seed (and variant), run one
pipeline step."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import typer

from part.params import Params, load_params
from part.ui import guarded

PARAMS_OPTION = typer.Option("params.yaml", "--params", help="the params file")
SEED_OPTION = typer.Option(None, "--seed",
                           help="one of `seeds` in params.yaml (default: the first)")


def _seeded(params: Params, seed: int | None) -> Params:
    return params.for_seed(params.seeds[0] if seed is None else seed)


def stage_app(run: Callable[[Params], Any], description: str,
              checks: Collection[str] | None = None) -> typer.Typer:
    """A stage run once for the whole pipeline (prepare, budgets, report). `checks` limits the
    check of choice params against their owners' registries to those keys (see load_params)."""
    app = typer.Typer(add_completion=False, help=description)

    @app.command(help=description)
    @guarded
    def main(params: str = PARAMS_OPTION) -> None:
        run(load_params(params, checks))

    return app


def seed_stage_app(run: Callable[[Params], Any], description: str) -> typer.Typer:
    """A stage run once per seed (burnin, masks)."""
    app = typer.Typer(add_completion=False, help=description)

    @app.command(help=description)
    @guarded
    def main(seed: int | None = SEED_OPTION, params: str = PARAMS_OPTION) -> None:
        run(_seeded(load_params(params), seed))

    return app


def variant_stage_app(run: Callable[[Params, str], Any], description: str) -> typer.Typer:
    """A stage run once per variant and seed (train, evaluate)."""
    app = typer.Typer(add_completion=False, help=description)

    @app.command(help=description)
    @guarded
    def main(variant: str = typer.Argument(..., help="baseline, part, uniform_matched or "
                                                     "random_mask (one of `variants`)"),
             seed: int | None = SEED_OPTION, params: str = PARAMS_OPTION) -> None:
        run(_seeded(load_params(params), seed), variant)

    return app
