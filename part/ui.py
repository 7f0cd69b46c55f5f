"""Console output and the one way an expected failure reaches a person: a message and exit 2."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from rich.console import Console
from rich.markup import escape

from part.errors import PartError

# A log file (DVC's output, CI) has no width; at rich's default of 80 columns a progress row
# (run, bar, count, loss and accuracies, times) would be cut to "4… 0:…". COLUMNS still rules.
LOG_WIDTH = 160

console = Console(stderr=True, highlight=False)
if not console.is_terminal and "COLUMNS" not in os.environ:
    console.width = LOG_WIDTH
stdout = Console(highlight=False)

F = TypeVar("F", bound=Callable[..., Any])

EXIT_BAD_INPUT = 2


def fail(message: str) -> None:
    # escaped: a message quoting a list ("controls: [random_mask]") is text, not rich markup
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    _leave_for_torchrun(message)
    sys.exit(EXIT_BAD_INPUT)


def _leave_for_torchrun(message: str) -> None:
    """In a worker of torchrun, leave the message where its agent reads a failed worker's
    reason (the error file torch.distributed.elastic names in TORCHELASTIC_ERROR_FILE), so that
    the launcher's one line names it (part/runtime/launch.py)."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    try:
        with open(path, "w") as handle:
            json.dump({"message": message, "timestamp": int(time.time())}, handle)
    except OSError:
        pass  # the message is on stderr already; the agent then reports the exit code alone


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
