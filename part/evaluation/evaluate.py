"""Multi-attack robustness evaluation -> the metrics dict (docs/evaluation.md).

The attacks and their keys are `part.attacks.suite`'s registry; AutoAttack runs through
`part.attacks.autoattack`.

Every attack runs on the first ``n_<key>`` test examples (the same first examples for all), so
the per-example correctness vectors line up. ``worst_case`` counts an example as robust only if
it survives every attack but AutoAttack, over every example they all ran on (``n_worst_case``,
the smallest of their ``n_<key>``); ``worst_case_autoattack`` adds AutoAttack, over the
AutoAttack subset (``n_worst_case_autoattack``). AutoAttack usually runs on fewer examples, and
a worst case over its subset alone would drop every other example from the headline figure.

Evaluation runs in full precision (no autocast), with the model in eval mode and its parameters
frozen; bf16 logits can hide a few successful attacks near the decision boundary, and evaluation
is a small share of a run's cost, so exactness wins. Per-example results stay on the device as
bool vectors; the only host syncs are one per attack, after its batch loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from part.attacks.autoattack import package_name, run_autoattack, warn_if_disagreeing
from part.attacks.suite import (
    ATTACKS,
    AUTOATTACK,
    DEFAULT_MASK_SETTINGS,
    Adversary,
    AttackSettings,
    EvaluationError,
    adversary,
    parse_attacks,
)
from part.evaluation.outcomes import (
    Metrics,
    worst_cases,
)
from part.importance.masks import MaskSettings
from part.models.eval_mode import eval_mode
from part.params import Params
from part.runtime.precision import precision_context
from part.runtime.progress import Display

__all__ = [
    "EvaluationError",
    "attack_correctness",
    "evaluate_checkpoint",
    "evaluate_model",
    "evaluate_with_params",
    "library_versions",
]

def library_versions() -> dict[str, str]:
    """The versions that decide an evaluation's figures, for the metrics to record."""
    import numpy
    import torchvision

    from part import __version__

    versions = {"part": __version__, "torch": torch.__version__,
                "torchvision": torchvision.__version__, "numpy": numpy.__version__}
    try:
        versions["autoattack"] = package_name()
    except EvaluationError:  # not installed: only a run without autoattack gets here
        pass
    return versions


Advance = Callable[[int], None]

# --------------------------------------------------------------------------- arguments


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


# --------------------------------------------------------------------------- running attacks


def batched_correctness(model: nn.Module, images: Tensor, labels: Tensor, adversary: Adversary,
                         batch_size: int, advance: Advance, kept: Tensor | None = None) -> Tensor:
    """bool [N] on the device: is the model right on the adversary's output for each example?
    With `kept` (float [N, C, H, W]), the adversary's outputs are stored there as well."""
    correct = torch.empty(labels.shape[0], dtype=torch.bool, device=labels.device)
    for start in range(0, labels.shape[0], batch_size):
        stop = min(start + batch_size, labels.shape[0])
        x, y = _as_unit_float(images[start:stop]), labels[start:stop]
        x_adv = adversary(model, x, y)
        if kept is not None:
            kept[start:stop] = x_adv.detach()
        with torch.no_grad():
            correct[start:stop] = model(x_adv).argmax(dim=1) == y
        advance(stop - start)
    return correct


def _autoattack(model: nn.Module, images: Tensor, labels: Tensor, settings: AttackSettings,
                num_classes: int, task: Any, kept: Tensor | None
                ) -> tuple[Tensor, Tensor, str]:
    """AutoAttack on these examples: the model's own verdict on its x_adv (bool [n]), AutoAttack's
    verdict, and the package that ran it."""
    x_adv, reported, package = run_autoattack(model, _as_unit_float(images), labels, settings,
                                              num_classes, task)
    correct = batched_correctness(model, x_adv, labels, adversary("natural", settings),
                                   settings.batch_size, lambda _: None, kept)
    return correct, reported, package


