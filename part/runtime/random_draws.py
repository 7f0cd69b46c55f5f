"""The random numbers of one global batch, of which a rank keeps its share.

N ranks train the one-process run only if every random number of a step (random starts, the
TRADES/MART noise, augmentation) is the number one process draws for that example. So each rank
draws the whole global batch's numbers from the same explicitly seeded generator and keeps the
rows of its share; the generators of all ranks stay in step. Drawing B rows where a rank needs
B/N is cheap beside the attack's forward and backward passes, and nothing cheaper gives the same
numbers: a smaller draw is not a slice of a larger one on the CPU's generator (normal draws come
in vectorised blocks) nor on CUDA's (Philox offsets follow the tensor's size).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


def _layout_of(tensor: Tensor, like: Tensor) -> Tensor:
    """`tensor` in `like`'s memory layout (channels_last batches on CUDA stay channels_last);
    the values are drawn in the logical order either way, so the layout never changes them."""
    if like.dim() == 4 and not like.is_contiguous() and \
            like.is_contiguous(memory_format=torch.channels_last):
        return tensor.contiguous(memory_format=torch.channels_last)
    return tensor


@dataclass(frozen=True)
class BatchDraws:
    """Draws for a global batch of `batch` examples, keeping rows `rows` (this rank's share).
    Without a generator they come from torch's global RNG: the whole batch, one process."""

    generator: torch.Generator | None = None
    batch: int | None = None  # None: the batch of the tensor asked for (one process)
    rows: slice = field(default_factory=lambda: slice(None))

    def _shape(self, like: Tensor) -> tuple[int, ...]:
        return (like.shape[0] if self.batch is None else self.batch, *like.shape[1:])

    def uniform(self, like: Tensor, low: float, high: float) -> Tensor:
        """U[low, high) shaped, typed and placed like `like` (this rank's rows)."""
        full = torch.empty(self._shape(like), dtype=like.dtype, device=like.device)
        return _layout_of(full.uniform_(low, high, generator=self.generator)[self.rows], like)

    def normal(self, like: Tensor) -> Tensor:
        """N(0, 1) shaped, typed and placed like `like` (this rank's rows)."""
        full = torch.randn(self._shape(like), dtype=like.dtype, device=like.device,
                           generator=self.generator)
        return _layout_of(full[self.rows], like)

    def integers(self, high: int, count: int, device: torch.device) -> Tensor:
        """Uniform int64 in [0, high), one per example of the global batch (`count` of them
        where the draws have no batch of their own), this rank's rows, on `device`. Drawn on
        the generator's device."""
        draw_device = self.generator.device if self.generator is not None else device
        total = count if self.batch is None else self.batch
        drawn = torch.randint(0, high, (total,), device=draw_device, generator=self.generator)
        return drawn[self.rows].to(device)


def epoch_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator on `device` seeded by `seed` alone: a stream every rank draws alike."""
    return torch.Generator(device=device).manual_seed(seed)
