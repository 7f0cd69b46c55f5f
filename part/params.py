"""`params.yaml` -> a typed, validated, frozen config.

Every problem is reported as one `ParamsError` naming the key, what was found and what is allowed,
so that `dvc repro` stops at the first stage with a message a person can act on.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from part.errors import PartError

_FRACTION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*/\s*([0-9]*\.?[0-9]+)\s*$")


class ParamsError(PartError):
    """params.yaml holds a key or value this project cannot use."""


def parse_budget(value: Any, key: str) -> float:
    """A perturbation budget given as a float, an int or a fraction string such as "8/255"."""
    if isinstance(value, bool):
        raise ParamsError(f"{key}: expected a budget such as 8/255 or 0.0314, got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        match = _FRACTION.match(value)
        try:
            number = (
                float(match.group(1)) / float(match.group(2)) if match else float(value.strip())
            )
        except (ValueError, ZeroDivisionError):
            raise ParamsError(
                f"{key}: cannot read {value!r} as a budget; write a number (0.0314) "
                "or a fraction of two numbers (8/255)"
            ) from None
    else:
        raise ParamsError(f"{key}: expected a budget such as 8/255 or 0.0314, got {value!r}")
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise ParamsError(f"{key}: a budget is a fraction of the [0,1] pixel range; got {value!r}")
    return number


@dataclass(frozen=True)
class DataParams:
    root: str | None = None  # a local copy of the source data set; None searches the defaults
    train_subset: int | None = None  # seeded, class-balanced subset of the training split
    # Held out of the training split first (class-balanced, seeded by `seed`), never trained on:
    # the per-epoch monitor and the best epoch use it. 0: none, the monitor uses the test set.
    val_subset: int = 1000
    test_subset: int | None = None
    seed: int = 0  # picks the subsets (and the monitor examples): the same for every training seed
    download: bool = True  # try a download where the data set is missing and a network exists
    image_size: int | None = None  # imagefolder: resize every image to this square size


@dataclass(frozen=True)
class MaskParams:
    quantile: float = 0.5  # rule `quantile`: the fraction of pixels kept at eps
    refresh_every: int = 1  # masks from the current model every N epochs; 0 keeps burn-in masks
    batch_size: int = 256
    alignment: str = "sample"  # sample: a mask follows its image; paper: its batch position


@dataclass(frozen=True)
class TrainParams:
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 2e-4
    lr_schedule: str = "official"
    lr_milestones: tuple[int, ...] = (60, 90)
    lr_gamma: float = 0.1
    step_size: float = 2 / 255
    steps: int = 10
    beta: float = 6.0  # TRADES / MART regulariser weight
    augment: str = "auto"
    monitor_subset: int = 500  # fixed validation examples for the per-epoch clean / PGD accuracy
    monitor_steps: int = 10
    random_start: str = "budget"  # budget: draws within each pixel's budget; paper: U(-eps, eps)
    precision: str = "tf32"  # fp32 | tf32 | bf16 on CUDA; the CPU always runs fp32
    deterministic: bool = True  # CUDA: same bytes on a rerun (part/runtime/device.py); the CPU
    # always is
    compile: bool = False  # the training loss and its attack through torch.compile


@dataclass(frozen=True)
class EvalParams:
    attacks: tuple[str, ...] = ()  # empty: every attack of part.attacks.suite.ATTACKS
    n: int | None = None  # test examples per attack; None is the whole test set
    n_autoattack: int | None = 1000  # None: the whole (prepared) test set, as the paper does
    eps: float | None = None  # None evaluates at the training eps
    step_size: float | None = None  # None uses the training step, as the paper does
    steps: int = 20
    batch_size: int = 256
    seed: int = 0
    checkpoint: str = "last"  # last | best (the epoch with the best monitor PGD accuracy)
    autoattack_version: str = "standard"  # standard | plus | rand


@dataclass(frozen=True)
class DistributedParams:
    # Processes per machine for the training and mask stages, started by torchrun: one per GPU
    # (or gloo processes on a CPU). It changes the result (batch norm per rank on a CPU, the order
    # of float sums), so a change reruns those stages.
    nproc_per_node: int = 1


@dataclass(frozen=True)
class Params:
    dataset: str = "fashion-mnist"
    model: str = "cnn_small"  # a registered model, or an import path module:factory
    cam_layer: str | None = None  # the submodule CAM reads; None: the model's own cam_layer
    method: str = "at"
    cam: str = "gradcam"
    mask_rule: str = "official"
    eps: float = 0.1
    eps_low: float = 0.0875
    epochs: int = 10
    burn_in_epochs: int = 3
    seeds: tuple[int, ...] = (0,)  # one burn-in, masks and set of variants per seed
    variants: tuple[str, ...] = ("baseline", "part")  # trained on their own (`train` stages)
    controls: tuple[str, ...] = ()  # follow part's recorded trace (`control` stages)
    seed: int = 0  # the seed of the run at hand: one of `seeds`, set by the stage (for_seed)
    device: str = "auto"
    data: DataParams = field(default_factory=DataParams)
    mask: MaskParams = field(default_factory=MaskParams)
    train: TrainParams = field(default_factory=TrainParams)
    eval: EvalParams = field(default_factory=EvalParams)
    distributed: DistributedParams = field(default_factory=DistributedParams)

    @property
    def runs(self) -> tuple[str, ...]:
        """Every variant trained for each seed: `variants`, then `controls`."""
        return self.variants + self.controls

    @property
    def eval_eps(self) -> float:
        return self.eps if self.eval.eps is None else self.eval.eps

    @property
    def eval_step_size(self) -> float:
        return self.train.step_size if self.eval.step_size is None else self.eval.step_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def for_seed(self, seed: int) -> Params:
        """These params for one of `seeds` (the stages take the seed from their command line)."""
        if isinstance(seed, bool) or not isinstance(seed, int) or seed not in self.seeds:
            raise ParamsError(f"seed {seed!r} is not in seeds ({list(self.seeds)}); add it to "
                              "`seeds` in params.yaml")
        return dataclasses.replace(self, seed=seed)

    def run_dict(self) -> dict[str, Any]:
        """The params that decide one run's result: the lists of seeds and variants only say
        which runs exist, so adding a seed or a variant changes no other run."""
        tree = self.to_dict()
        del tree["seeds"], tree["variants"], tree["controls"]
        return tree

    def section_hash(self, *keys: str) -> str:
        """A short hash of the named params, for checkpoint provenance."""
        from part.models.checkpoint import params_hash

        return params_hash({key: _lookup(self.to_dict(), key) for key in keys})


def _lookup(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node[part]
    return node


_BUDGET_KEYS = {"eps", "eps_low", "train.step_size", "eval.eps", "eval.step_size"}
# Each choice's allowed values live in the module that implements them: (module, registry).
# A module is imported only when a key it owns is checked, so that a stage that checks only its
# own params (prepare) executes, and depends on, only their owners.
_CHOICES: dict[str, tuple[str, str]] = {
    "dataset": ("part.data.sources", "SOURCES"),
    "model": ("part.models", "MODELS"),
    "method": ("part.training.methods", "METHODS"),
    "cam": ("part.importance.activation_maps", "CAM_METHODS"),
    "mask_rule": ("part.importance.mask_rules", "MASK_RULES"),
    "device": ("part.runtime.device", "DEVICES"),
    "train.lr_schedule": ("part.training.schedule", "LR_SCHEDULES"),
    "train.augment": ("part.data.augment", "AUGMENTATIONS"),
    "train.random_start": ("part.attacks.linf", "START_RULES"),
    "train.precision": ("part.runtime.precision", "PRECISIONS"),
    "mask.alignment": ("part.importance.variants", "MASK_ALIGNMENTS"),
    "eval.checkpoint": ("part.io.paths", "CHECKPOINTS"),
    "eval.autoattack_version": ("part.attacks.suite", "AUTOATTACK_VERSIONS"),
}
_LISTS_OF_CHOICES: dict[str, tuple[str, str]] = {
    "eval.attacks": ("part.attacks.suite", "ATTACKS"),
    "variants": ("part.importance.variants", "INDEPENDENT"),
    "controls": ("part.importance.variants", "CONTROLS"),
}
_MAY_BE_EMPTY = {"controls"}


def allowed_values(key: str) -> tuple[str, ...]:
    """The values a choice key (e.g. `model`, `eval.attacks`) accepts, from the module that owns
    them."""
    owner, registry = {**_CHOICES, **_LISTS_OF_CHOICES}[key]
    return tuple(getattr(importlib.import_module(owner), registry))


_POSITIVE_INTS = {
    "epochs",
    "burn_in_epochs",
    "mask.batch_size",
    "train.batch_size",
    "train.monitor_subset",
    "eval.batch_size",
    "eval.n_autoattack",
    "data.train_subset",
    "data.test_subset",
    "data.image_size",
    "eval.n",
    "distributed.nproc_per_node",
    "train.steps",  # adversarial training needs at least one PGD step
}
_NON_NEGATIVE_INTS = {"seed", "data.seed", "data.val_subset", "mask.refresh_every",
                      "train.monitor_steps", "eval.steps", "eval.seed"}
_NON_NEGATIVE_FLOATS = {"train.lr", "train.momentum", "train.weight_decay", "train.beta",
                        "train.lr_gamma"}


def _list_of_choices(key: str, value: Any, allowed: tuple[str, ...] | None) -> tuple[str, ...]:
    """The list `value` of key; with `allowed`, every item must be one of them."""
    items = value.split(",") if isinstance(value, str) and value.strip() else value
    if isinstance(value, str) and not value.strip():
        items = []
    if not isinstance(items, (list, tuple)) or (not items and key not in _MAY_BE_EMPTY):
        raise ParamsError(f"{key}: give a list"
                          + (f" drawn from {', '.join(allowed)}" if allowed else " of names"))
    items = tuple(str(item).strip() for item in items)
    unknown = [item for item in items if allowed is not None and item not in allowed]
    if key == "variants" and allowed is not None:
        from part.importance.variants import CONTROLS

        controls = [item for item in unknown if item in CONTROLS]
        if controls:
            raise ParamsError(f"variants: {', '.join(controls)} follow part's recorded budget "
                              "trace, so they train after it: list them under `controls` "
                              f"(controls: [{', '.join(controls)}]) instead")
    if unknown:
        raise ParamsError(f"{key}: unknown {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    return items


def _convert(key: str, value: Any, annotation: str, checked: Callable[[str], bool]) -> Any:
    optional = "None" in annotation
    if value is None:
        if optional:
            return None
        raise ParamsError(f"{key}: a value is required here, got null")
    if key in _BUDGET_KEYS:
        return parse_budget(value, key)
    if key == "model" and isinstance(value, str) and ":" in value:
        from part.models.registry import is_import_path

        if not is_import_path(value):
            raise ParamsError(f"model: {value!r} is not an import path module:factory such as "
                              "user_models.nets:small_net")
        return value
    if key in _CHOICES:
        if not isinstance(value, str):
            raise ParamsError(f"{key}: expected text, got {value!r}")
        if not checked(key):
            return value
        allowed = allowed_values(key)
        if value not in allowed:
            raise ParamsError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
        return value
    if key in _LISTS_OF_CHOICES:
        items = _list_of_choices(key, value, allowed_values(key) if checked(key) else None)
        if key == "variants" and checked(key):
            from part.importance.variants import BASELINE

            if BASELINE not in items or len(set(items)) != len(items):
                raise ParamsError(f"variants: list each variant once and include {BASELINE} "
                                  f"(every comparison is paired with it), got {list(items)}")
        if key == "controls" and len(set(items)) != len(items):
            raise ParamsError(f"controls: list each control once, got {list(items)}")
        return items
    if key == "seeds":
        if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value
        ) or len(set(value)) != len(value):
            raise ParamsError(f"seeds: give a list of distinct whole numbers >= 0 such as "
                              f"[0, 1, 2], got {value!r}")
        return tuple(value)
    if key == "train.lr_milestones":
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in value
        ):
            raise ParamsError(f"{key}: give a list of positive epoch numbers, got {value!r}")
        return tuple(value)
    if annotation.startswith("bool"):
        if not isinstance(value, bool):
            raise ParamsError(f"{key}: expected true or false, got {value!r}")
        return value
    if annotation.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key}: expected a whole number, got {value!r}")
        if key in _POSITIVE_INTS and value <= 0:
            raise ParamsError(f"{key}: must be a positive whole number, got {value}")
        if key in _NON_NEGATIVE_INTS and value < 0:
            raise ParamsError(f"{key}: must be 0 or more, got {value}")
        return value
    if annotation.startswith("float"):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ParamsError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{key}: expected a number, got {value!r}")
        value = float(value)
        if key in _NON_NEGATIVE_FLOATS and value < 0:
            raise ParamsError(f"{key}: must be 0 or more, got {value}")
        return value
    if annotation.startswith("str"):
        if not isinstance(value, str):
            raise ParamsError(f"{key}: expected text, got {value!r}")
        return value
    raise AssertionError(f"no converter for {key} ({annotation})")  # a bug, not a user error


def _build(cls: type, raw: Mapping[str, Any], prefix: str, checked: Callable[[str], bool]) -> Any:
    if not isinstance(raw, Mapping):
        where = prefix.rstrip(".") or "params"
        raise ParamsError(f"{where}: expected a mapping of keys, got {raw!r}")
    known = {f.name: f for f in fields(cls) if (cls, f.name) not in _INTERNAL}
    if cls is Params and "seed" in raw:
        raise ParamsError("seed: replaced by `seeds`, a list (one run per seed); write "
                          f"seeds: [{raw['seed']}] instead")
    unknown = sorted(set(raw) - set(known))
    if unknown:
        where = prefix.rstrip(".") or "the top level"
        raise ParamsError(
            f"unknown key {prefix}{unknown[0]!s} in params; allowed at {where}: "
            f"{', '.join(known)}"
        )
    values = {}
    for name, value in raw.items():
        annotation = str(known[name].type)
        nested = _SECTIONS.get(name) if not prefix else None
        if nested is not None:
            values[name] = _build(nested, value or {}, f"{name}.", checked)
        else:
            values[name] = _convert(prefix + name, value, annotation, checked)
    return cls(**values)


# Set by the code, not read from params.yaml.
_INTERNAL = {(Params, "seed")}
_SECTIONS = {"data": DataParams, "mask": MaskParams, "train": TrainParams, "eval": EvalParams,
             "distributed": DistributedParams}


def _check_relations(p: Params) -> None:
    if p.eps_low > p.eps:
        raise ParamsError(
            f"eps_low ({p.eps_low:.6g}) must not exceed eps ({p.eps:.6g}): PART lowers the budget "
            "of unimportant pixels; set eps_low <= eps"
        )
    if p.burn_in_epochs >= p.epochs:
        raise ParamsError(
            f"burn_in_epochs ({p.burn_in_epochs}) must be smaller than epochs ({p.epochs}), "
            "the total that includes the burn-in"
        )
    if not 0.0 < p.mask.quantile <= 1.0:
        raise ParamsError(f"mask.quantile must be in (0, 1], got {p.mask.quantile}")
    if p.train.momentum >= 1.0:
        raise ParamsError(f"train.momentum must be below 1, got {p.train.momentum}")
    if p.train.batch_size < p.distributed.nproc_per_node:
        raise ParamsError(
            f"train.batch_size ({p.train.batch_size}) must be at least distributed."
            f"nproc_per_node ({p.distributed.nproc_per_node}): each process trains on a share "
            "of every batch")
    if p.controls and "part" not in p.variants:
        raise ParamsError(f"controls ({', '.join(p.controls)}) follow part's recorded budget "
                          "trace: add part to `variants`, or set controls: []")


def _checks(only: Collection[str] | None) -> Callable[[str], bool]:
    if only is None:
        return lambda key: True
    return lambda key: any(key == top or key.startswith(f"{top}.") for top in only)


def params_from_dict(raw: Mapping[str, Any] | None,
                     only: Collection[str] | None = None) -> Params:
    """Typed, validated params. `only` (keys or sections, e.g. ("dataset", "data")) limits the
    check of choice keys against their owners' registries to those keys; every other check
    (types, ranges, unknown keys) covers the whole file."""
    params = _build(Params, raw or {}, "", _checks(only))
    params = dataclasses.replace(params, seed=params.seeds[0])
    _check_relations(params)
    return params


def load_params(path: str | Path = "params.yaml", only: Collection[str] | None = None) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(
            f"{path}: no such params file; copy one from configs/ "
            "(cp configs/cifar10-resnet18.yaml params.yaml) or run from the project root"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ParamsError(f"{path}: not UTF-8 text ({error}); save it as UTF-8") from None
    except OSError as error:
        raise ParamsError(f"{path}: cannot be read ({error.strerror}); check its permissions"
                          ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML ({error}); fix the line it names") from None
    try:
        return params_from_dict(raw, only)
    except ParamsError as error:
        raise ParamsError(f"{path}: {error}") from None
