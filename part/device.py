"""Choosing the torch device from the `device` param."""

from __future__ import annotations

import torch

from part.errors import PartError
from part.gpu_claim import auto_gpu_index

DEVICES = ("auto", "cpu", "cuda")  # the values of the `device` param


def resolve_device(name: str = "auto") -> torch.device:
    """`auto`: the CPU without a GPU, the GPU where there is one, and where there are several a
    free one that this process claims until it ends, or cuda:LOCAL_RANK under a torchrun of
    several processes per machine (part/gpu_claim.py), so that parallel jobs (dvc queue start
    --jobs N) each get their own. A named device (cuda:N too) is taken as it is."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        index = auto_gpu_index(torch.cuda.device_count())
        if index is None:
            return torch.device("cuda")
        torch.cuda.set_device(index)
        return torch.device(f"cuda:{index}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PartError(
            f"device {name!r} was asked for but no CUDA GPU is visible; set device: auto or cpu"
        )
    try:
        return torch.device(name)
    except RuntimeError:
        raise PartError(f"device {name!r} is not a torch device; use auto, cpu or cuda") from None
