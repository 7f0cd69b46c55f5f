"""Choosing the torch device from the `device` param."""

from __future__ import annotations

import torch

from part.errors import PartError

DEVICES = ("auto", "cpu", "cuda")  # the values of the `device` param


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PartError(
            f"device {name!r} was asked for but no CUDA GPU is visible; set device: auto or cpu"
        )
    try:
        return torch.device(name)
    except RuntimeError:
        raise PartError(f"device {name!r} is not a torch device; use auto, cpu or cuda") from None
