"""Numerical precision of training, as the params choose it: fp32, tf32 or bf16.

- ``fp32``: full float32 everywhere (TF32 tensor cores off).
- ``tf32``: float32 tensors, matmuls and convolutions on TF32 tensor cores: what the paper code
  got by default on Ampere and newer GPUs (PyTorch < 1.12 enabled it), so the paper presets use it.
- ``bf16``: autocast to bfloat16 for the forward passes, opt-in for speed.

The CPU has neither TF32 nor a bf16 speed-up worth its rounding, so it always runs fp32 and says
so (`effective_precision`). Attacks compute their losses and projections in float32 whatever
the precision (see part/attacks/linf.py), so budgets hold exactly under each.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch

PRECISIONS = ("fp32", "tf32", "bf16")  # the values of train.precision

__all__ = ["PRECISIONS", "autocast", "effective_precision", "numerics", "precision_context"]


def effective_precision(precision: str, device: torch.device) -> str:
    """What `precision` runs as on `device`: the CPU always runs fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}")  # validated in params: a bug here
    return precision if device.type == "cuda" else "fp32"


@contextmanager
def numerics(precision: str) -> Iterator[None]:
    """TF32 tensor cores on for `tf32`, off (strict IEEE float32) otherwise, for CUDA matmuls
    and cuDNN convolutions; the settings are restored after. Plain fp32 must switch them off
    because PyTorch's default leaves TF32 on for cuDNN convolutions. Set through torch's
    per-backend `fp32_precision` (every torch this package supports has it): torch refuses to
    read the legacy `allow_tf32` flags once that API has set them, as torch.compile does."""
    tf32 = precision == "tf32"
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    saved = matmul.fp32_precision, conv.fp32_precision
    matmul.fp32_precision = conv.fp32_precision = "tf32" if tf32 else "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved


def autocast(precision: str, device: torch.device):
    """bf16 autocast for the forward passes under `bf16`, else nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


@contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """Forward and backward passes at `precision` (numerics and autocast together).

    On the CPU `bf16` still autocasts when asked for here (the tests use it to check that the
    budgets hold under bf16 logits); training asks for `effective_precision`, fp32 there.
    """
    with numerics(precision), autocast(precision, device):
        yield
