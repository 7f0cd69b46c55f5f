"""A training run's budget trace: per epoch, the mean budget it trained with and, for a run on a
mask, how many elements of each image and mask plane kept eps.

PART writes its trace (traces/part-<seed>.safetensors) and the two controls follow it:
`uniform_matched` trains each epoch at exactly PART's recorded mean budget of that epoch, and
`random_mask` keeps exactly PART's recorded count per image and plane of that epoch, at random
places. So the controls spend what PART itself spent, epoch by epoch, not what PART's rule
would give on the control's own model. Every run writes its own trace, so a control's can be
compared with PART's from the outside.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from part import __version__
from part.errors import PartError
from part.io.atomic import WriteError
from part.io.tensorfile import write_safetensors

TRACE_FORMAT = "part-budget-trace/1"
# The metadata that must agree between PART's trace and a control that follows it: anything
# else means the trace belongs to another computation.
MATCHED_KEYS = ("seed", "eps", "eps_low", "n_images", "image_shape", "epochs", "mask_alignment",
                "params_hash", "data_sha256")


class TraceError(PartError):
    """A budget trace that is missing, unreadable or of another run."""


def kept_counts(masks: Tensor) -> Tensor:
    """int32 [N, planes]: the count of true elements of each image's mask plane."""
    return masks.flatten(2).sum(dim=2, dtype=torch.int32)


@dataclass
class BudgetTrace:
    """What a run spent, epoch by epoch (global epoch numbers), built up as it trains."""

    meta: dict[str, Any]  # run, variant, seed, eps, eps_low, image_shape, ... (see MATCHED_KEYS)
    epochs: list[int] = field(default_factory=list)
    mean_budgets: list[float] = field(default_factory=list)  # exactly the floats trained with
    counts: list[Tensor] = field(default_factory=list)  # int32 [N, planes] per epoch, if masked

    def record(self, epoch: int, mean_budget: float, masks: Tensor | None) -> None:
        if self.epochs and epoch != self.epochs[-1] + 1:
            raise ValueError(f"trace epochs must follow each other: {epoch} after "
                             f"{self.epochs[-1]}")  # a caller's bug
        self.epochs.append(epoch)
        self.mean_budgets.append(float(mean_budget))
        if masks is not None:
            self.counts.append(kept_counts(masks).cpu())

    def truncate(self, last_epoch: int) -> None:
        """Forget the epochs after `last_epoch` (a resume continues from a saved epoch)."""
        keep = sum(1 for epoch in self.epochs if epoch <= last_epoch)
        del self.epochs[keep:], self.mean_budgets[keep:]
        del self.counts[keep:]

    def mean_budget(self, epoch: int) -> float:
        return self.mean_budgets[self._index(epoch)]

    def counts_at(self, epoch: int) -> Tensor:
        if not self.counts:
            raise TraceError(f"the trace of {self.meta.get('run')} records no mask counts "
                             "(it trained on a uniform budget)")
        return self.counts[self._index(epoch)]

    def _index(self, epoch: int) -> int:
        try:
            return self.epochs.index(epoch)
        except ValueError:
            raise TraceError(f"the trace of {self.meta.get('run')} has no epoch {epoch} (it "
                             f"covers {self.epochs[0] if self.epochs else '-'}-"
                             f"{self.epochs[-1] if self.epochs else '-'})") from None

    def tensors(self) -> dict[str, Tensor]:
        """The trace as tensors, for a file or a resume state."""
        tensors = {"epochs": torch.tensor(self.epochs, dtype=torch.int64),
                   "mean_budget": torch.tensor(self.mean_budgets, dtype=torch.float64)}
        if self.counts:
            tensors["kept_counts"] = torch.stack(self.counts)
        return tensors

    @classmethod
    def from_tensors(cls, meta: Mapping[str, Any], tensors: Mapping[str, Tensor]
                     ) -> BudgetTrace:
        trace = cls(dict(meta), [int(e) for e in tensors["epochs"].tolist()],
                    [float(b) for b in tensors["mean_budget"].tolist()])
        if "kept_counts" in tensors:
            trace.counts = [plane.clone() for plane in tensors["kept_counts"].to(torch.int32)]
        return trace


def save_trace(path: str | Path, trace: BudgetTrace) -> Path:
    metadata = {"format": TRACE_FORMAT, "part_version": __version__,
                **{key: json.dumps(value) for key, value in sorted(trace.meta.items())}}
    try:
        return write_safetensors(path, trace.tensors(), metadata)
    except WriteError:  # already names the file and the fix
        raise
    except OSError as error:
        raise TraceError(f"cannot write the budget trace {path}: {error}; check free disk "
                         "space and permissions") from None


def load_trace(path: str | Path) -> BudgetTrace:
    path = Path(path)
    fix = f"run `dvc repro train@{path.stem}` to record it"
    if not path.is_file():
        raise TraceError(f"{path}: no budget trace; {fix}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        if raw.get("format") != TRACE_FORMAT:
            raise TraceError(f"{path}: not a budget trace (format {raw.get('format')!r}); {fix}")
        meta = {key: json.loads(value) for key, value in raw.items()
                if key not in ("format", "part_version")}
        return BudgetTrace.from_tensors(meta, tensors)
    except (SafetensorError, OSError, KeyError, ValueError) as error:
        raise TraceError(f"{path}: not a readable budget trace ({error}); {fix}") from None


def check_followable(trace: BudgetTrace, expected: Mapping[str, Any], path: Path) -> None:
    """A control may follow `trace` only if it was recorded for the control's own computation:
    the same seed, budgets, data, mask planes, epochs and training params."""
    for key in MATCHED_KEYS:
        if key in expected and trace.meta.get(key) != expected[key]:
            raise TraceError(
                f"{path} was recorded with {key} = {trace.meta.get(key)!r}, but this run has "
                f"{expected[key]!r}; run `dvc repro train@{path.stem}` so that the trace "
                "matches the current params and data")
