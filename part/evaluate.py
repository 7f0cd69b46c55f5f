"""Multi-attack robustness evaluation -> the metrics dict of DESIGN section 4.

Attacks (keys of the metrics JSON):

- ``natural``: clean accuracy.
- ``fgsm``: one signed-gradient step of size eps.
- ``pgd20``: PGD on cross-entropy, uniform random start, ``steps`` steps of ``step_size`` (the
  paper evaluates with the training step: 2/255, 1/255 on SVHN).
- ``cw20``: PGD on the CW margin max_{j != y} z_j - z_y, same schedule.
- ``mma``: the paper code's margin attack, exactly: from one shared random start, a hinged
  targeted margin PGD against each of the top-3 other classes; per example the run with the
  largest margin towards its own target class is kept.
- ``mma_max``: a stronger MMA: independent random starts, no hinge, and per example the run
  with the largest margin over all wrong classes is kept.
- ``pgd_unimportant``: PGD on cross-entropy (as ``pgd20``) with the full eps on the elements the
  evaluated model's own CAM calls unimportant (the pipeline's CAM method and mask rule) and no
  budget elsewhere: it attacks PART where PART trains with eps_low.
- ``autoattack``: AutoAttack standard, L-inf (APGD-CE, APGD-T, FAB-T, Square), through the
  upstream ``autoattack`` package where it is installed, else ``pyautoattack``.

Every attack runs on the first ``n_<key>`` test examples (the same first examples for all), so
the per-example correctness vectors line up; ``worst_case`` counts an example as robust only if
it survives every attack that ran on it, over the first ``n_worst_case = min(n_<key>)`` examples.

Evaluation runs in full precision (no autocast), with the model in eval mode and its parameters
frozen; bf16 logits can hide a few successful attacks near the decision boundary, and evaluation
is a small share of a run's cost, so exactness wins. Per-example results stay on the device as
bool vectors; the only host syncs are one per attack, after its batch loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from part.atomic import atomic_write_text
from part.attacks import cw_inf, fgsm, mma, mma_max, pgd
from part.errors import PartError
from part.masking import MaskSettings, unimportant_budget
from part.params import ATTACKS, Params
from part.precision import precision_context

__all__ = [
    "ATTACKS",
    "AUTOATTACK_SUBATTACKS",
    "EvaluationError",
    "MMA_TOP_K",
    "Metrics",
    "OUTCOMES_FORMAT",
    "attack_correctness",
    "evaluate_checkpoint",
    "evaluate_model",
    "evaluate_with_params",
    "parse_attacks",
    "worst_case_correctness",
    "write_metrics",
    "write_outcomes",
]

MMA_TOP_K = 3  # the paper's code attacks the 3 most likely wrong classes
AUTOATTACK_SUBATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
AUTOATTACK_MAX_TARGETS = 9  # the standard version's APGD-T / FAB-T target count
AUTOATTACK_MIN_CLASSES = 4  # APGD-T's targeted DLR loss reads the 4th-largest logit

OUTCOMES_FORMAT = "part-outcomes/1"


class Metrics(dict):
    """The metrics dict, carrying the per-example outcomes it was counted from: `outcomes[key]`
    is a bool tensor [n_<key>] on the CPU, true where the model classifies that test example
    (the first n_<key> of the set, in order) correctly under that attack; also `worst_case`."""

    def __init__(self, *args: Any, outcomes: Mapping[str, Tensor] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, Tensor] = dict(outcomes or {})


Adversary = Callable[[nn.Module, Tensor, Tensor], Tensor]
Advance = Callable[[int], None]


class EvaluationError(PartError):
    """Evaluation asked for with inputs or settings it cannot honour."""


# --------------------------------------------------------------------------- arguments


def parse_attacks(attacks: str | Sequence[str]) -> tuple[str, ...]:
    """Attack keys from "natural,pgd20" or a sequence, validated, deduplicated, in ATTACKS order."""
    items = attacks.split(",") if isinstance(attacks, str) else list(attacks)
    names = [str(item).strip() for item in items if str(item).strip()]
    if not names:
        raise EvaluationError(f"no attacks given; choose from {', '.join(ATTACKS)}")
    unknown = [name for name in names if name not in ATTACKS]
    if unknown:
        raise EvaluationError(
            f"unknown attack {', '.join(repr(name) for name in unknown)}; "
            f"allowed: {', '.join(ATTACKS)}"
        )
    return tuple(name for name in ATTACKS if name in names)


# The CAM settings `pgd_unimportant` uses where the caller names none: the pipeline's defaults.
DEFAULT_MASK_SETTINGS = MaskSettings(method="gradcam", rule="official")


@dataclass(frozen=True)
class AttackSettings:
    eps: float
    step_size: float
    steps: int
    batch_size: int
    seed: int
    masks: MaskSettings = DEFAULT_MASK_SETTINGS  # how pgd_unimportant finds the unimportant


def _check_settings(settings: AttackSettings) -> None:
    def is_number(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not is_number(settings.eps) or not 0.0 <= settings.eps <= 1.0:
        raise EvaluationError(
            f"eps must be a budget in [0, 1] (a fraction of the pixel range, e.g. 8/255); "
            f"got {settings.eps!r}"
        )
    if not is_number(settings.step_size) or not math.isfinite(settings.step_size) \
            or settings.step_size < 0:
        raise EvaluationError(f"step_size must be a number >= 0 (e.g. eps/4); "
                              f"got {settings.step_size!r}")
    for name, minimum in (("steps", 0), ("batch_size", 1), ("seed", 0)):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise EvaluationError(f"{name} must be a whole number >= {minimum}; got {value!r}")


def _check_count(value: int | None, name: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EvaluationError(f"{name} must be a positive whole number or None (all); "
                              f"got {value!r}")


def _check_data(images: Tensor, labels: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise EvaluationError(f"images must be a tensor [N,C,H,W]; got {shape}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise EvaluationError(
            f"images must be uint8 (0..255) or float in [0,1]; got dtype {images.dtype}"
        )
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64 \
            or tuple(labels.shape) != (images.shape[0],):
        got = (tuple(labels.shape), labels.dtype) if isinstance(labels, Tensor) else labels
        raise EvaluationError(
            f"labels must be an int64 tensor [{images.shape[0]}], one per image; got {got}"
        )
    if images.shape[0] == 0:
        raise EvaluationError("the test set is empty; prepare a data set with test examples")
    # One sync before any batch loop: a float set outside [0,1] was normalised or scaled wrongly.
    if images.is_floating_point() and bool((images.amin() < 0) | (images.amax() > 1)):
        raise EvaluationError(
            "float images must lie in [0,1] (the models normalise internally); pass the "
            "prepared uint8 images or divide by 255"
        )


def _as_unit_float(images: Tensor) -> Tensor:
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


# --------------------------------------------------------------------------- progress


class _Tracker:
    """A rich progress bar per attack on the stderr console, or nothing."""

    def __init__(self, enabled: bool):
        self._progress = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            from part.ui import console

            self._progress = Progress(TextColumn("{task.description:<24}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(),
                                      TimeRemainingColumn(), console=console)

    @contextlib.contextmanager
    def running(self) -> Iterator[_Tracker]:
        if self._progress is None:
            yield self
            return
        with self._progress:
            yield self

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[_Task]:
        task = _Task(self._progress, description, total)
        try:
            yield task
        finally:
            task.finish()


class _Task:
    def __init__(self, progress: Any, description: str, total: int):
        self._progress = progress
        self._total = total
        self._id = progress.add_task(description, total=total) if progress is not None else None

    def advance(self, amount: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._id, amount)

    def describe(self, description: str) -> None:
        if self._progress is not None:
            self._progress.update(self._id, description=description)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.update(self._id, completed=self._total)


# --------------------------------------------------------------------------- our attacks


def _adversary(name: str, settings: AttackSettings) -> Adversary:
    eps, step, steps = settings.eps, settings.step_size, settings.steps
    adversaries: dict[str, Adversary] = {
        "natural": lambda model, x, y: x,
        "fgsm": lambda model, x, y: fgsm(model, x, y, eps),
        "pgd20": lambda model, x, y: pgd(model, x, y, eps, step, steps, random_start=True),
        "cw20": lambda model, x, y: cw_inf(model, x, y, eps, step, steps, random_start=True),
        "mma": lambda model, x, y: mma(model, x, y, eps, step, steps, k=MMA_TOP_K,
                                       random_start=True),
        "mma_max": lambda model, x, y: mma_max(model, x, y, eps, step, steps, k=MMA_TOP_K,
                                               random_start=True),
        "pgd_unimportant": lambda model, x, y: pgd(
            model, x, y, unimportant_budget(model, x, eps, settings.masks), step, steps,
            random_start=True),
    }
    return adversaries[name]


def _batched_correctness(model: nn.Module, images: Tensor, labels: Tensor, adversary: Adversary,
                         batch_size: int, advance: Advance) -> Tensor:
    """bool [N] on the device: is the model right on the adversary's output for each example?"""
    correct = torch.empty(labels.shape[0], dtype=torch.bool, device=labels.device)
    for start in range(0, labels.shape[0], batch_size):
        stop = min(start + batch_size, labels.shape[0])
        x, y = _as_unit_float(images[start:stop]), labels[start:stop]
        x_adv = adversary(model, x, y)
        with torch.no_grad():
            correct[start:stop] = model(x_adv).argmax(dim=1) == y
        advance(stop - start)
    return correct


