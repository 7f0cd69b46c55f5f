"""Seeded, class-balanced subsets: the same indices for the same labels, size and seed."""

from __future__ import annotations

import torch
from torch import Tensor

from part.data import DataError


def balanced_subset(labels: Tensor, n: int, seed: int) -> Tensor:
    """Sorted indices of a seeded, class-balanced subset of size `n`.

    Each of the K classes present gets n // K samples; the n % K remaining ones go one each to the
    classes with the smallest labels, so the counts depend only on `n` and the labels. Which
    samples of a class are taken depends on `seed`. Returns int64 indices on `labels.device`.
    """
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.is_floating_point():
        raise DataError("balanced_subset needs a 1-D integer label tensor")
    if isinstance(n, bool) or not isinstance(n, int):
        raise DataError(f"subset size must be an int, got {n!r}")
    flat = labels.detach().to("cpu", torch.int64)
    classes, class_of, counts = torch.unique(flat, return_inverse=True, return_counts=True)
    total, num_classes = flat.numel(), classes.numel()
    if n > total:
        raise DataError(f"subset size {n} exceeds the {total} samples available; use n <= {total}")
    if n < num_classes:
        raise DataError(
            f"subset size {n} is smaller than the {num_classes} classes present; a class-balanced "
            f"subset needs n >= {num_classes}")
    quota = torch.full((num_classes,), n // num_classes, dtype=torch.int64)
    quota[: n % num_classes] += 1
    short = (counts < quota).nonzero().flatten()
    if short.numel():
        k = int(short[0])
        raise DataError(
            f"class {int(classes[k])} has only {int(counts[k])} samples but a balanced subset of "
            f"{n} needs {int(quota[k])} of each; use a smaller subset")
    generator = torch.Generator().manual_seed(int(seed))
    shuffled = torch.randperm(total, generator=generator)
    # A stable sort by class keeps the random order within each class: take each class's first.
    grouped = shuffled[torch.argsort(class_of[shuffled], stable=True)]
    grouped_class = class_of[grouped]
    class_start = torch.cumsum(counts, 0) - counts
    rank_in_class = torch.arange(total) - class_start[grouped_class]
    chosen = grouped[rank_in_class < quota[grouped_class]]
    return torch.sort(chosen).values.to(labels.device)

