"""A run's resumable state: written atomically after every completed epoch, read back when the
stage starts again after an interruption.

A state may only continue the very computation that was interrupted: its fingerprint covers the
code, the params, the starting weights and masks, the data's content, the kind of device and the
number of ranks. On several machines only rank 0's `runs/` holds the state (only rank 0
writes), so rank 0 decides and sends the state's bytes to the others.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from part.errors import PartError
from part.importance.budget_trace import BudgetTrace
from part.io.hashing import code_digest, file_sha256, json_sha256, tensors_digest
from part.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_extra_tensors,
    read_metadata,
    save_checkpoint,
)
from part.params import Params
from part.runtime.distributed import World, broadcast_bytes
from part.training.outputs import BEST_BY, BestEpoch, checkpoint_meta
from part.training.spec import RunSpec, TrainData
from part.ui import console

BEST_PREFIX = "best."  # the best epoch's weights inside a resume state
TRACE_PREFIX = "trace."  # the run's budget trace so far inside a resume state


@dataclass
class Resumed:
    """What a resume state gives back beside the weights and the optimiser's momentum."""
    history: list[dict[str, Any]]
    masks: Tensor | None
    best: BestEpoch | None
    trace_tensors: dict[str, Tensor]


def momentum_tensors(optimizer: torch.optim.SGD) -> dict[str, Tensor]:
    buffers = {}
    for index, param in enumerate(optimizer.param_groups[0]["params"]):
        buffer = optimizer.state.get(param, {}).get("momentum_buffer")
        if buffer is not None:
            buffers[f"momentum.{index}"] = buffer.detach()
    return buffers


def restore_momentum(optimizer: torch.optim.SGD, tensors: dict[str, Tensor]) -> None:
    for index, param in enumerate(optimizer.param_groups[0]["params"]):
        buffer = tensors.get(f"momentum.{index}")
        if buffer is not None:
            optimizer.state[param]["momentum_buffer"] = buffer.to(param.device).clone()


def fingerprint(params: Params, spec: RunSpec, data: TrainData, device: torch.device,
                world: World) -> str:
    """What a resumable state must match: the code, the params, the starting weights and masks,
    the data's content, the kind of device, the number of ranks. Anything else is another
    computation."""
    inputs = {"images": data.images, "labels": data.labels,
              "monitor_images": data.monitor_images, "monitor_labels": data.monitor_labels}
    parts = {
        "code": code_digest(),
        "device": device.type,
        "ranks": world.size,
        "params": params.run_dict(),
        "run": spec.name,
        "variant": spec.variant,
        "masks": repr(spec.mask_settings),
        "refresh_every": spec.refresh_every,
        "epochs": [spec.first_epoch, spec.last_epoch],
        "init": file_sha256(spec.init_checkpoint) if spec.init_checkpoint else None,
        "follows": file_sha256(spec.follows) if spec.follows else None,
        "inputs": tensors_digest(inputs),
    }
    return json_sha256(parts)


def save_state(path: Path, model: nn.Module, optimizer: torch.optim.SGD, masks: Tensor | None,
               best: BestEpoch | None, trace: BudgetTrace, params: Params, data: TrainData,
               spec: RunSpec, epoch: int, history: list[dict[str, Any]], fingerprint: str,
               device: torch.device) -> None:
    extra = momentum_tensors(optimizer)
    extra.update({TRACE_PREFIX + key: value for key, value in trace.tensors().items()})
    if masks is not None:
        extra["masks"] = masks
    if best is not None:
        extra.update({BEST_PREFIX + key: value for key, value in best.weights.items()})
    meta = checkpoint_meta(params, data, spec, epoch, history, device)
    meta.update({"resume_fingerprint": fingerprint, "history": json.dumps(history),
                 "best_epoch": best.epoch if best is not None else None})
    save_checkpoint(path, model, meta, extra_tensors=extra)


def resume_as_rank0_decides(path: Path, fingerprint: str, model: nn.Module,
                            optimizer: torch.optim.SGD, device: torch.device, world: World
                            ) -> Resumed | None:
    """try_resume, decided by rank 0 alone: on several machines only rank 0's `runs/` holds
    the state (only rank 0 writes), so it sends the state's bytes to the others, which resume
    from them whatever their own `runs/` holds; an empty message means: start over."""
    if not world.is_distributed:
        return try_resume(path, fingerprint, model, optimizer, device)
    payload = b""
    if world.is_main:
        resumed = try_resume(path, fingerprint, model, optimizer, device)
        payload = path.read_bytes() if resumed is not None else b""
    payload = broadcast_bytes(payload, world, device)
    if world.is_main:
        return resumed
    if not payload:
        return None
    with tempfile.TemporaryDirectory(prefix="part-resume-") as folder:
        received = Path(folder) / path.name
        received.write_bytes(payload)
        resumed = try_resume(received, fingerprint, model, optimizer, device)
    if resumed is None:  # rank 0 checked these very bytes: only a broken transfer gets here
        raise PartError(f"rank {world.rank} could not resume from rank 0's state {path}")
    return resumed


def try_resume(path: Path, fingerprint: str, model: nn.Module, optimizer: torch.optim.SGD,
               device: torch.device) -> Resumed | None:
    """The saved history, masks, best epoch and budget trace tensors when `path` holds a state
    of this very run (the weights and momentum loaded into `model` and `optimizer`), else None."""
    if not path.is_file():
        return None
    try:
        meta = read_metadata(path)
        if meta.get("resume_fingerprint") != fingerprint:
            return None
        saved_model, _ = load_checkpoint(path, device=device)
        extra = load_extra_tensors(path)
    except CheckpointError as error:  # a damaged state file is not fatal: start over
        console.print(f"[yellow]ignoring unusable resume state {path}: {error}[/]")
        return None
    model.load_state_dict(saved_model.state_dict())
    restore_momentum(optimizer, extra)
    history = meta["history"]
    history = json.loads(history) if isinstance(history, str) else history
    best = None
    if meta.get("best_epoch") is not None:
        epoch = int(meta["best_epoch"])
        score = next(row[BEST_BY] for row in history if int(row["epoch"]) == epoch)
        weights = {key.removeprefix(BEST_PREFIX): value.to(device)
                   for key, value in extra.items() if key.startswith(BEST_PREFIX)}
        best = BestEpoch(epoch, score, weights)
    trace = {key.removeprefix(TRACE_PREFIX): value for key, value in extra.items()
             if key.startswith(TRACE_PREFIX)}
    return Resumed(history, extra.get("masks"), best, trace)
