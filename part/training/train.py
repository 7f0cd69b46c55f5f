"""The epoch loop shared by burn-in, baseline and PART training.

A run continues an optimiser from a checkpoint (or starts fresh for the burn-in), trains one
variant (part/importance/variants.py): a uniform budget, per-sample CAM masks computed from the
starting model and refreshed from the current one (PART), or PART's recorded budget trace (the
controls, part/importance/budget_trace.py); every run records its own trace. It checkpoints
every completed epoch atomically and resumes from that checkpoint after an interruption
(part/training/resume.py). Each epoch is logged through DVCLive (part/training/log.py) and
monitored on held-out examples (part/training/monitor.py), which pick the best epoch kept beside
the last (part/training/outputs.py).

`train_run` reads top to bottom as its steps: start the model and optimiser, resume, then per
epoch the masks, the budget, the epoch's batches, the monitor and the state; then the outputs.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from part.errors import PartError
from part.importance.budget_trace import BudgetTrace, kept_counts, save_trace
from part.importance.variants import (
    EpochBudget,
    epoch_budget,
    follows_part,
    refreshed_masks,
    trace_masks,
    uses_cam,
)
from part.models import build_model
from part.models.checkpoint import load_checkpoint, load_extra_tensors, save_checkpoint
from part.params import Params
from part.runtime.device import make_deterministic
from part.runtime.distributed import (
    SINGLE,
    World,
    agree,
    average_buffers,
    barrier,
    data_parallel,
    join,
    leave,
    prepare_model,
    sum_across,
    world_from_env,
)
from part.runtime.precision import autocast, effective_precision, numerics
from part.runtime.progress import Display, RunningMeans, Task
from part.runtime.random_draws import BatchDraws, epoch_generator
from part.training.batches import (
    augmentation,
    epoch_order,
    epoch_seed,
    input_dtype,
    training_batches,
)
from part.training.log import TrainingLog
from part.training.methods import StepInputs, TrainingAttack, training_loss
from part.training.monitor import monitor_accuracy
from part.training.outputs import (
    BestEpoch,
    best_of,
    better,
    checkpoint_meta,
    followed_trace,
    save_best,
    trace_meta,
    write_timings,
)
from part.training.resume import (
    fingerprint,
    momentum_tensors,
    restore_momentum,
    resume_as_rank0_decides,
    save_state,
)
from part.training.schedule import learning_rate
from part.training.spec import RunSpec, TrainData
from part.ui import console


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, data: TrainData,
                budget: EpochBudget, params: Params, epoch: int, device: torch.device,
                on_batch: Callable[[int, RunningMeans], None] | None = None,
                world: World = SINGLE, trainer: nn.Module | None = None,
                attacker: nn.Module | None = None) -> RunningMeans:
    """One pass over the training set under `budget` (per-sample masks or one uniform eps).
    Under several ranks each builds and trains on its share of every global batch, its loss
    weighted by its share, and `trainer` (the model in DistributedDataParallel) averages the
    gradients during the backward pass (part/runtime/distributed.py); the attacks run on
    `attacker` (`model`, or `model` compiled). The returned means are this rank's."""
    trainer = model if trainer is None else trainer
    attacker = model if attacker is None else attacker
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
                               augmentation(params), augment_rng, world, input_dtype(model))
    with numerics(precision):
        for batch_index, batch in enumerate(batches):
            x, y, share = batch.images, batch.labels, batch.labels.shape[0]
            optimizer.zero_grad(set_to_none=True)
            # A rank left no share of a last batch smaller than the ranks runs the same loss on
            # its empty share: as many train-mode forwards (SyncBatchNorm's collectives) and the
            # same gradient all-reduce as the others, with a gradient of zeros.
            inputs = StepInputs(attack_model=attacker,
                                draws=BatchDraws(attack_rng, batch.size, world.share(batch.size)))
            with autocast(precision, device):
                step = training_loss(params.method, trainer, x, y, budget.for_batch(batch.masks),
                                     attack, params.train.beta, inputs)
            # DDP averages over ranks; weighted by share, that is the whole batch's mean
            weight = world.size * share / batch.size
            (step.loss * weight if world.is_distributed else step.loss).backward()
            if share:
                running.add(step.loss, step.logits_adv, y)
            optimizer.step()
            if on_batch is not None:
                on_batch(batch_index, running)
    return running


@dataclass
class _Run:
    """A run in progress: what it trains, where it stands, and what it has recorded."""
    params: Params
    spec: RunSpec
    data: TrainData
    device: torch.device
    world: World
    model: nn.Module
    optimizer: torch.optim.SGD
    precision: str
    trace: BudgetTrace
    followed: BudgetTrace | None  # a control: PART's trace
    state_path: Path
    fingerprint: str = ""
    first_epoch: int = 0  # the first epoch still to train
    masks: Tensor | None = None  # the masks the variant trains with (None: a uniform budget)
    history: list[dict[str, Any]] = field(default_factory=list)
    best: BestEpoch | None = None
    attacker: nn.Module | None = None  # what the training attack runs on (train.compile)