# --------------------------------------------------------------------------- the evaluation


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def attack_correctness(model: nn.Module, images: Tensor, labels: Tensor, attack: str, *,
                       eps: float, step_size: float, steps: int = 20, batch_size: int = 256,
                       seed: int = 0, masks: MaskSettings | None = None) -> Tensor:
    """bool [N] on the images' device: does the model classify each example correctly under
    `attack` (one of ATTACKS except autoattack)? Seeded with `seed` first; model in eval mode."""
    (name,) = parse_attacks([attack])
    if name == AUTOATTACK:
        raise EvaluationError("attack_correctness runs our own attacks; use evaluate_model for "
                              "autoattack")
    settings = AttackSettings(eps, step_size, steps, batch_size, seed,
                              masks or DEFAULT_MASK_SETTINGS)
    _check_data(images, labels)
    with eval_mode(model, freeze=True), \
            torch.random.fork_rng(devices=_rng_devices(labels.device)), \
            precision_context("fp32", labels.device):
        torch.manual_seed(seed)
        return batched_correctness(model, images, labels, adversary(name, settings),
                                    batch_size, lambda _: None)


def _rng_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def model_device(model: nn.Module, images: Tensor) -> torch.device:
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
    autoattack_version: str = "standard",
    keep_adversarial: bool = False,
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
    elements; n_autoattack None is the whole set. `autoattack_version` is AutoAttack's own:
    standard, plus or rand. `keep_adversarial` keeps every attack's inputs (the returned Metrics'
    `adversarial`, see write_adversarial); they take 4 bytes per pixel of every example.

    Returns {key: accuracy in [0,1], n_<key>, seconds_<key>} for each attack, plus worst_case,
    n_worst_case (and worst_case_autoattack, n_worst_case_autoattack where AutoAttack ran beside
    other attacks), n_test (the examples given), eps, step_size, steps, seed, the library
    versions, and for AutoAttack
    autoattack_reported (the package's own verdict), autoattack_package, autoattack_version and
    autoattack_seed.
    """
    names = parse_attacks(attacks)
    settings = AttackSettings(eps, step_size, steps, batch_size, seed,
                              masks or DEFAULT_MASK_SETTINGS, autoattack_version)
    _check_count(n, "n")
    _check_count(n_autoattack, "n_autoattack")
    _check_data(images, labels)
    device = torch.device(device) if device is not None else model_device(model, images)
    images, labels = images.to(device), labels.to(device)
    model = model.to(device)
    total = labels.shape[0]
    counts = {name: min(total, (n_autoattack or total) if name == AUTOATTACK else (n or total))
              for name in names}
    kept = {name: torch.empty((counts[name], *images.shape[1:]), device=device)
            for name in names} if keep_adversarial else {}
    run = _run_attacks(model, images, labels, names, counts, settings, kept, progress)
    metrics = _counted(run, names, counts, total, labels, kept)
    metrics.update(eps=float(eps), step_size=float(step_size), steps=steps, seed=seed,
                   attacks=list(names), **run.extras, versions=library_versions())
    return metrics


@dataclass
class _AttackRuns:
    """Each attack's per-example correctness (on the device), wall time and AutoAttack's own
    figures."""
    correct: dict[str, Tensor] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


def _run_attacks(model: nn.Module, images: Tensor, labels: Tensor, names: Sequence[str],
                 counts: Mapping[str, int], settings: AttackSettings,
                 kept: Mapping[str, Tensor], progress: bool) -> _AttackRuns:
    """Every attack on its first examples, each after `torch.manual_seed(seed)` under a forked
    RNG, in full float32, with the model in eval mode and frozen."""
    run = _AttackRuns()
    device = images.device
    with eval_mode(model, freeze=True), torch.random.fork_rng(devices=_rng_devices(device)), \
            precision_context("fp32", device), Display(progress) as display:
        for name in names:
            count = counts[name]
            torch.manual_seed(settings.seed)
            started = time.perf_counter()
            if name == AUTOATTACK:
                with display.task(AUTOATTACK, 1) as task:
                    run.correct[name], reported, package = _autoattack(
                        model, images[:count], labels[:count], settings,
                        _num_classes(model, images), task, kept.get(name))
                run.extras["autoattack_reported"] = float(reported.sum()) / count
                run.extras["autoattack_package"] = package
                run.extras["autoattack_version"] = settings.autoattack_version
                run.extras["autoattack_seed"] = settings.seed
                warn_if_disagreeing(float(run.correct[name].sum()) / count,
                                    run.extras["autoattack_reported"])
            else:
                with display.task(name, count) as task:
                    run.correct[name] = batched_correctness(
                        model, images[:count], labels[:count], adversary(name, settings),
                        settings.batch_size, task.advance, kept.get(name))
            _synchronize(device)
            run.seconds[name] = time.perf_counter() - started
    return run


def _counted(run: _AttackRuns, names: Sequence[str], counts: Mapping[str, int], total: int,
             labels: Tensor, kept: Mapping[str, Tensor]) -> Metrics:
    """The accuracies with their counts, the worst cases and the wall times, carrying the
    per-example outcomes (and the kept inputs) on the CPU."""
    worst = worst_cases(run.correct)
    outcomes = {name: vector.cpu() for name, vector in {**run.correct, **worst}.items()}
    metrics = Metrics(outcomes=outcomes,
                      adversarial={name: x.cpu() for name, x in kept.items()},
                      labels=labels[:max(counts.values())].cpu() if kept else None)
    for name in names:
        metrics[name] = float(run.correct[name].sum()) / counts[name]
        metrics[f"n_{name}"] = counts[name]
    for name, vector in worst.items():
        metrics[name] = float(vector.sum()) / vector.shape[0]
        metrics[f"n_{name}"] = int(vector.shape[0])
    metrics["n_test"] = total
    metrics.update({f"seconds_{name}": round(run.seconds[name], 3) for name in names})
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
    from part.runtime.device import resolve_device

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
    autoattack_version: str = "standard",
    keep_adversarial: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a part checkpoint on a prepared test split (see evaluate_model).

    The architecture comes from the checkpoint's metadata; it must fit the data (channels, image
    size, classes, data set). eps defaults to the checkpoint's training eps, step_size to eps/4.
    `expect` (metadata key -> value) is checked as load_checkpoint does. The metrics gain the
    checkpoint's model, method, variant, dataset, eps_low, epoch, training eps and seed, its
    training and monitor counts (and for a best checkpoint where its epoch was selected), the
    paths and the checkpoint's sha256 (so that its figures can never be attached to another),
    and `n_test_set`, the size of the data set's whole test split the prepared one was drawn
    from (None where the prepared file does not record it).
    """
    from part.data.prepared import full_split_size, load_prepared
    from part.models.checkpoint import load_checkpoint, read_metadata

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
                             autoattack_version=autoattack_version,
                             keep_adversarial=keep_adversarial, progress=progress)
    from part.io.hashing import file_sha256

    provenance = {key: meta.get(key) for key in ("model", "method", "variant", "dataset",
                                                 "eps_low", "epoch", "train_examples",
                                                 "monitor_split")}
    for key in ("selected_by", "selected_on"):  # a best checkpoint: which epoch, chosen where
        if key in meta:
            provenance[key] = meta[key]
    return metrics.carried_by({**metrics, **provenance, "train_eps": meta.get("eps"),
                               "train_seed": meta.get("seed"),
                               "checkpoint": str(checkpoint),
                               "checkpoint_sha256": file_sha256(checkpoint),
                               "data": str(data),
                               "n_test_set": full_split_size(split.meta)})


def settings_from_params(params: Params) -> dict[str, Any]:
    """The evaluate_checkpoint keywords that params.yaml decides: params.eval, the eval eps, the
    training step size, the device and the CAM settings pgd_unimportant uses."""
    return {"attacks": params.eval.attacks or ATTACKS, "eps": params.eval_eps,
            "step_size": params.eval_step_size, "steps": params.eval.steps, "n": params.eval.n,
            "n_autoattack": params.eval.n_autoattack, "batch_size": params.eval.batch_size,
            "seed": params.eval.seed, "device": params.device,
            "masks": MaskSettings(params.cam, params.mask_rule, params.mask.quantile,
                                  params.mask.batch_size),
            "autoattack_version": params.eval.autoattack_version}


def evaluate_with_params(params: Params, checkpoint: str | Path, data: str | Path, *,
                         progress: bool = True) -> dict[str, Any]:
    """The evaluate stage: `settings_from_params`, and a checkpoint that must have been made for
    params' model and data set."""
    return evaluate_checkpoint(checkpoint, data, **settings_from_params(params),
                               expect={"model": params.model, "dataset": params.dataset},
                               progress=progress)
