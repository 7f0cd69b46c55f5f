"""The small batch the precision and CUDA tests attack: images in [0, 1], labels, and a PART
budget map (eps on a random half of the pixels, eps_low elsewhere, one plane for 3 channels)."""

from __future__ import annotations

import torch
from torch import Tensor


def budget_batch(n: int, seed: int, eps: float, eps_low: float) -> tuple[Tensor, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=generator).float() / 255
    y = torch.randint(0, 10, (n,), generator=generator)
    important = torch.rand(n, 1, 32, 32, generator=generator) < 0.5
    return x, y, torch.where(important, eps, eps_low).expand(n, 3, 32, 32)
