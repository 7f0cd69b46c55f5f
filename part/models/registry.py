"""Name -> model factory registry, so configs and checkpoints can name an architecture by string."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from torch import nn

from part.errors import PartError

ModelFactory = Callable[[int, int], nn.Module]


class ModelError(PartError):
    """An unknown model name or invalid model arguments."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    factory: ModelFactory
    description: str


_REGISTRY: dict[str, ModelSpec] = {}
MODELS: Mapping[str, ModelSpec] = MappingProxyType(_REGISTRY)


def register_model(name: str, description: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register `factory(num_classes, in_channels)` under `name`."""

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ModelError(f"model name {name!r} is registered twice; pick a unique name")
        _REGISTRY[name] = ModelSpec(name=name, factory=factory, description=description)
        return factory

    return decorator


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def _check_positive_int(value: object, what: str) -> int:
    # bool is an int subclass, but `in_channels=True` is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"{what} must be a positive integer, got {value!r}")
    return value


_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_import_path(name: str) -> bool:
    """`module:factory`, the convention of uvicorn and setuptools' entry points."""
    return isinstance(name, str) and bool(_IMPORT_PATH.match(name))


def _imported_factory(name: str) -> ModelFactory:
    """The factory an import path names; the module is imported (its code runs, as any
    imported code does), nothing is unpickled."""
    module_name, attribute = name.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ModelError(f"model {name!r}: cannot import {module_name} ({err}); run from the "
                         "folder that holds it, or install it") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ModelError(f"model {name!r}: {module_name} has no callable {attribute}")

    def build(num_classes: int, in_channels: int) -> nn.Module:
        try:
            model = factory(num_classes=num_classes, in_channels=in_channels)
        except TypeError as err:  # a factory that takes other arguments
            raise ModelError(f"model {name!r}: {attribute}(num_classes={num_classes}, "
                             f"in_channels={in_channels}) failed ({err}); give the factory "
                             "these two keyword arguments") from None
        if not isinstance(model, nn.Module):
            raise ModelError(f"model {name!r}: {attribute}(num_classes=..., in_channels=...) "
                             f"returned a {type(model).__name__}, not a torch.nn.Module")
        return model

    return build


def build_model(name: str, num_classes: int = 10, in_channels: int = 3,
                cam_layer: str | None = None) -> nn.Module:
    """Build a freshly initialised model; inputs are [B, in_channels, H, W] floats in [0, 1].

    `name` is a registered model or an import path `module:factory`, called as
    `factory(num_classes=..., in_channels=...)`. `cam_layer` (the dotted name of the submodule
    whose output is the feature map CAMs are computed on) defaults to the model's own
    `cam_layer` attribute. The result carries `model_name`, `num_classes`, `in_channels` and
    `cam_layer`.
    """
    spec = _REGISTRY.get(name) if isinstance(name, str) else None
    if spec is None and not is_import_path(name):
        raise ModelError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}, "
                         "or give an import path module:factory")
    num_classes = _check_positive_int(num_classes, "num_classes")
    in_channels = _check_positive_int(in_channels, "in_channels")
    factory = spec.factory if spec is not None else _imported_factory(name)
    model = factory(num_classes, in_channels)
    model.model_name = name
    model.num_classes = num_classes
    model.in_channels = in_channels
    if cam_layer is not None:
        model.cam_layer = cam_layer
    cam_layer = getattr(model, "cam_layer", None)
    if cam_layer is None:
        raise ModelError(f"model {name!r} names no CAM layer: give it a cam_layer attribute "
                         "(the dotted name of the submodule CAM reads) or set cam_layer in "
                         "params.yaml (--cam-layer)")
    try:
        model.get_submodule(cam_layer)
    except (AttributeError, TypeError) as err:
        raise ModelError(f"model {name!r} names CAM layer {cam_layer!r}, which it lacks") from err
    return model