def _start(params: Params, spec: RunSpec, data: TrainData, device: torch.device,
           world: World, state_dir: Path) -> _Run:
    """The model (fresh for the burn-in, else the starting checkpoint's) and its optimiser, with
    the starting checkpoint's momentum."""
    if world.is_distributed and params.train.batch_size < world.size:
        raise PartError(f"train.batch_size ({params.train.batch_size}) is smaller than "
                        f"the {world.size} ranks; raise it or lower "
                        "distributed.nproc_per_node")
    if spec.init_checkpoint is None:
        torch.manual_seed(params.seed)
        model = build_model(params.model, num_classes=data.num_classes,
                            in_channels=data.image_shape[0],
                            cam_layer=params.cam_layer).to(device)
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
    restore_momentum(optimizer, init_momentum)
    precision = effective_precision(params.train.precision, device)
    if precision != params.train.precision:
        console.print(f"[dim]train.precision {params.train.precision} runs as {precision} on "
                      f"the {device.type}[/]")
    followed = followed_trace(params, data, spec) if spec.follows is not None else None
    return _Run(params, spec, data, device, world, model, optimizer, precision,
                trace=BudgetTrace(trace_meta(params, data, spec)), followed=followed,
                state_path=state_dir / f"{spec.name}.safetensors",
                first_epoch=spec.first_epoch)


def _resume(run: _Run) -> None:
    """Continue from the run's resume state where it holds this very computation."""
    run.fingerprint = fingerprint(run.params, run.spec, run.data, run.device, run.world)
    agree(run.fingerprint, "computation (code, params, data, starting weights)", run.world,
          run.device)
    resumed = resume_as_rank0_decides(run.state_path, run.fingerprint, run.model,
                                      run.optimizer, run.device, run.world)
    if resumed is None:
        return
    run.history, run.best = resumed.history, resumed.best
    run.masks = resumed.masks.to(run.device) if resumed.masks is not None else None
    if run.history:
        run.first_epoch = int(run.history[-1]["epoch"]) + 1
    if resumed.trace_tensors:
        run.trace = BudgetTrace.from_tensors(run.trace.meta, resumed.trace_tensors)
    run.trace.truncate(run.first_epoch - 1)
    if run.world.is_main:
        console.print(f"[cyan]{run.spec.name}[/]: resuming after epoch {run.first_epoch - 1} "
                      f"from {run.state_path}")


def _refresh_masks(run: _Run, epoch: int) -> None:
    """The epoch's masks: the first from the starting model, later ones from the current model
    every `refresh_every` epochs (the paper: every epoch); random_mask draws PART's counts of
    the epoch at random places."""
    spec, data = run.spec, run.data
    run_index = epoch - spec.first_epoch
    refresh = run.masks is None or bool(spec.refresh_every and run_index > 0
                                        and run_index % spec.refresh_every == 0)
    if spec.variant == "random_mask":
        assert run.followed is not None
        counts = run.followed.counts_at(epoch)
        if refresh or run.masks is None or not torch.equal(kept_counts(run.masks).cpu(), counts):
            run.masks = trace_masks(counts, (counts.shape[0], counts.shape[1],
                                             *data.image_shape[1:]),
                                    run.params.seed, epoch, run.device, run.world)
    elif uses_cam(spec.variant) and not follows_part(spec.variant) and refresh:
        with numerics(run.precision):  # masks at the declared precision, like the attacks
            run.masks = refreshed_masks(run.model, data.images, spec.mask_settings,
                                        run.params.seed, epoch, augmentation(run.params),
                                        run.world)


def _budget(run: _Run, epoch: int) -> EpochBudget:
    params, spec, followed = run.params, run.spec, run.followed
    matched = (followed.mean_budget(epoch)
               if spec.variant == "uniform_matched" and followed is not None else None)
    budget = epoch_budget(spec.variant, run.masks, params.eps, params.eps_low,
                          params.mask.alignment, matched_mean=matched)
    run.trace.record(epoch, budget.mean, budget.masks)
    return budget


def _set_learning_rate(run: _Run, epoch: int) -> float:
    lr = learning_rate(run.params.train, epoch, run.params.burn_in_epochs)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    return lr


def _compiled(run: _Run, trainer: nn.Module) -> tuple[nn.Module, nn.Module]:
    """What the training loss and its attack run through: with train.compile, torch.compile of
    the trainer and of the model (one graph cache each, the model's own weights). CAM needs the
    plain module's hooks and the monitor runs once an epoch: both keep the model itself."""
    if not run.params.train.compile:
        return trainer, run.model
    return torch.compile(trainer), torch.compile(run.model)


