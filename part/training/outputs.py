"""What a training run writes of itself: its checkpoints' metadata, the best epoch it keeps
beside the last, its budget trace's metadata and its wall times.

Adversarial training overfits robustly late in training, so a run can keep its best epoch (the
highest PGD accuracy on the monitor subset; the earliest on a tie) beside the last.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from part import __version__
from part.importance.budget_trace import BudgetTrace, check_followable, load_trace
from part.importance.variants import uses_cam
from part.io.atomic import atomic_write_text
from part.io.hashing import tensors_digest
from part.models.checkpoint import save_checkpoint
from part.params import Params
from part.runtime.precision import effective_precision
from part.training.spec import RunSpec, TrainData

BEST_BY = "val_pgd"  # the history column that picks the best epoch
# the params every variant of a seed shares (all but the variant itself)
SHARED_SECTIONS = ("dataset", "model", "cam_layer", "method", "eps", "eps_low", "cam", "mask_rule",
                   "seed", "train", "mask")
# Only a reweighted budget reads these (through budgets/<variant>.json): the burn-in and the
# baseline neither declare nor hash them, so their cached outputs are what a fresh run under
# another eps_low, CAM or mask rule writes.
BUDGET_SECTIONS = ("eps_low", "cam", "mask_rule", "mask")


def run_params_hash(params: Params, variant: str) -> str:
    """The hash of the params that decide a run of `variant`, for its checkpoints and trace."""
    sections = SHARED_SECTIONS if uses_cam(variant) else tuple(
        section for section in SHARED_SECTIONS if section not in BUDGET_SECTIONS)
    return params.section_hash(*sections)


@dataclass
class BestEpoch:
    """The best epoch so far: its number, its score and its weights (on the training device;
    empty on the ranks that write no files)."""
    epoch: int
    score: float
    weights: dict[str, Tensor]


def better(best: BestEpoch | None, row: dict[str, Any]) -> bool:
    return best is None or row[BEST_BY] > best.score  # strict: the earliest epoch wins a tie


def best_of(model: nn.Module, row: dict[str, Any], keep_weights: bool = True) -> BestEpoch:
    """The epoch of `row` as the best so far; its weights copied only where `keep_weights` (the
    rank that writes the best checkpoint)."""
    weights = ({key: value.detach().clone() for key, value in model.state_dict().items()}
               if keep_weights else {})
    return BestEpoch(int(row["epoch"]), row[BEST_BY], weights)


def _data_digest(data: TrainData) -> str:
    return tensors_digest({"images": data.images, "labels": data.labels})


def trace_meta(params: Params, data: TrainData, spec: RunSpec) -> dict[str, Any]:
    """What a trace records of its run; MATCHED_KEYS of it must agree for a control to follow."""
    return {"run": spec.name, "variant": spec.variant, "seed": params.seed, "eps": params.eps,
            "eps_low": params.eps_low if uses_cam(spec.variant) else params.eps,
            "n_images": int(data.images.shape[0]), "image_shape": list(data.image_shape),
            "epochs": [spec.first_epoch, spec.last_epoch],
            "mask_alignment": params.mask.alignment if uses_cam(spec.variant) else "",
            "params_hash": run_params_hash(params, spec.variant),
            "data_sha256": _data_digest(data)}


def followed_trace(params: Params, data: TrainData, spec: RunSpec) -> BudgetTrace:
    """PART's trace, checked to be of this very computation but for the variant."""
    assert spec.follows is not None
    trace = load_trace(spec.follows)
    expected = trace_meta(params, data, spec)
    expected.pop("run"), expected.pop("variant")
    check_followable(trace, expected, spec.follows)
    return trace


def write_timings(path: Path, run: str, rows: list[dict[str, Any]]) -> None:
    seconds = {str(row["epoch"]): row["seconds"] for row in rows}
    atomic_write_text(path, json.dumps({"run": run, "epoch_seconds": seconds}, indent=2) + "\n")


def checkpoint_meta(params: Params, data: TrainData, spec: RunSpec, epoch: int,
                    history: list[dict[str, Any]], device: torch.device) -> dict[str, Any]:
    uses_map = uses_cam(spec.variant)
    # For uniform_matched the mean budget is the one eps it trained with in that epoch.
    budgets = {str(row["epoch"]): row["mean_budget"] for row in history}
    chosen_layer = {"cam_layer": params.cam_layer} if params.cam_layer is not None else {}
    return {
        "model": params.model,
        **chosen_layer,
        "num_classes": data.num_classes,
        "in_channels": data.image_shape[0],
        "image_size": data.image_shape[1],
        "dataset": data.dataset,
        "method": ("part-" if uses_map else "") + params.method,
        "variant": spec.variant,
        "seed": params.seed,
        "eps": params.eps,
        "eps_low": params.eps_low if uses_map else params.eps,
        "mean_budget_per_epoch": json.dumps(budgets, sort_keys=True),
        "precision": effective_precision(params.train.precision, device),
        "random_start": params.train.random_start,
        "mask_alignment": params.mask.alignment if uses_map else "",
        "epoch": epoch,
        "train_examples": int(data.images.shape[0]),
        "monitor_split": data.monitor_split,
        "monitor_examples": int(data.monitor_images.shape[0]),
        "params_hash": run_params_hash(params, spec.variant),
        "part_version": __version__,
        "run": spec.name,
        **spec.extra_meta,
    }


def save_best(path: Path, model: nn.Module, best: BestEpoch | None, params: Params,
              data: TrainData, spec: RunSpec, history: list[dict[str, Any]],
              device: torch.device) -> None:
    """The best epoch's weights (the last where the run trained no epoch), without the optimiser
    state: a best checkpoint is for evaluation, never to continue from."""
    epoch = spec.last_epoch
    if best is not None:
        model.load_state_dict(best.weights)
        epoch = best.epoch
    kept = [row for row in history if int(row["epoch"]) <= epoch]
    meta = checkpoint_meta(params, data, spec, epoch, kept, device)
    meta["selected_by"] = (f"the highest {BEST_BY} on the {data.monitor_split} monitor subset "
                           f"({data.monitor_images.shape[0]} examples) over epochs "
                           f"{spec.first_epoch}-{spec.last_epoch}, the earliest on a tie")
    meta["selected_on"] = data.monitor_split
    save_checkpoint(path, model, meta)
