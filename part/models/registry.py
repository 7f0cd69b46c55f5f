"""Name -> model factory registry, so configs and checkpoints can name an architecture by string."""

from __future__ import annotations

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


def build_model(name: str, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Build a freshly initialised model; inputs are [B, in_channels, H, W] floats in [0, 1].

    The result carries `model_name`, `num_classes`, `in_channels` and `cam_layer` (the dotted name
    of the submodule whose output is the feature map CAMs are computed on).
    """
    spec = _REGISTRY.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ModelError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    num_classes = _check_positive_int(num_classes, "num_classes")
    in_channels = _check_positive_int(in_channels, "in_channels")
    model = spec.factory(num_classes, in_channels)
    model.model_name = name
    model.num_classes = num_classes
    model.in_channels = in_channels
    cam_layer = getattr(model, "cam_layer", None)
    try:
        model.get_submodule(cam_layer)
    except (AttributeError, TypeError) as err:
        raise ModelError(f"model {name!r} names CAM layer {cam_layer!r}, which it lacks") from err
    return model
