"""What a training run trains: its data (`TrainData`: the training images and the monitor's, on
the device) and its spec (`RunSpec`: its name, epochs, variant, starting checkpoint, masks and
the trace a control follows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from part.importance.masks import MaskSettings
from part.importance.variants import BASELINE, follows_part, uses_cam


@dataclass
class TrainData:
    images: Tensor  # uint8 [N, C, H, W] on the training device
    labels: Tensor  # int64 [N]
    monitor_images: Tensor  # uint8, a fixed subset for the per-epoch clean and PGD accuracy
    monitor_labels: Tensor
    dataset: str
    num_classes: int
    monitor_split: str = "validation"  # one of MONITOR_SPLITS: where monitor_images come from

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]



@dataclass
class RunSpec:
    name: str  # burnin-<seed> | <variant>-<seed>: names the resume state too
    first_epoch: int  # global epoch numbers, 1-based, inclusive
    last_epoch: int
    variant: str = BASELINE  # the burn-in trains the base method, as the baseline does
    init_checkpoint: Path | None = None  # None builds a fresh model (the burn-in)
    mask_settings: MaskSettings | None = None  # how CAM masks are made, for the CAM variants
    refresh_every: int = 0  # 0: the masks of the starting model throughout
    follows: Path | None = None  # a control: PART's budget trace, which it follows
    extra_meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if uses_cam(self.variant) and (self.mask_settings is None
                                       or self.init_checkpoint is None):
            raise ValueError(f"variant {self.variant} needs mask settings and a starting "
                             "checkpoint")  # a caller's bug, never a user's input
        if follows_part(self.variant) != (self.follows is not None):
            raise ValueError(f"variant {self.variant}: a control, and only a control, follows "
                             "PART's trace")  # a caller's bug
