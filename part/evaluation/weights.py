"""Evaluating weights this project did not write: a plain `state_dict` (a RobustBench model, a
paper's release), with the architecture given on the command line.

The weights are a .safetensors file or a .pt read with `torch.load(weights_only=True)` only
(tensors and plain containers; nothing else is ever unpickled). A model that expects
normalised inputs is wrapped (`Normalized`) so that the attacks still work in [0, 1] pixel
space, as RobustBench does. The test split comes from a prepared file or straight from a data
set's source. The metrics record the weights' sha256 and that the architecture came from the
command line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from part.errors import PartError
from part.io.hashing import file_sha256
from part.models import build_model

STRIPPED_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP and torch.compile wrappers
SHOWN = 4  # names listed per kind of mismatch


class WeightsError(PartError):
    """Weights that cannot be read or do not fit the architecture given."""


class Normalized(nn.Module):
    """`model((x - mean) / std)` for inputs x in [0, 1]: the normalisation inside the model."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        channels = model.in_channels
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise WeightsError(f"--mean and --std need {channels} values each (one per input "
                               f"channel), std above 0; got mean {list(mean)}, std {list(std)}")
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        for attribute in ("model_name", "num_classes", "in_channels"):
            setattr(self, attribute, getattr(model, attribute))
        self.cam_layer = f"model.{model.cam_layer}"

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x - self.mean) / self.std)


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a .safetensors file or of a .pt state_dict (weights_only)."""
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (any failure to read is the file's problem)
        raise WeightsError(f"{path}: not readable as weights ({type(error).__name__}: "
                           f"{error}); give a .safetensors file or a .pt holding a state_dict "
                           "of tensors") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(
            state["state_dict"], Mapping):
        state = state["state_dict"]  # a common release layout: {"state_dict": ..., "epoch": ...}
    if not isinstance(state, Mapping) or not all(
            isinstance(key, str) and isinstance(value, Tensor) for key, value in state.items()):
        raise WeightsError(f"{path}: holds no state_dict (a mapping of names to tensors); save "
                           "one with torch.save(model.state_dict(), path)")
    for prefix in STRIPPED_PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return dict(state)


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def _check_fit(path: Path, arch: str, state: Mapping[str, Tensor], model: nn.Module) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = sorted(f"{name} {tuple(state[name].shape)} (the model's "
                      f"{tuple(expected[name].shape)})" for name in set(state) & set(expected)
                      if state[name].shape != expected[name].shape)
    problems = [f"{label}: {_listed(names)}" for label, names in (
        ("missing", missing), ("unexpected", unexpected), ("wrong shape", reshaped)) if names]
    if problems:
        raise WeightsError(f"{path} does not fit --arch {arch} with num_classes "
                           f"{model.num_classes}, in_channels {model.in_channels}: "
                           f"{'; '.join(problems)}; check --arch, --num-classes and "
                           "--in-channels")


def load_weights(path: Path, arch: str, num_classes: int, in_channels: int, *,
                 cam_layer: str | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The model `arch` with the weights of `path` loaded strictly, wrapped in `Normalized`
    where mean and std are given; and what the metrics record about it."""
    state = read_state_dict(path)
    with torch.random.fork_rng(devices=[]):  # building must not move the caller's RNG
        model = build_model(arch, num_classes, in_channels, cam_layer=cam_layer)
    _check_fit(path, arch, state, model)
    expected = model.state_dict()
    model.load_state_dict({name: tensor.to(expected[name].dtype)
                           for name, tensor in state.items()}, strict=True)
    if (mean is None) != (std is None):
        raise WeightsError("give --mean and --std together (or neither)")
    if mean is not None:
        model = Normalized(model, mean, std)
    info = {"model": arch, "architecture_from": "command line", "num_classes": num_classes,
            "in_channels": in_channels, "weights": str(path), "weights_sha256": file_sha256(path),
            "normalization": None if mean is None else {"mean": list(mean), "std": list(std)}}
    return model.eval(), info


def read_test_split(data: Path | None, dataset: str | None, root: str | None = None,
               download: bool = True) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """uint8 images, labels and where they came from: a prepared file (`data`) or the test split
    of a data set read from its source (`dataset`), with the whole split's size."""
    if dataset is not None:
        from part.data.sources import load_source

        raw = load_source(dataset, "test", root=root, download=download)
        return raw.images, raw.labels, {"dataset": dataset, "data": f"{dataset} test split",
                                        "n_test_set": int(raw.labels.numel()),
                                        "num_classes": len(raw.class_names)}
    from part.data.prepared import full_split_size, load_prepared

    split = load_prepared(data)
    return split.images, split.labels, {"dataset": split.meta.get("dataset"), "data": str(data),
                                        "n_test_set": full_split_size(split.meta),
                                        "num_classes": int(split.meta["num_classes"])}


def evaluate_weights(weights: Path, arch: str, images: Tensor, labels: Tensor,
                     source: Mapping[str, Any], *, num_classes: int | None = None,
                     in_channels: int | None = None, cam_layer: str | None = None,
                     mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                     **settings: Any) -> Any:
    """evaluate_model on plain weights: the architecture, classes and channels as given (the
    latter two default to the data's), and the metrics' record of what was measured."""
    from part.evaluation.evaluate import evaluate_model

    num_classes = num_classes or source["num_classes"]
    in_channels = in_channels or int(images.shape[1])
    if in_channels != images.shape[1]:
        raise WeightsError(f"--in-channels {in_channels}, but {source['data']} has "
                           f"{images.shape[1]}-channel images")
    if int(labels.max()) >= num_classes:
        raise WeightsError(f"{source['data']} has labels up to {int(labels.max())}, more than "
                           f"--num-classes {num_classes} allows")
    if settings.get("eps") is None:
        raise WeightsError("plain weights record no training eps: give the budget with --eps "
                           "(e.g. --eps 8/255)")
    if settings.get("step_size") is None:
        settings["step_size"] = settings["eps"] / 4
    model, info = load_weights(weights, arch, num_classes, in_channels, cam_layer=cam_layer,
                               mean=mean, std=std)
    metrics = evaluate_model(model, images, labels, **settings)
    return metrics.carried_by({**metrics, **info, "dataset": source["dataset"],
                               "data": source["data"], "n_test_set": source["n_test_set"],
                               "method": None, "epoch": None, "train_eps": None})