# --------------------------------------------------------------------------- AutoAttack


@dataclass
class AutoAttackResult:
    correct: Tensor  # bool [n]: the model's verdict on AutoAttack's returned x_adv
    reported: Tensor  # bool [n]: AutoAttack's own verdict (its returned labels == y)
    package: str


def _autoattack_package() -> tuple[ModuleType, bool]:
    """(module, is_upstream): upstream `autoattack` where installed, as the paper used it."""
    try:
        import autoattack

        return autoattack, True
    except ImportError:
        pass
    try:
        import pyautoattack

        return pyautoattack, False
    except ImportError:
        raise EvaluationError(
            "the autoattack evaluation needs the pyautoattack package (pip install pyautoattack) "
            "or upstream autoattack; or leave autoattack out of the attacks"
        ) from None


def _autoattack_runner(model: nn.Module, settings: AttackSettings, device: torch.device,
                       num_classes: int) -> tuple[Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
                                                  str]:
    """A function (x, y) -> (x_adv, y_adv) running AutoAttack standard L-inf, and its package."""
    package, upstream = _autoattack_package()
    options = {"norm": "Linf", "eps": settings.eps, "version": "standard", "device": device,
               "seed": settings.seed}
    if upstream:  # positional-or-keyword API; prints unless verbose=False
        adversary = package.AutoAttack(model, verbose=False, **options)

        def run(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            return adversary.run_standard_evaluation(x, y, bs=settings.batch_size,
                                                     return_labels=True)
    else:  # keyword-only API; logs to the 'auto-attack' logger, returns (x_adv, y_adv)
        adversary = package.AutoAttack(model, **options)

        def run(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            return adversary.run_standard_evaluation(x, y, batch_size=settings.batch_size)
    # Standard AA targets the 9 most likely wrong classes: fewer where fewer exist.
    adversary.apgd_targeted.n_target_classes = min(AUTOATTACK_MAX_TARGETS, num_classes - 1)
    adversary.fab.n_target_classes = min(AUTOATTACK_MAX_TARGETS, num_classes - 1)
    version = getattr(package, "__version__", None)
    return run, f"{package.__name__} {version}" if version else package.__name__


class _AutoAttackLogBridge(logging.Handler):
    """pyautoattack logs its progress at DEBUG on the 'auto-attack' logger: move the progress bar
    on it, and pass its warnings (randomised model, too many targets, ...) on to the console."""

    def __init__(self, task: _Task):
        super().__init__(level=logging.DEBUG)
        self._task = task

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            from part.ui import console

            console.print(f"[yellow]autoattack warning:[/] {message}", soft_wrap=True)
        elif message.startswith("running "):
            self._task.describe(f"autoattack ({message.removeprefix('running ')})")
        elif message.startswith("robust accuracy after "):
            self._task.advance(1)


@contextlib.contextmanager
def _bridged_autoattack_log(task: _Task) -> Iterator[None]:
    logger = logging.getLogger("auto-attack")
    saved = logger.level, logger.propagate
    handler = _AutoAttackLogBridge(task)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # its DEBUG chatter must not reach the user's root handlers
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _autoattack(model: nn.Module, images: Tensor, labels: Tensor, settings: AttackSettings,
                num_classes: int, task: _Task) -> AutoAttackResult:
    """AutoAttack standard on exactly these examples.

    AutoAttack itself spends no work on examples that are already lost: it skips examples the
    model misclassifies clean, and each sub-attack only attacks those still robust after the
    previous ones. We do NOT pre-filter with our own attacks, since that would change what the
    `autoattack` figure means; the caller bounds the work by passing only n_autoattack examples.
    """
    if num_classes < AUTOATTACK_MIN_CLASSES:
        raise EvaluationError(
            f"AutoAttack's targeted attacks need at least {AUTOATTACK_MIN_CLASSES} classes, the "
            f"model has {num_classes}; leave autoattack out of the attacks"
        )
    run, package = _autoattack_runner(model, settings, labels.device, num_classes)
    x = _as_unit_float(images)
    with _bridged_autoattack_log(task):
        x_adv, y_adv = run(x, labels)
    correct = _batched_correctness(model, x_adv, labels, _adversary("natural", settings),
                                   settings.batch_size, lambda _: None)
    return AutoAttackResult(correct=correct, reported=y_adv.to(labels.device) == labels,
                            package=package)


def _warn_if_disagreeing(ours: float, reported: float) -> None:
    if ours != reported:
        from part.ui import console

        console.print(
            f"[yellow]autoattack warning:[/] the model's accuracy on AutoAttack's x_adv "
            f"({ours:.2%}) differs from AutoAttack's own report ({reported:.2%}); the model's "
            "outputs are not deterministic (non-deterministic kernels or a randomised model)",
            soft_wrap=True)


# --------------------------------------------------------------------------- the evaluation


@contextlib.contextmanager
def _evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters (attacks need input gradients only); restored after."""
    was_training = model.training
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    model.eval()
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
        model.train(was_training)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def attack_correctness(model: nn.Module, images: Tensor, labels: Tensor, attack: str, *,
                       eps: float, step_size: float, steps: int = 20, batch_size: int = 256,
                       seed: int = 0, masks: MaskSettings | None = None) -> Tensor:
    """bool [N] on the images' device: does the model classify each example correctly under
    `attack` (one of ATTACKS except autoattack)? Seeded with `seed` first; model in eval mode."""
    (name,) = parse_attacks([attack])
    if name == "autoattack":
        raise EvaluationError("attack_correctness runs our own attacks; use evaluate_model for "
                              "autoattack")
    settings = AttackSettings(eps, step_size, steps, batch_size, seed,
                              masks or DEFAULT_MASK_SETTINGS)
    _check_settings(settings)
    _check_data(images, labels)
    with _evaluation_mode(model), torch.random.fork_rng(devices=_rng_devices(labels.device)), \
            precision_context("fp32", labels.device):
        torch.manual_seed(seed)
        return _batched_correctness(model, images, labels, _adversary(name, settings),
                                    batch_size, lambda _: None)


def worst_case_correctness(correct: Mapping[str, Tensor]) -> Tensor:
    """An example is robust only if it survives every attack; over the first min(n) examples."""
    if not correct:
        raise EvaluationError("worst case needs at least one attack's results")
    count = min(vector.shape[0] for vector in correct.values())
    vectors = [vector[:count] for vector in correct.values()]
    return torch.stack(vectors).all(dim=0)


def _rng_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _model_device(model: nn.Module, images: Tensor) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else images.device


def _num_classes(model: nn.Module, images: Tensor) -> int:
    declared = getattr(model, "num_classes", None)
    if isinstance(declared, int):
        return declared
    with torch.no_grad():
        return int(model(_as_unit_float(images[:1])).shape[1])


def evaluate_model(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    attacks: Sequence[str] | str = ATTACKS,
    eps: float,
    step_size: float,
    steps: int = 20,
    n: int | None = None,
    n_autoattack: int | None = 1000,
    batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device | None = None,
    masks: MaskSettings | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Accuracy of `model` under each attack, with example counts, timings and the worst case.

    images: uint8 [N,C,H,W] (0..255) or float in [0,1]; labels: int64 [N]. `n` examples (None:
    all) for every attack but AutoAttack, which takes the first `n_autoattack` (AutoAttack skips
    examples that are misclassified clean and, between its sub-attacks, those already broken;
    we never run it on more than n_autoattack examples). The same first examples are used
    throughout. `device` (default: the model's) is where everything runs; model and data are
    moved there; the model is put in eval mode with frozen parameters for the run, then restored.
    `torch.manual_seed(seed)` precedes each attack (AutoAttack gets seed=seed), under a forked
    RNG so the caller's random state is untouched. Full float32 throughout (no autocast, no
    TF32). `masks` (default gradcam, official) is how pgd_unimportant finds the unimportant
    elements; n_autoattack None is the whole set.

    Returns {key: accuracy in [0,1], n_<key>, seconds_<key>} for each attack, plus worst_case,
    n_worst_case, eps, step_size, steps, seed, and for AutoAttack autoattack_reported (the
    package's own verdict) and autoattack_package.
    """
    names = parse_attacks(attacks)
    settings = AttackSettings(eps, step_size, steps, batch_size, seed,
                              masks or DEFAULT_MASK_SETTINGS)
    _check_settings(settings)
    _check_count(n, "n")
    _check_count(n_autoattack, "n_autoattack")
    _check_data(images, labels)
    device = torch.device(device) if device is not None else _model_device(model, images)
    images, labels = images.to(device), labels.to(device)
    model = model.to(device)
    total = labels.shape[0]
    counts = {name: min(total, (n_autoattack or total) if name == "autoattack" else (n or total))
              for name in names}

    correct: dict[str, Tensor] = {}
    seconds: dict[str, float] = {}
    extras: dict[str, Any] = {}
    tracker = _Tracker(progress)
    with _evaluation_mode(model), torch.random.fork_rng(devices=_rng_devices(device)), \
            precision_context("fp32", device), tracker.running():
        for name in names:
            count = counts[name]
            torch.manual_seed(seed)
            started = time.perf_counter()
            if name == "autoattack":
                with tracker.task("autoattack", len(AUTOATTACK_SUBATTACKS)) as task:
                    result = _autoattack(model, images[:count], labels[:count], settings,
                                         _num_classes(model, images), task)
                correct[name] = result.correct
                extras["autoattack_reported"] = float(result.reported.sum()) / count
                extras["autoattack_package"] = result.package
                _warn_if_disagreeing(float(result.correct.sum()) / count,
                                     extras["autoattack_reported"])
            else:
                with tracker.task(name, count) as task:
                    correct[name] = _batched_correctness(
                        model, images[:count], labels[:count], _adversary(name, settings),
                        batch_size, task.advance)
            _synchronize(device)
            seconds[name] = time.perf_counter() - started

    worst = worst_case_correctness(correct)
    outcomes = {name: vector.cpu() for name, vector in correct.items()}
    metrics = Metrics(outcomes={**outcomes, "worst_case": worst.cpu()})
    for name in names:
        metrics[name] = float(correct[name].sum()) / counts[name]
        metrics[f"n_{name}"] = counts[name]
    metrics["worst_case"] = float(worst.sum()) / worst.shape[0]
    metrics["n_worst_case"] = int(worst.shape[0])
    metrics.update({f"seconds_{name}": round(seconds[name], 3) for name in names})
    metrics.update(eps=float(eps), step_size=float(step_size), steps=steps, seed=seed,
                   attacks=list(names), **extras)
    return metrics


# --------------------------------------------------------------------------- checkpoints


def _check_fits(checkpoint: Path, meta: Mapping[str, Any], data: Path,
                data_meta: Mapping[str, Any]) -> None:
    def describe(source: Mapping[str, Any]) -> str:
        return (f"{source['in_channels']}-channel {source['image_size']}x{source['image_size']} "
                f"images in {source['num_classes']} classes")

    keys = ("in_channels", "image_size", "num_classes")
    mismatched = [key for key in keys if int(meta[key]) != int(data_meta[key])]
    if mismatched:
        raise EvaluationError(
            f"checkpoint {checkpoint} does not fit the data {data} ({', '.join(mismatched)} "
            f"differ): the model was trained on {describe(meta)} ({meta['dataset']}), the data "
            f"holds {describe(data_meta)} ({data_meta['dataset']}); evaluate it on the test set "
            f"of the data set it was trained on"
        )
    if meta["dataset"] != data_meta["dataset"]:
        raise EvaluationError(
            f"checkpoint {checkpoint} was trained on {meta['dataset']!r} but {data} holds "
            f"{data_meta['dataset']!r}; evaluate it on the test set of {meta['dataset']!r}"
        )


def _resolve(device: str | torch.device) -> torch.device:
    from part.device import resolve_device

    return device if isinstance(device, torch.device) else resolve_device(device)


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    *,
    attacks: Sequence[str] | str = ATTACKS,
    eps: float | None = None,
    step_size: float | None = None,
    steps: int = 20,
    n: int | None = None,
    n_autoattack: int | None = 1000,
    batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device = "auto",
    expect: Mapping[str, Any] | None = None,
    masks: MaskSettings | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a part checkpoint on a prepared test split (see evaluate_model).

    The architecture comes from the checkpoint's metadata; it must fit the data (channels, image
    size, classes, data set). eps defaults to the checkpoint's training eps, step_size to eps/4.
    `expect` (metadata key -> value) is checked as load_checkpoint does. The metrics gain the
    checkpoint's model, method, variant, dataset, eps_low, epoch, training eps and seed, and the
    paths.
    """
    from part.checkpoint import load_checkpoint, read_metadata
    from part.data import load_prepared

    checkpoint, data = Path(checkpoint), Path(data)
    names = parse_attacks(attacks)
    device = _resolve(device)
    meta = read_metadata(checkpoint)  # cheap: header only, before reading the data
    split = load_prepared(data, device=device)
    _check_fits(checkpoint, meta, data, split.meta)
    model, meta = load_checkpoint(checkpoint, device=device, expect=expect)
    if eps is None:
        if meta.get("eps") is None:
            raise EvaluationError(f"checkpoint {checkpoint} records no training eps; give the "
                                  "evaluation budget explicitly (e.g. --eps 8/255)")
        eps = float(meta["eps"])
    if step_size is None:
        step_size = eps / 4
    metrics = evaluate_model(model, split.images, split.labels, attacks=names, eps=eps,
                             step_size=step_size, steps=steps, n=n, n_autoattack=n_autoattack,
                             batch_size=batch_size, seed=seed, device=device, masks=masks,
                             progress=progress)
    provenance = {key: meta.get(key) for key in ("model", "method", "variant", "dataset",
                                                 "eps_low", "epoch")}
    return Metrics({**metrics, **provenance, "train_eps": meta.get("eps"),
                    "train_seed": meta.get("seed"),
                    "checkpoint": str(checkpoint), "data": str(data)},
                   outcomes=metrics.outcomes)


def evaluate_with_params(params: Params, checkpoint: str | Path, data: str | Path, *,
                         progress: bool = True) -> dict[str, Any]:
    """The evaluate stage: params.eval settings, the eval eps and the training step size, and a
    checkpoint that must have been made for params' model and data set."""
    return evaluate_checkpoint(
        checkpoint, data, attacks=params.eval.attacks, eps=params.eval_eps,
        step_size=params.eval_step_size, steps=params.eval.steps, n=params.eval.n,
        n_autoattack=params.eval.n_autoattack, batch_size=params.eval.batch_size,
        seed=params.eval.seed, device=params.device,
        expect={"model": params.model, "dataset": params.dataset},
        masks=MaskSettings(params.cam, params.mask_rule, params.mask.quantile,
                           params.mask.batch_size), progress=progress)


TIMING_PREFIX = "seconds_"


def split_timings(metrics: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(results, timings): wall times differ from run to run, so they stay out of the metrics
    file, whose bytes must depend only on the code, params and data."""
    results = {key: value for key, value in metrics.items() if not key.startswith(TIMING_PREFIX)}
    timings = {key: value for key, value in metrics.items() if key.startswith(TIMING_PREFIX)}
    return results, timings


def _write_json(path: str | Path, content: Mapping[str, Any], what: str) -> Path:
    path = Path(path)
    try:
        atomic_write_text(path, json.dumps(dict(content), indent=2) + "\n")
    except OSError as error:
        raise EvaluationError(f"cannot write {what} to {path}: {error}; check the directory "
                              "exists or can be created, and its permissions") from None
    return path


def write_metrics(path: str | Path, metrics: Mapping[str, Any]) -> Path:
    """The results as indented JSON, atomically; the timings are left out (see split_timings)."""
    return _write_json(path, split_timings(metrics)[0], "metrics")


def write_outcomes(path: str | Path, metrics: Metrics) -> Path:
    """metrics.outcomes as bool tensors named by their metrics keys, canonically and atomically,
    so that paired statistics (McNemar) never need the attacks to run again."""
    from part.tensorfile import write_safetensors

    missing = [key for key in metrics.outcomes if f"n_{key}" not in metrics]
    if missing or not metrics.outcomes:
        raise EvaluationError(f"no per-example outcomes for {missing or 'any attack'}; these "
                              "metrics did not come from evaluate_model")
    meta = {"format": OUTCOMES_FORMAT, "checkpoint": str(metrics.get("checkpoint", "")),
            "data": str(metrics.get("data", "")),
            "order": "the first n_<key> examples of the test set, in order"}
    try:
        return write_safetensors(path, {key: vector.contiguous()
                                        for key, vector in metrics.outcomes.items()}, meta)
    except OSError as error:
        raise EvaluationError(f"cannot write outcomes to {path}: {error}; check the directory "
                              "and its permissions") from None


def write_timings(path: str | Path, metrics: Mapping[str, Any]) -> Path:
    """The seconds each attack took, as plain JSON beside (not among) the metrics."""
    return _write_json(path, split_timings(metrics)[1], "timings")
