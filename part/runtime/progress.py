"""Progress, for training and evaluation alike: one display on the stderr console (a row per
task: description, bar, count, a status text, times), and running loss / accuracy for it without
a host sync on every batch.

`RunningMeans` keeps its sums on the device. Every few batches they are copied to pinned host
memory asynchronously; the bar shows the last copy that has already landed, so the batch loop
never waits for the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import Tensor

from part.ui import console


class Task:
    """One row of a Display."""

    def __init__(self, progress: Progress, task_id: TaskID, total: int):
        self._progress, self._id, self._total = progress, task_id, total

    def advance(self, amount: int) -> None:
        self._progress.advance(self._id, amount)

    def update(self, *, completed: int | None = None, status: str | None = None,
               description: str | None = None, total: int | None = None) -> None:
        changes: dict[str, Any] = {}
        if total is not None:
            self._total = changes["total"] = total
        if completed is not None:
            changes["completed"] = completed
        if status is not None:
            changes["status"] = status
        if description is not None:
            changes["description"] = description
        self._progress.update(self._id, **changes)

    def finish(self) -> None:
        self._progress.update(self._id, completed=self._total)


class Display:
    """A rich progress display on the stderr console, or nothing when disabled. Use it as a
    context manager, and `task()` for each row."""

    def __init__(self, enabled: bool = True):
        self._progress = Progress(
            TextColumn("[bold]{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, disable=not enabled)

    def __enter__(self) -> Display:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.__exit__(*exc_info)

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Task]:
        """A row counting to `total`; it shows as complete when the block ends."""
        task = Task(self._progress, self._progress.add_task(description, total=total, status=""),
                    total)
        try:
            yield task
        finally:
            task.finish()


class RunningMeans:
    def __init__(self, device: torch.device):
        self.device = device
        self._sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss*n, correct, n
        on_cuda = device.type == "cuda"
        self._host = torch.zeros(3, dtype=torch.float64, pin_memory=on_cuda)
        self._event = torch.cuda.Event() if on_cuda else None
        self._shown = (float("nan"), float("nan"))

    def combine(self, reduce: Callable[[Tensor], Tensor]) -> None:
        """Apply `reduce` (a sum over processes) to the running sums, in place."""
        reduce(self._sums)

    def add(self, loss: Tensor, logits: Tensor, labels: Tensor) -> None:
        batch = labels.shape[0]
        self._sums[0] += loss.detach().double() * batch
        self._sums[1] += (logits.argmax(dim=1) == labels).sum()
        self._sums[2] += batch

    def _read_host(self) -> tuple[float, float]:
        loss_sum, correct, count = self._host.tolist()
        if count == 0:
            return self._shown
        return loss_sum / count, correct / count

    def peek(self) -> tuple[float, float]:
        """(mean loss, accuracy) as of the latest completed copy; never blocks on CUDA."""
        if self._event is None:
            self._host.copy_(self._sums)
            self._shown = self._read_host()
            return self._shown
        if self._event.query():
            self._shown = self._read_host()
            self._host.copy_(self._sums, non_blocking=True)
            self._event.record()
        return self._shown

    def final(self) -> tuple[float, float]:
        """Exact means at the end of the epoch (one sync, outside the batch loop)."""
        loss_sum, correct, count = self._sums.tolist()
        count = max(count, 1.0)
        return loss_sum / count, correct / count
