"""What a training run reads, and how an epoch walks it: the epoch's shuffle, its random streams
and each rank's share of every global batch, built on the device.

Every variant of a seed draws the same numbers in the same epoch (the streams' seeds depend on
the seed and the epoch alone), so baseline, PART and the controls see the same batches,
augmentations and random starts, and their comparison is paired; every rank draws the whole
global batch's numbers and keeps its share (part/runtime/random_draws.py), so N ranks train the
one-process run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from part.data.augment import augment_batch, augmentation_for
from part.importance.variants import EpochBudget
from part.params import Params
from part.runtime.distributed import SINGLE, World
from part.runtime.random_draws import BatchDraws, epoch_generator
from part.training.spec import TrainData


def augmentation(params: Params) -> dict[str, Any]:
    return augmentation_for(params.train.augment, params.dataset)


def input_dtype(model: nn.Module) -> torch.dtype:
    """Images in float32, or float64 for a float64 model (exact checks: tests/test_ddp_*)."""
    return torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32


# An epoch's random streams, each drawn from a generator with a seed of its own (epoch_seed).
STREAMS = {"order": 0, "augment": 1, "attack": 2, "monitor": 3}


def epoch_seed(seed: int, epoch: int, stream: str) -> int:
    """The seed of `stream`'s generator in `epoch` of a run of `seed`: the same for every variant
    (so that their comparison is paired) and on every rank (so that N ranks draw the single
    process's numbers)."""
    return (seed * 100_003 + epoch) * len(STREAMS) + STREAMS[stream]


def epoch_order(count: int, seed: int, epoch: int, device: torch.device) -> Tensor:
    """The training epoch's shuffle, from a generator of its own: every variant of a seed sees
    the same batches."""
    order = torch.randperm(count, generator=epoch_generator(epoch_seed(seed, epoch, "order"),
                                                            torch.device("cpu")))
    return order.to(device)


@dataclass
class Batch:
    """This rank's share of one global batch: images in [0,1], labels, masks (None for a uniform
    budget), and the global batch's size."""
    images: Tensor
    labels: Tensor
    masks: Tensor | None
    size: int


def training_batches(data: TrainData, budget: EpochBudget, order: Tensor, batch_size: int,
                     augmentation: dict[str, Any], generator: torch.Generator,
                     world: World = SINGLE, dtype: torch.dtype = torch.float32
                     ) -> Iterator[Batch]:
    """This rank's share of each global batch of `order`, built alone: the share's images,
    augmented with the draws one process makes for them (`generator` draws the whole batch's).

    Sample-keyed masks are indexed with the same sample indices as the images and go through
    the very same crop and flip, so every image is trained with its own mask (the paper code's
    fault 1). Position-keyed masks (mask.alignment: paper) are taken by batch position as they
    are, as the paper code does.
    """
    masks = budget.masks
    augments = bool(augmentation["crop_padding"] or augmentation["flip"])
    for start in range(0, order.shape[0], batch_size):
        index = order[start:start + batch_size]
        size = index.shape[0]
        rows = world.share(size)
        index = index[rows]
        x = data.images[index].to(dtype).div_(255)
        follows_image = masks is not None and not budget.by_position
        aligned = (masks[index],) if follows_image else ()
        if augments:
            x, *aligned = augment_batch(x, *aligned, draws=BatchDraws(generator, size, rows),
                                        **augmentation)
        if x.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        if masks is not None and budget.by_position:
            aligned = [masks[start:start + batch_size][rows]]
        yield Batch(x, data.labels[index], aligned[0] if aligned else None, size)