def _epoch(run: _Run, epoch: int, trainer: nn.Module, display: Display) -> dict[str, Any]:
    """Train and monitor one epoch; its row of the history."""
    started = time.perf_counter()
    _refresh_masks(run, epoch)
    important_fraction = run.masks.float().mean().item() if run.masks is not None else None
    budget = _budget(run, epoch)
    lr = _set_learning_rate(run, epoch)
    n_batches = math.ceil(run.data.images.shape[0] / run.params.train.batch_size)
    with display.task(f"{run.spec.name} {epoch}/{run.spec.last_epoch}", n_batches) as task:

        def show(batch_index: int, running: RunningMeans, task: Task = task) -> None:
            if batch_index % 10 == 0 or batch_index == n_batches - 1:
                loss_now, acc_now = running.peek()
                task.update(completed=batch_index + 1,
                            status=f"loss {loss_now:.3f} acc {acc_now:.3f}")
            else:
                task.advance(1)

        running = train_epoch(run.model, run.optimizer, run.data, budget, run.params, epoch,
                              run.device, on_batch=show, world=run.world, trainer=trainer,
                              attacker=run.attacker)
    running.combine(lambda sums: sum_across(sums, run.world))
    average_buffers(run.model, run.world)
    train_loss, train_acc = running.final()
    natural, robust = monitor_accuracy(run.model, run.data, run.params, run.device, epoch,
                                       run.world)
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    row = {"epoch": epoch, "run": run.spec.name, "lr": lr,
           "train_loss": round(train_loss, 6), "train_adv_acc": round(train_acc, 6),
           "val_natural": round(natural, 6), "val_pgd": round(robust, 6),
           "important_fraction": (round(important_fraction, 6)
                                  if important_fraction is not None
                                  and important_fraction == important_fraction else ""),
           "mean_budget": round(budget.mean, 8),
           "seconds": round(time.perf_counter() - started, 3)}
    task.update(status=f"loss {train_loss:.3f} acc {train_acc:.3f} "
                       f"nat {natural:.3f} pgd {robust:.3f}")
    return row


def _write_outputs(run: _Run, out_path: Path, best_path: Path | None, trace_path: Path | None,
                   timings_path: Path | None) -> None:
    """The last epoch's checkpoint (with the momentum a later run continues from), the best
    epoch's, the trace and the wall times; then the resume state goes."""
    params, data, spec, device = run.params, run.data, run.spec, run.device
    save_checkpoint(out_path, run.model,
                    checkpoint_meta(params, data, spec, spec.last_epoch, run.history, device),
                    extra_tensors=momentum_tensors(run.optimizer))
    if best_path is not None:
        save_best(best_path, run.model, run.best, params, data, spec, run.history, device)
    if trace_path is not None:
        save_trace(trace_path, run.trace)
    if timings_path is not None:
        write_timings(timings_path, spec.name, run.history)
    # The outputs now hold this run: a state left behind could only ever resume a finished run.
    run.state_path.unlink(missing_ok=True)


def train_run(params: Params, spec: RunSpec, data: TrainData, device: torch.device, *,
              out_path: Path, log_dir: Path, state_dir: Path, best_path: Path | None = None,
              trace_path: Path | None = None, timings_path: Path | None = None,
              show_progress: bool = True) -> list[dict[str, Any]]:
    """Train epochs spec.first_epoch..spec.last_epoch; write the final checkpoint (and, given
    best_path, the best epoch's; given trace_path, the run's budget trace) and log every epoch
    into log_dir. Returns the history.

    Started by torchrun with several processes, the ranks share every batch and only rank 0
    writes (part/runtime/distributed.py)."""
    make_deterministic(device, params.train.deterministic)  # before the first CUDA matmul
    world = world_from_env()
    join(world, device)
    run = _start(params, spec, data, device, world, state_dir)
    _resume(run)
    trainer, run.attacker = _compiled(run, data_parallel(run.model, world, device))
    writes = world.is_main
    staging = state_dir / f"{spec.name}.dvclive"  # beside the resume state, git-ignored
    with Display(show_progress and writes) as display, \
            (TrainingLog(log_dir, run.history, staging) if writes
             else contextlib.nullcontext()) as log:
        for epoch in range(run.first_epoch, spec.last_epoch + 1):
            row = _epoch(run, epoch, trainer, display)
            run.history.append(row)
            if writes:
                log.log_epoch(row)
            if best_path is not None and better(run.best, row):
                run.best = best_of(run.model, row, keep_weights=writes)
            if writes:
                save_state(run.state_path, run.model, run.optimizer, run.masks, run.best,
                           run.trace, params, data, spec, epoch, run.history, run.fingerprint,
                           device)
    if writes:
        _write_outputs(run, out_path, best_path, trace_path, timings_path)
    barrier(world)  # rank 0 writes the outputs: the stage ends when they are whole
    leave(world)
    return run.history
