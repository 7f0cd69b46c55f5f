"""The epoch loop shared by burn-in, baseline and PART training.

A run continues an optimiser from a checkpoint (or starts fresh for the burn-in), trains one
variant (part/variants.py): a uniform budget, per-sample CAM masks computed from the starting
model and refreshed from the current one (PART), or PART's recorded budget trace (the controls,
part/budget_trace.py); every run records its own trace. It checkpoints every completed epoch
atomically and resumes from that checkpoint after an interruption. Each epoch is logged through
DVCLive (part/training_log.py). Adversarial training overfits robustly late in training, so a
run can also keep its best epoch (the highest PGD accuracy on the monitor subset; the earliest
on a tie) beside the last. The monitor runs on the validation split held out of the training
set (`data.val_subset`), on the test subset only where that is 0.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from part import __version__
from part.atomic import atomic_write_text
from part.attacks import pgd
from part.budget_trace import BudgetTrace, check_followable, load_trace, save_trace
from part.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_extra_tensors,
    read_metadata,
    save_checkpoint,
)
from part.data.augment import augment_batch, augmentation_for
from part.data.subset import balanced_subset
from part.device import make_deterministic
from part.distributed import (
    SINGLE,
    World,
    agree,
    average_buffers,
    barrier,
    broadcast_bytes,
    data_parallel,
    join,
    leave,
    prepare_model,
    sum_across,
    world_from_env,
)
from part.errors import PartError
from part.eval_mode import eval_mode
from part.hashing import code_digest, file_sha256, json_sha256, tensors_digest
from part.lr_schedule import learning_rate
from part.masking import MaskSettings
from part.methods import StepInputs, TrainingAttack, training_loss
from part.models import build_model
from part.params import Params
from part.precision import autocast, effective_precision, numerics
from part.progress import Display, RunningMeans, Task
from part.random_draws import BatchDraws, epoch_generator
from part.training_log import TrainingLog
from part.ui import console
from part.variants import (
    BASELINE,
    EpochBudget,
    epoch_budget,
    follows_part,
    refreshed_masks,
    trace_masks,
    uses_cam,
)

BEST_BY = "test_pgd"  # the history column that picks the best epoch
BEST_PREFIX = "best."  # the best epoch's weights inside a resume state
TRACE_PREFIX = "trace."  # the run's budget trace so far inside a resume state
MONITOR_SPLITS = ("validation", "test")  # where the per-epoch monitor (and the best epoch) runs


@dataclass
class TrainData:
    images: Tensor  # uint8 [N, C, H, W] on the training device
    labels: Tensor  # int64 [N]
    monitor_images: Tensor  # uint8, a fixed subset for the per-epoch clean and PGD accuracy
    monitor_labels: Tensor
    dataset: str
    num_classes: int
    monitor_split: str = "validation"  # one of MONITOR_SPLITS: where monitor_images come from

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


@dataclass
class RunSpec:
    name: str  # burnin-<seed> | <variant>-<seed>: names the resume state too
    first_epoch: int  # global epoch numbers, 1-based, inclusive
    last_epoch: int
    variant: str = BASELINE  # the burn-in trains the base method, as the baseline does
    init_checkpoint: Path | None = None  # None builds a fresh model (the burn-in)
    mask_settings: MaskSettings | None = None  # how CAM masks are made, for the CAM variants
    refresh_every: int = 0  # 0: the masks of the starting model throughout
    follows: Path | None = None  # a control: PART's budget trace, which it follows
    extra_meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if uses_cam(self.variant) and (self.mask_settings is None
                                       or self.init_checkpoint is None):
            raise ValueError(f"variant {self.variant} needs mask settings and a starting "
                             "checkpoint")  # a caller's bug, never a user's input
        if follows_part(self.variant) != (self.follows is not None):
            raise ValueError(f"variant {self.variant}: a control, and only a control, follows "
                             "PART's trace")  # a caller's bug


def _augmentation(params: Params) -> dict[str, Any]:
    return augmentation_for(params.train.augment, params.dataset)


def monitor_subset(labels: Tensor, n: int, seed: int) -> Tensor:
    n = min(n, labels.shape[0])
    classes = int(labels.max()) + 1
    if n < classes:
        return torch.arange(n, device=labels.device)
    return balanced_subset(labels, n, seed).to(labels.device)


def _input_dtype(model: nn.Module) -> torch.dtype:
    """Images in float32, or float64 for a float64 model (exact checks: tests/test_ddp_*)."""
    return torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32


@torch.no_grad()
def _accuracy_counts(model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    return (model(images).argmax(dim=1) == labels).sum()


def monitor_accuracy(model: nn.Module, data: TrainData, params: Params, device: torch.device,
                     epoch: int = 0, world: World = SINGLE) -> tuple[float, float]:
    """Clean and PGD accuracy on the fixed monitor subset, uniform budget eps. Under several
    ranks each attacks its share of every monitor batch (with the one process's random starts)
    and the counts are summed."""
    counts = torch.zeros(2, device=device, dtype=torch.long)  # natural, robust
    batch = 2 * params.train.batch_size  # no gradients w.r.t. weights: room for larger batches
    precision = effective_precision(params.train.precision, device)
    starts = epoch_generator(epoch_seed(params.seed, epoch, "monitor"), device)
    dtype = _input_dtype(model)
    with eval_mode(model):
        for start in range(0, data.monitor_images.shape[0], batch):
            size = min(batch, data.monitor_images.shape[0] - start)
            rows = world.share(size)
            if rows.stop == rows.start:
                continue  # only the last batch can be smaller than the ranks
            x = data.monitor_images[start:start + size][rows].to(dtype).div_(255)
            y = data.monitor_labels[start:start + size][rows]
            with numerics(precision), autocast(precision, device):
                counts[0] += _accuracy_counts(model, x, y)
                x_adv = pgd(model, x, y, params.eps, params.train.step_size,
                            params.train.monitor_steps, random_start="uniform", loss="ce",
                            draws=BatchDraws(starts, size, rows))
                counts[1] += _accuracy_counts(model, x_adv, y)
    natural, robust = sum_across(counts, world).tolist()
    total = max(data.monitor_images.shape[0], 1)
    return natural / total, robust / total


def _momentum_tensors(optimizer: torch.optim.SGD) -> dict[str, Tensor]:
    buffers = {}
    for index, param in enumerate(optimizer.param_groups[0]["params"]):
        buffer = optimizer.state.get(param, {}).get("momentum_buffer")
        if buffer is not None:
            buffers[f"momentum.{index}"] = buffer.detach()
    return buffers


def _restore_momentum(optimizer: torch.optim.SGD, tensors: dict[str, Tensor]) -> None:
    for index, param in enumerate(optimizer.param_groups[0]["params"]):
        buffer = tensors.get(f"momentum.{index}")
        if buffer is not None:
            optimizer.state[param]["momentum_buffer"] = buffer.to(param.device).clone()


def _fingerprint(params: Params, spec: RunSpec, data: TrainData, device: torch.device,
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


def _data_digest(data: TrainData) -> str:
    return tensors_digest({"images": data.images, "labels": data.labels})


def trace_meta(params: Params, data: TrainData, spec: RunSpec) -> dict[str, Any]:
    """What a trace records of its run; MATCHED_KEYS of it must agree for a control to follow."""
    return {"run": spec.name, "variant": spec.variant, "seed": params.seed, "eps": params.eps,
            "eps_low": params.eps_low if uses_cam(spec.variant) else params.eps,
            "n_images": int(data.images.shape[0]), "image_shape": list(data.image_shape),
            "epochs": [spec.first_epoch, spec.last_epoch],
            "mask_alignment": params.mask.alignment if uses_cam(spec.variant) else "",
            "params_hash": _shared_params_hash(params), "data_sha256": _data_digest(data)}


def _shared_params_hash(params: Params) -> str:
    """The params every variant of a seed shares (all but the variant itself)."""
    return params.section_hash("dataset", "model", "method", "eps", "eps_low", "cam",
                               "mask_rule", "seed", "train", "mask")


def _followed_trace(params: Params, data: TrainData, spec: RunSpec) -> BudgetTrace:
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
    return {
        "model": params.model,
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
        "params_hash": params.section_hash("dataset", "model", "method", "eps", "eps_low",
                                           "cam", "mask_rule", "seed", "train", "mask"),
        "part_version": __version__,
        "run": spec.name,
        **spec.extra_meta,
    }


# An epoch's random streams, each drawn from a generator with a seed of its own (epoch_seed).
STREAMS = {"order": 0, "augment": 1, "attack": 2, "monitor": 3}


def epoch_seed(seed: int, epoch: int, stream: str) -> int:
    """The seed of `stream`'s generator in `epoch` of a run of `seed`: the same for every variant
    (so that their comparison is paired) and on every rank (so that N ranks draw the single
    process's numbers)."""
    return (seed * 100_003 + epoch) * len(STREAMS) + STREAMS[stream]


def epoch_order(count: int, seed: int, epoch: int, device: torch.device) -> Tensor:
    """The training epoch's shuffle, from a generator of its own: every variant of a seed sees
    the same batches."""
    order = torch.randperm(count, generator=epoch_generator(epoch_seed(seed, epoch, "order"),
                                                            torch.device("cpu")))
    return order.to(device)


@dataclass
class Batch:
    """This rank's share of one global batch: images in [0,1], labels, masks (None for a uniform
    budget), and the global batch's size."""
    images: Tensor
    labels: Tensor
    masks: Tensor | None
    size: int


def training_batches(data: TrainData, budget: EpochBudget, order: Tensor, batch_size: int,
                     augmentation: dict[str, Any], generator: torch.Generator,
                     world: World = SINGLE, dtype: torch.dtype = torch.float32
                     ) -> Iterator[Batch]:
    """This rank's share of each global batch of `order`, built alone: the share's images,
    augmented with the draws one process makes for them (`generator` draws the whole batch's).

    Sample-keyed masks are indexed with the same sample indices as the images and go through
    the very same crop and flip, so every image is trained with its own mask (the paper code's
    fault 1). Position-keyed masks (mask.alignment: paper) are taken by batch position as they
    are, as the paper code does.
    """
    masks = budget.masks
    augments = bool(augmentation["crop_padding"] or augmentation["flip"])
    for start in range(0, order.shape[0], batch_size):
        index = order[start:start + batch_size]
        size = index.shape[0]
        rows = world.share(size)
        index = index[rows]
        x = data.images[index].to(dtype).div_(255)
        follows_image = masks is not None and not budget.by_position
        aligned = (masks[index],) if follows_image else ()
        if augments:
            x, *aligned = augment_batch(x, *aligned, draws=BatchDraws(generator, size, rows),
                                        **augmentation)
        if x.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        if masks is not None and budget.by_position:
            aligned = [masks[start:start + batch_size][rows]]
        yield Batch(x, data.labels[index], aligned[0] if aligned else None, size)


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, data: TrainData,
                budget: EpochBudget, params: Params, epoch: int, device: torch.device,
                on_batch: Callable[[int, RunningMeans], None] | None = None,
                world: World = SINGLE, trainer: nn.Module | None = None) -> RunningMeans:
    """One pass over the training set under `budget` (per-sample masks or one uniform eps).
    Under several ranks each builds and trains on its share of every global batch, its loss
    weighted by its share, and `trainer` (the model in DistributedDataParallel) averages the
    gradients during the backward pass (part/distributed.py); the attacks run on `model`. The
    returned means are this rank's."""
    trainer = model if trainer is None else trainer
    # The same seeds per epoch for every run: baseline and PART see the same batches,
    # augmentations and random starts, so their comparison is paired.
    order = epoch_order(data.images.shape[0], params.seed, epoch, device)
    augment_rng = epoch_generator(epoch_seed(params.seed, epoch, "augment"), device)
    attack_rng = epoch_generator(epoch_seed(params.seed, epoch, "attack"), device)
    attack = TrainingAttack(step_size=params.train.step_size, steps=params.train.steps,
                            eps=params.eps, start=params.train.random_start)
    precision = effective_precision(params.train.precision, device)
    trainer.train()
    running = RunningMeans(device)
    batches = training_batches(data, budget, order, params.train.batch_size,
                               _augmentation(params), augment_rng, world, _input_dtype(model))
    with numerics(precision):
        for batch_index, batch in enumerate(batches):
            x, y, share = batch.images, batch.labels, batch.labels.shape[0]
            optimizer.zero_grad(set_to_none=True)
            with autocast(precision, device):
                if share == 0:  # a last batch smaller than the ranks left this rank none:
                    zero = trainer(x).sum() * 0.0  # it joins the all-reduce with a zero gradient
                else:
                    inputs = StepInputs(attack_model=model,
                                        draws=BatchDraws(attack_rng, batch.size,
                                                         world.share(batch.size)))
                    step = training_loss(params.method, trainer, x, y,
                                         budget.for_batch(batch.masks), attack,
                                         params.train.beta, inputs)
            if share == 0:
                zero.backward()
            else:
                # DDP averages over ranks; weighted by share, that is the whole batch's mean
                weight = world.size * share / batch.size
                (step.loss * weight if world.is_distributed else step.loss).backward()
                running.add(step.loss, step.logits_adv, y)
            optimizer.step()
            if on_batch is not None:
                on_batch(batch_index, running)
    return running


@dataclass
class BestEpoch:
    """The best epoch so far: its number, its score and its weights (on the training device)."""
    epoch: int
    score: float
    weights: dict[str, Tensor]


def _better(best: BestEpoch | None, row: dict[str, Any]) -> bool:
    return best is None or row[BEST_BY] > best.score  # strict: the earliest epoch wins a tie


def train_run(params: Params, spec: RunSpec, data: TrainData, device: torch.device, *,
              out_path: Path, log_dir: Path, state_dir: Path, best_path: Path | None = None,
              trace_path: Path | None = None, timings_path: Path | None = None,
              show_progress: bool = True) -> list[dict[str, Any]]:
    """Train epochs spec.first_epoch..spec.last_epoch; write the final checkpoint (and, given
    best_path, the best epoch's; given trace_path, the run's budget trace) and log every epoch
    into log_dir. Returns the history.

    Started by torchrun with several processes, the ranks share every batch and only rank 0
    writes (part/distributed.py)."""
    make_deterministic(device, params.train.deterministic)  # before the first CUDA matmul
    world = world_from_env()
    join(world, device)
    if world.is_distributed and params.train.batch_size < world.size:
        raise PartError(f"train.batch_size ({params.train.batch_size}) is smaller than "
                              f"the {world.size} ranks; raise it or lower "
                              "distributed.nproc_per_node")
    if spec.init_checkpoint is None:
        torch.manual_seed(params.seed)
        model = build_model(params.model, num_classes=data.num_classes,
                            in_channels=data.image_shape[0]).to(device)
        init_momentum: dict[str, Tensor] = {}
    else:
        model, _ = load_checkpoint(spec.init_checkpoint, device=device, expect={
            "model": params.model, "num_classes": data.num_classes,
            "in_channels": data.image_shape[0], "image_size": data.image_shape[1]})
        init_momentum = load_extra_tensors(spec.init_checkpoint)
    model = prepare_model(model, world, device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=params.train.lr,
                                momentum=params.train.momentum,
                                weight_decay=params.train.weight_decay)
    _restore_momentum(optimizer, init_momentum)

    precision = effective_precision(params.train.precision, device)
    if precision != params.train.precision:
        console.print(f"[dim]train.precision {params.train.precision} runs as {precision} on "
                      f"the {device.type}[/]")
    masks: Tensor | None = None  # the masks the variant trains with (None: a uniform budget)
    history: list[dict[str, Any]] = []
    best: BestEpoch | None = None
    first = spec.first_epoch
    followed = _followed_trace(params, data, spec) if spec.follows is not None else None
    trace = BudgetTrace(trace_meta(params, data, spec))
    state_path = state_dir / f"{spec.name}.safetensors"
    fingerprint = _fingerprint(params, spec, data, device, world)
    agree(fingerprint, "computation (code, params, data, starting weights)", world, device)
    resumed = _resume_as_rank0_decides(state_path, fingerprint, model, optimizer, device, world)
    if resumed is not None:
        history, masks, best, trace_tensors = resumed
        first = int(history[-1]["epoch"]) + 1 if history else first
        masks = masks.to(device) if masks is not None else None
        if trace_tensors:
            trace = BudgetTrace.from_tensors(trace.meta, trace_tensors)
        trace.truncate(first - 1)
        if world.is_main:
            console.print(f"[cyan]{spec.name}[/]: resuming after epoch {first - 1} from "
                          f"{state_path}")

    trainer = data_parallel(model, world, device)
    n_batches = math.ceil(data.images.shape[0] / params.train.batch_size)

    writes = world.is_main
    with Display(show_progress and writes) as display, \
            (TrainingLog(log_dir, history) if writes else contextlib.nullcontext()) as log:
        for epoch in range(first, spec.last_epoch + 1):
            started = time.perf_counter()
            run_index = epoch - spec.first_epoch
            important_fraction = float("nan")
            # The first epoch's masks come from the starting model, later ones from the
            # current model every `refresh_every` epochs (the paper: every epoch).
            refresh = masks is None or bool(spec.refresh_every and run_index > 0
                                            and run_index % spec.refresh_every == 0)
            if spec.variant == "random_mask":
                assert followed is not None
                counts = followed.counts_at(epoch)
                if refresh or masks is None or not torch.equal(_counts_of(masks), counts):
                    masks = trace_masks(counts, (counts.shape[0], counts.shape[1],
                                                 *data.image_shape[1:]),
                                        params.seed, epoch).to(device)
            elif uses_cam(spec.variant) and not follows_part(spec.variant) and refresh:
                with numerics(precision):  # masks at the declared precision, like the attacks
                    masks = refreshed_masks(spec.variant, model, data.images,
                                            spec.mask_settings, params.seed, epoch,
                                            _augmentation(params), world)
            if masks is not None:
                important_fraction = masks.float().mean().item()
            budget = epoch_budget(spec.variant, masks, params.eps, params.eps_low,
                                  params.mask.alignment,
                                  matched_mean=(followed.mean_budget(epoch)
                                                if spec.variant == "uniform_matched"
                                                and followed is not None else None))
            trace.record(epoch, budget.mean, budget.masks)
            lr = learning_rate(params.train, epoch, params.burn_in_epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr

            with display.task(f"{spec.name} {epoch}/{spec.last_epoch}", n_batches) as task:

                def show(batch_index: int, running: RunningMeans, task: Task = task) -> None:
                    if batch_index % 10 == 0 or batch_index == n_batches - 1:
                        loss_now, acc_now = running.peek()
                        task.update(completed=batch_index + 1,
                                    status=f"loss {loss_now:.3f} acc {acc_now:.3f}")
                    else:
                        task.advance(1)

                running = train_epoch(model, optimizer, data, budget, params, epoch, device,
                                      on_batch=show, world=world, trainer=trainer)
            running.combine(lambda sums: sum_across(sums, world))
            average_buffers(model, world)
            train_loss, train_acc = running.final()
            natural, robust = monitor_accuracy(model, data, params, device, epoch, world)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            row = {"epoch": epoch, "run": spec.name, "lr": lr,
                   "train_loss": round(train_loss, 6), "train_adv_acc": round(train_acc, 6),
                   "test_natural": round(natural, 6), "test_pgd": round(robust, 6),
                   "important_fraction": (round(important_fraction, 6)
                                          if important_fraction == important_fraction else ""),
                   "mean_budget": round(budget.mean, 8),
                   "seconds": round(time.perf_counter() - started, 3)}
            history.append(row)
            if writes:
                log.log_epoch(row)
            if best_path is not None and _better(best, row):
                best = BestEpoch(epoch, row[BEST_BY], {
                    key: value.detach().clone() for key, value in model.state_dict().items()})
            task.update(status=f"loss {train_loss:.3f} acc {train_acc:.3f} "
                               f"nat {natural:.3f} pgd {robust:.3f}")
            if writes:
                _save_state(state_path, model, optimizer, masks, best, trace, params, data,
                            spec, epoch, history, fingerprint, device)

    if not writes:
        barrier(world)  # rank 0 writes the outputs: the stage ends when they are whole
        leave(world)
        return history
    final_epoch = spec.last_epoch
    save_checkpoint(out_path, model,
                    checkpoint_meta(params, data, spec, final_epoch, history, device),
                    extra_tensors=_momentum_tensors(optimizer))
    if best_path is not None:
        _save_best(best_path, model, best, params, data, spec, history, device)
    if trace_path is not None:
        save_trace(trace_path, trace)
    if timings_path is not None:
        write_timings(timings_path, spec.name, history)
    # The outputs now hold this run: a state left behind could only ever resume a finished run.
    state_path.unlink(missing_ok=True)
    barrier(world)
    leave(world)
    return history


def _save_best(path: Path, model: nn.Module, best: BestEpoch | None, params: Params,
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


def _counts_of(masks: Tensor) -> Tensor:
    from part.budget_trace import kept_counts

    return kept_counts(masks).cpu()


def _save_state(path: Path, model: nn.Module, optimizer: torch.optim.SGD, masks: Tensor | None,
                best: BestEpoch | None, trace: BudgetTrace, params: Params, data: TrainData,
                spec: RunSpec, epoch: int, history: list[dict[str, Any]], fingerprint: str,
                device: torch.device) -> None:
    extra = _momentum_tensors(optimizer)
    extra.update({TRACE_PREFIX + key: value for key, value in trace.tensors().items()})
    if masks is not None:
        extra["masks"] = masks
    if best is not None:
        extra.update({BEST_PREFIX + key: value for key, value in best.weights.items()})
    meta = checkpoint_meta(params, data, spec, epoch, history, device)
    meta.update({"resume_fingerprint": fingerprint, "history": json.dumps(history),
                 "best_epoch": best.epoch if best is not None else None})
    save_checkpoint(path, model, meta, extra_tensors=extra)


def _resume_as_rank0_decides(path: Path, fingerprint: str, model: nn.Module,
                             optimizer: torch.optim.SGD, device: torch.device, world: World
                             ) -> tuple[list[dict[str, Any]], Tensor | None, BestEpoch | None,
                                        dict[str, Tensor]] | None:
    """_try_resume, decided by rank 0 alone: on several machines only rank 0's `runs/` holds
    the state (only rank 0 writes), so it sends the state's bytes to the others, which resume
    from them whatever their own `runs/` holds; an empty message means: start over."""
    if not world.is_distributed:
        return _try_resume(path, fingerprint, model, optimizer, device)
    payload = b""
    if world.is_main:
        resumed = _try_resume(path, fingerprint, model, optimizer, device)
        payload = path.read_bytes() if resumed is not None else b""
    payload = broadcast_bytes(payload, world, device)
    if world.is_main:
        return resumed
    if not payload:
        return None
    with tempfile.TemporaryDirectory(prefix="part-resume-") as folder:
        received = Path(folder) / path.name
        received.write_bytes(payload)
        resumed = _try_resume(received, fingerprint, model, optimizer, device)
    if resumed is None:  # rank 0 checked these very bytes: only a broken transfer gets here
        raise PartError(f"rank {world.rank} could not resume from rank 0's state {path}")
    return resumed


def _try_resume(path: Path, fingerprint: str, model: nn.Module, optimizer: torch.optim.SGD,
                device: torch.device
                ) -> tuple[list[dict[str, Any]], Tensor | None, BestEpoch | None,
                           dict[str, Tensor]] | None:
    """The saved history, masks, best epoch and budget trace tensors when `path` holds a state
    of this very run, else None."""
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
    _restore_momentum(optimizer, extra)
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
    return history, extra.get("masks"), best, trace
