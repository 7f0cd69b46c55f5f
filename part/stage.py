"""The shapes of the DVC stage commands: read params.yaml, pick the seed (and variant), run one
pipeline step."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Collection
from typing import Any

import typer

from part.params import Params, load_params
from part.ui import guarded

PARAMS_OPTION = typer.Option("params.yaml", "--params", help="the params file")
SEED_OPTION = typer.Option(None, "--seed",
                           help="one of `seeds` in params.yaml (default: the first)")


def _leaving_the_process_group(function: Callable[..., Any]) -> Callable[..., Any]:
    """A stage that joined torchrun's process group leaves it before its process ends, whether
    it finished or failed: a gloo group still alive at interpreter exit can abort the process
    (std::terminate, SIGABRT) after its one-line message, which reads as a crash. Looked up in
    sys.modules, so that a stage that never imported torch.distributed does not import it."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        finally:
            distributed = sys.modules.get("torch.distributed")
            if distributed is not None and distributed.is_available() \
                    and distributed.is_initialized():
                distributed.destroy_process_group()

    return wrapper


def _seeded(params: Params, seed: int | None) -> Params:
    return params.for_seed(params.seeds[0] if seed is None else seed)


def stage_app(run: Callable[[Params], Any], description: str,
              checks: Collection[str] | None = None) -> typer.Typer:
    """A stage run once for the whole pipeline (prepare, budgets, report). `checks` limits the
    check of choice params against their owners' registries to those keys (see load_params)."""
    app = typer.Typer(add_completion=False, help=description)

    @app.command(help=description)
    @guarded
    @_leaving_the_process_group
    def main(params: str = PARAMS_OPTION) -> None:
        run(load_params(params, checks))

    return app


def seed_stage_app(run: Callable[[Params], Any], description: str) -> typer.Typer:
    """A stage run once per seed (burnin, masks)."""
    app = typer.Typer(add_completion=False, help=description)

    @app.command(help=description)
    @guarded
    @_leaving_the_process_group
    def main(seed: int | None = SEED_OPTION, params: str = PARAMS_OPTION) -> None:
        run(_seeded(load_params(params), seed))

    return app


def variant_stage_app(run: Callable[[Params, str], Any], description: str) -> typer.Typer:
    """A stage run once per variant and seed (train, evaluate)."""
    app = typer.Typer(add_completion=False, help=description)

    @app.command(help=description)
    @guarded
    @_leaving_the_process_group
    def main(variant: str = typer.Argument(..., help="baseline, part, uniform_matched or "
                                                     "random_mask (one of `variants`)"),
             seed: int | None = SEED_OPTION, params: str = PARAMS_OPTION) -> None:
        run(_seeded(load_params(params), seed), variant)

    return app
