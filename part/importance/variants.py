"""The training variants: how each turns the current CAM masks into the budget it trains on.

- ``baseline``: the base method, one uniform budget eps; no CAM.
- ``part``: eps where the CAM mask is true, eps_low elsewhere.
- ``uniform_matched``: each epoch, one uniform eps equal to the mean budget PART itself trained
  with in that epoch, read from PART's recorded trace (part/importance/budget_trace.py). It spends
  what
  PART spent, nowhere in particular: a gap between it and PART is the effect of *where* the
  budget is kept.
- ``random_mask``: each epoch, eps on exactly as many elements of each image and mask plane as
  PART's mask of that epoch kept (PART's trace), at uniformly random places, redrawn whenever
  PART's masks were refreshed. It keeps PART's per-image amounts but not its places.

The controls compute no CAM of their own: from the first refresh after the burn-in their own
model differs from PART's, and PART's rule on it would give another budget. All variants of a
seed share the burn-in, batches, augmentations and random starts, so their comparisons are
paired.

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
from part.importance.mask_rules import budget_map
from part.importance.masks import MaskSettings, compute_masks

if TYPE_CHECKING:
    from part.runtime.distributed import World

# What the pipeline trains: the base method, PART, and the two controls that separate *where*
# PART keeps eps from *how much* budget it spends.
VARIANTS = ("baseline", "part", "uniform_matched", "random_mask")
BASELINE = "baseline"
PART = "part"
# The controls follow PART's recorded trace, so they train after it (the `control` stages).
CONTROLS = ("uniform_matched", "random_mask")
INDEPENDENT = tuple(v for v in VARIANTS if v not in CONTROLS)  # the `train` stages
# How a mask meets its image: `sample`, each image its own mask; `paper`, the paper code's
# batch-position alignment (docs/training.md, "Differences from the paper code").
MASK_ALIGNMENTS = ("sample", "paper")

__all__ = ["BASELINE", "CONTROLS", "INDEPENDENT", "MASK_ALIGNMENTS", "PART", "VARIANTS",
           "EpochBudget", "epoch_budget", "follows_part", "mask_pass_order", "matched_eps",
           "paper_pass", "paper_position_masks", "random_masks_with_counts", "refreshed_masks",
           "trace_masks", "uses_cam"]


def uses_cam(variant: str) -> bool:
    """Whether `variant` trains on a reweighted budget (PART or a control of it)."""
    return variant != BASELINE


def follows_part(variant: str) -> bool:
    """Whether `variant` is a control that follows PART's recorded trace."""
    return variant in CONTROLS


def matched_eps(masks: Tensor, eps: float, eps_low: float) -> float:
    """The mean of the budget map (eps where `masks`, else eps_low) over all training elements.

    A mask with one plane stands for every channel, so its mean is the mean over the elements.
    Counted exactly in integers, then one float64 division.
    """
    kept = int(masks.count_nonzero())
    return eps_low + (eps - eps_low) * kept / masks.numel()


def random_masks_with_counts(counts: Tensor, shape: tuple[int, int, int, int],
                             generator: torch.Generator, device: torch.device | None = None,
                             world: World | None = None) -> Tensor:
    """bool masks of `shape` [N, planes, H, W] on `device` (default: the generator's) with
    exactly counts[i, p] true elements in plane p of image i, at uniformly random places: the
    `count` lowest of the plane's scores from `generator`, ties broken by position, so every
    device places them alike. Under several ranks (`world`) each orders the planes of its share
    of the images and the shares are gathered."""
    from part.runtime.distributed import SINGLE, gather_masks

    n, planes, height, width = shape
    if tuple(counts.shape) != (n, planes):
        raise ValueError(f"counts {list(counts.shape)} do not fit masks {list(shape)}")  # a bug
    scores = torch.rand((n, planes, height * width), generator=generator,
                        device=generator.device)
    target = torch.device(device) if device is not None else scores.device
    places = torch.arange(height * width, device=target)

    def place(images: Tensor) -> Tensor:
        order = scores[images].to(target).sort(dim=2, stable=True).indices
        keep = places < counts[images].to(target).unsqueeze(2)
        return torch.zeros_like(keep).scatter_(2, order, keep).reshape(-1, planes, height, width)

    return gather_masks(world or SINGLE, place, torch.arange(n, device=scores.device), 1)


def _random_mask_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + epoch)


def trace_masks(counts: Tensor, shape: tuple[int, int, int, int], seed: int, epoch: int,
                device: torch.device | None = None, world: World | None = None) -> Tensor:
    """random_mask's masks from global `epoch` on: PART's recorded `counts` [N, planes] of that
    epoch at random places, the draw fixed by (seed, epoch)."""
    return random_masks_with_counts(counts, shape, _random_mask_generator(seed, epoch), device,
                                    world)


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
                 alignment: str = "sample", *, matched_mean: float | None = None
                 ) -> EpochBudget:
    """What `variant` trains on, given the masks it holds (None for the baseline and
    uniform_matched); uniform_matched trains at `matched_mean`, PART's recorded mean budget of
    the epoch."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")  # validated in params: a bug if reached
    if variant == "uniform_matched":
        if matched_mean is None:
            raise ValueError("uniform_matched needs PART's mean budget")  # a caller's bug
        return EpochBudget(None, matched_mean, eps_low)
    if variant == BASELINE or masks is None:
        return EpochBudget(None, eps, eps)
    return EpochBudget(masks, eps, eps_low, by_position=alignment == "paper")


def mask_pass_order(count: int, seed: int, epoch: int) -> Tensor:
    """The shuffle of the paper alignment's mask pass before global `epoch`: its own draw,
    independent of the training epoch's shuffle (as the paper code's second loader pass is)."""
    generator = torch.Generator(device="cpu").manual_seed(seed * 1_000_033 + epoch)
    return torch.randperm(count, generator=generator)


def paper_pass(images: Tensor, seed: int, epoch: int, augmentation: dict[str, Any]) -> Tensor:
    """The paper code's mask pass over `images`: shuffled and augmented, in the order of that
    pass. The augmentation of the whole pass is drawn at once, so a rank that computes the CAMs
    of a share of the pass sees the very images one process would."""
    order = mask_pass_order(images.shape[0], seed, epoch).to(images.device)
    generator = torch.Generator(device=images.device).manual_seed(seed * 7_907 + epoch)
    return augment_batch(images[order], generator=generator, **augmentation)[0]


def paper_position_masks(model: nn.Module, images: Tensor, settings: MaskSettings, seed: int,
                         epoch: int, augmentation: dict[str, Any],
                         world: World | None = None) -> Tensor:
    """The paper code's masks: CAM masks of `paper_pass`, in its order (masks[p] belongs to the
    image at position p of the pass); under several ranks each computes its share."""
    from part.runtime.distributed import SINGLE, gather_masks

    return gather_masks(world or SINGLE, lambda share: compute_masks(model, share, settings),
                        paper_pass(images, seed, epoch, augmentation), settings.batch_size)


def refreshed_masks(model: nn.Module, images: Tensor, settings: MaskSettings, seed: int,
                    epoch: int, augmentation: dict[str, Any],
                    world: World | None = None) -> Tensor:
    """PART's masks from global `epoch` on, from `model`'s CAMs; under several ranks (`world`)
    each computes the CAM masks of its share of the images."""
    from part.runtime.distributed import SINGLE, gather_masks

    if settings.alignment == "paper":
        return paper_position_masks(model, images, settings, seed, epoch, augmentation, world)
    return gather_masks(world or SINGLE, lambda share: compute_masks(model, share, settings),
                        images, settings.batch_size)
