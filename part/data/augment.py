"""Training-time augmentation on the device: one random crop and flip per sample, applied alike
to an image batch and every tensor aligned with it (masks), with no per-image Python loop."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from part.data import DataError
from part.runtime.random_draws import BatchDraws

DEFAULT_AUGMENTATION: dict[str, dict[str, Any]] = {
    # The paper: random crop with 4-pixel zero padding and horizontal flip on CIFAR-10.
    "cifar10": {"crop_padding": 4, "flip": True},
    # The paper's code has no TinyImageNet loader; 4 pixels (as on CIFAR-10) is the common choice
    # in adversarial-training code for 64x64 images, so we use 4 rather than 8.
    "tinyimagenet": {"crop_padding": 4, "flip": True},
    # The paper: none on SVHN (a flipped digit is another glyph).
    "svhn": {"crop_padding": 0, "flip": False},
    # Not in the paper; kept plain like the MNIST-family baselines.
    "fashion-mnist": {"crop_padding": 0, "flip": False},
    # A flip maps stripes at 18k degrees to 18(10-k) degrees, another class's pattern: none.
    "synthetic": {"crop_padding": 0, "flip": False},
    # Your own data: whether a flip keeps the class is yours to say (train.augment: crop_flip).
    "imagefolder": {"crop_padding": 0, "flip": False},
    "arrays": {"crop_padding": 0, "flip": False},
}


def default_augmentation(dataset: str) -> dict[str, Any]:
    """The training augmentation for `dataset` as augment_batch keywords: crop_padding, flip."""
    if dataset not in DEFAULT_AUGMENTATION:
        raise DataError(f"unknown data set {dataset!r}; choose one of "
                        f"{', '.join(DEFAULT_AUGMENTATION)}")
    return dict(DEFAULT_AUGMENTATION[dataset])


AUGMENTATIONS = ("auto", "none", "crop_flip")  # the values of train.augment


def augmentation_for(choice: str, dataset: str) -> dict[str, Any]:
    """augment_batch keywords for train.augment `choice`: `auto` is the data set's default
    (the paper's), `crop_flip` a 4-pixel crop and a flip, `none` nothing."""
    if choice == "auto":
        return default_augmentation(dataset)
    if choice == "crop_flip":
        return {"crop_padding": 4, "flip": True}
    if choice == "none":
        return {"crop_padding": 0, "flip": False}
    raise DataError(f"unknown augmentation {choice!r}; choose one of {', '.join(AUGMENTATIONS)}")


def _check_augment_inputs(
    images: Tensor, aligned: tuple[Tensor, ...], crop_padding: int, flip: bool
) -> None:
    if isinstance(crop_padding, bool) or not isinstance(crop_padding, int) or crop_padding < 0:
        raise DataError(f"crop_padding must be an int >= 0, got {crop_padding!r}")
    if not isinstance(flip, bool):
        raise DataError(f"flip must be True or False, got {flip!r}")
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise DataError("augment_batch needs images as a [B,C,H,W] tensor")
    batch, _, height, width = images.shape
    for i, tensor in enumerate(aligned):
        matches = isinstance(tensor, Tensor) and tensor.dim() == 4 and \
            tensor.shape[0] == batch and tuple(tensor.shape[2:]) == (height, width)
        if not matches:
            shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
            raise DataError(f"aligned tensor {i} has shape {shape}; it must be [{batch},c,"
                            f"{height},{width}] to match images {tuple(images.shape)}")
        if tensor.device != images.device:
            raise DataError(f"aligned tensor {i} is on {tensor.device} but images are on "
                            f"{images.device}; move them to one device")


def augment_batch(
    images: Tensor,
    *aligned: Tensor,
    crop_padding: int,
    flip: bool,
    generator: torch.Generator | None = None,
    draws: BatchDraws | None = None,
) -> tuple[Tensor, ...]:
    """Random crop (zero padding, as torchvision's RandomCrop(size, padding=crop_padding)) then
    random horizontal flip (probability 1/2), one draw per sample, applied identically to `images`
    [B,C,H,W] and every `aligned` tensor [B,c,H,W] of any dtype (masks stay on their images).

    Vectorised: each output pixel gathers its source pixel via per-sample index arithmetic; pixels
    from outside the image are zero. Random numbers are drawn on the generator's device (default:
    the tensors' device). `draws` (instead of `generator`): the images are this rank's share of
    a global batch, each augmented with the draw one process makes for it
    (part/runtime/random_draws.py).
    With crop_padding=0 and flip=False the inputs are returned as they are. Returns (images,
    *aligned).
    """
    _check_augment_inputs(images, aligned, crop_padding, flip)
    if crop_padding == 0 and not flip:
        return (images, *aligned)
    batch, _, height, width = images.shape
    device = images.device
    draws = draws if draws is not None else BatchDraws(generator)
    if crop_padding > 0:
        shift_y = draws.integers(2 * crop_padding + 1, batch, device) - crop_padding
        shift_x = draws.integers(2 * crop_padding + 1, batch, device) - crop_padding
    else:
        shift_y = shift_x = torch.zeros(batch, dtype=torch.int64, device=device)
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    if flip:
        flipped = draws.integers(2, batch, device).bool()
        cols = torch.where(flipped[:, None], width - 1 - cols, cols)
    source_rows = shift_y[:, None] + rows  # [B,H]
    source_cols = shift_x[:, None] + cols  # [B,W]
    inside = ((source_rows >= 0) & (source_rows < height))[:, :, None] & \
        ((source_cols >= 0) & (source_cols < width))[:, None, :]
    flat_index = (source_rows.clamp(0, height - 1)[:, :, None] * width
                  + source_cols.clamp(0, width - 1)[:, None, :]).reshape(batch, 1, height * width)
    outside = ~inside.reshape(batch, 1, height * width)

    def move(tensor: Tensor) -> Tensor:
        channels = tensor.shape[1]
        flat = tensor.reshape(batch, channels, height * width)
        gathered = torch.gather(flat, 2, flat_index.expand(batch, channels, height * width))
        return gathered.masked_fill(outside, 0).view(batch, channels, height, width)

    return tuple(move(tensor) for tensor in (images, *aligned))
