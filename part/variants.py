"""The training variants: how each turns the current CAM masks into the budget it trains on.

- ``baseline``: the base method, one uniform budget eps; no CAM.
- ``part``: eps where the CAM mask is true, eps_low elsewhere.
- ``uniform_matched``: one uniform eps equal to the mean of PART's budget map over every training
  element, recomputed from the CAM masks at each refresh. It spends what PART spends, nowhere
  in particular: a gap between it and PART is the effect of *where* the budget is kept.
- ``random_mask``: eps on a random set of elements with the same count per image and channel as
  its CAM mask, redrawn at each refresh. It keeps PART's per-image amounts but not its places.

All variants of a seed share the burn-in, batches, augmentations and random starts, so their
comparisons are paired.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from part.cam import budget_map
from part.params import BASELINE, VARIANTS

__all__ = ["BASELINE", "VARIANTS", "EpochBudget", "epoch_budget", "matched_eps",
           "random_masks_like", "training_masks", "uses_cam"]


def uses_cam(variant: str) -> bool:
    return variant != BASELINE


def matched_eps(masks: Tensor, eps: float, eps_low: float) -> float:
    """The mean of the budget map (eps where `masks`, else eps_low) over all training elements.

    A mask with one plane stands for every channel, so its mean is the mean over the elements.
    Counted exactly in integers, then one float64 division.
    """
    kept = int(masks.count_nonzero())
    return eps_low + (eps - eps_low) * kept / masks.numel()


def random_masks_like(masks: Tensor, generator: torch.Generator) -> Tensor:
    """bool masks of `masks`' shape with the same count of true elements in each [image, channel]
    plane, at uniformly random places (a random permutation per plane, from `generator`)."""
    n, planes, height, width = masks.shape
    counts = masks.reshape(n, planes, -1).sum(dim=2, keepdim=True)
    scores = torch.rand((n, planes, height * width), generator=generator,
                        device=generator.device).to(masks.device)
    # The rank of each element's score within its plane: the `count` lowest ranks keep eps.
    ranks = scores.argsort(dim=2).argsort(dim=2)
    return (ranks < counts).reshape(masks.shape)


def training_masks(variant: str, cam_masks: Tensor, seed: int, epoch: int) -> Tensor:
    """The masks `variant` trains with after a refresh at global `epoch` (CAM masks in)."""
    if variant == "random_mask":
        generator = torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + epoch)
        return random_masks_like(cam_masks, generator)
    return cam_masks


@dataclass(frozen=True)
class EpochBudget:
    """The budget of one epoch: a per-sample mask (eps / eps_low) or one uniform eps."""

    masks: Tensor | None  # bool [N, c, H, W] in sample order, or None for a uniform budget
    eps: float
    eps_low: float

    def for_batch(self, batch_masks: Tensor | None) -> float | Tensor:
        if batch_masks is None:
            return self.eps
        return budget_map(batch_masks, self.eps, self.eps_low)

    @property
    def mean(self) -> float:
        return self.eps if self.masks is None else matched_eps(self.masks, self.eps, self.eps_low)


def epoch_budget(variant: str, masks: Tensor | None, eps: float, eps_low: float) -> EpochBudget:
    """What `variant` trains on, given the masks it holds (None for the baseline)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")  # validated in params: a bug if reached
    if variant == BASELINE or masks is None:
        return EpochBudget(None, eps, eps)
    if variant == "uniform_matched":
        return EpochBudget(None, matched_eps(masks, eps, eps_low), eps_low)
    return EpochBudget(masks, eps, eps_low)
