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

Mask alignment (`mask.alignment`): under ``sample`` (ours) masks are keyed by sample index and
cropped and flipped with their images, so every image trains with its own mask. Under ``paper``
(the paper code) masks come from a separate pass over a shuffled, augmented copy of the training
set and are stored by position in that pass; training then gives the image at position p of its
own (differently shuffled) epoch the mask made at position p of the mask pass: another image's
mask, almost always.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from part.data.augment import augment_batch
from part.mask_rules import budget_map
from part.masking import MaskSettings, compute_masks

if TYPE_CHECKING:
    from part.distributed import World

# What the pipeline trains: the base method, PART, and the two controls that separate *where*
# PART keeps eps from *how much* budget it spends.
VARIANTS = ("baseline", "part", "uniform_matched", "random_mask")
BASELINE = "baseline"
# How a mask meets its image: `sample`, each image its own mask; `paper`, the paper code's
# batch-position alignment (README, "Differences from the paper code").
MASK_ALIGNMENTS = ("sample", "paper")

__all__ = ["BASELINE", "MASK_ALIGNMENTS", "VARIANTS", "EpochBudget", "epoch_budget",
           "mask_pass_order", "matched_eps", "paper_position_masks", "random_masks_like",
           "refreshed_masks", "training_masks", "uses_cam"]


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

    masks: Tensor | None  # bool [N, c, H, W], or None for a uniform budget
    eps: float
    eps_low: float
    by_position: bool = False  # masks[p] is for batch position p (paper), not sample p (ours)

    def for_batch(self, batch_masks: Tensor | None) -> float | Tensor:
        if batch_masks is None:
            return self.eps
        return budget_map(batch_masks, self.eps, self.eps_low)

    @property
    def mean(self) -> float:
        return self.eps if self.masks is None else matched_eps(self.masks, self.eps, self.eps_low)


def epoch_budget(variant: str, masks: Tensor | None, eps: float, eps_low: float,
                 alignment: str = "sample") -> EpochBudget:
    """What `variant` trains on, given the masks it holds (None for the baseline)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")  # validated in params: a bug if reached
    if variant == BASELINE or masks is None:
        return EpochBudget(None, eps, eps)
    if variant == "uniform_matched":
        return EpochBudget(None, matched_eps(masks, eps, eps_low), eps_low)
    return EpochBudget(masks, eps, eps_low, by_position=alignment == "paper")


def mask_pass_order(count: int, seed: int, epoch: int) -> Tensor:
    """The shuffle of the paper alignment's mask pass before global `epoch`: its own draw,
    independent of the training epoch's shuffle (as the paper code's second loader pass is)."""
    generator = torch.Generator(device="cpu").manual_seed(seed * 1_000_033 + epoch)
    return torch.randperm(count, generator=generator)


def paper_position_masks(model: nn.Module, images: Tensor, settings: MaskSettings, seed: int,
                         epoch: int, augmentation: dict[str, Any]) -> Tensor:
    """The paper code's masks: CAM masks of a shuffled, augmented pass over `images`, in the
    order of that pass (masks[p] belongs to the image at position p of the pass)."""
    order = mask_pass_order(images.shape[0], seed, epoch).to(images.device)
    generator = torch.Generator(device=images.device).manual_seed(seed * 7_907 + epoch)

    def augment(x: Tensor) -> Tensor:
        return augment_batch(x, generator=generator, **augmentation)[0]

    return compute_masks(model, images[order], settings, transform=augment)


def refreshed_masks(variant: str, model: nn.Module, images: Tensor, settings: MaskSettings,
                    seed: int, epoch: int, augmentation: dict[str, Any],
                    world: World | None = None) -> Tensor:
    """The masks `variant` trains with from global `epoch` on, from `model`'s CAMs; under several
    ranks (`world`) each computes the CAM masks of its share of the images."""
    from part.distributed import SINGLE, gather_masks

    world = world or SINGLE
    if settings.alignment == "paper":
        cam_masks = paper_position_masks(model, images, settings, seed, epoch, augmentation)
    else:
        cam_masks = gather_masks(world, lambda share: compute_masks(model, share, settings),
                                 images, settings.batch_size)
    return training_masks(variant, cam_masks, seed, epoch)
