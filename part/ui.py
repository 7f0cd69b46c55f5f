"""Console output and the one way an expected failure reaches a person: a message and exit 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from rich.console import Console

from part.errors import PartError

console = Console(stderr=True, highlight=False)
stdout = Console(highlight=False)

F = TypeVar("F", bound=Callable[..., Any])

EXIT_BAD_INPUT = 2


def fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    sys.exit(EXIT_BAD_INPUT)


def guarded(function: F) -> F:
    """Turn a PartError raised below into one message and exit code 2, never a traceback."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except PartError as error:
            fail(str(error))
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: completed epochs are kept; rerun to resume")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
