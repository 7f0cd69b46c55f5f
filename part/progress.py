"""Running loss / accuracy for a progress bar without a host sync on every batch.

The sums live on the device. Every few batches they are copied to pinned host memory
asynchronously; the bar shows the last copy that has already landed, so the batch loop never
waits for the device.
"""

from __future__ import annotations

import torch
from torch import Tensor


class RunningMeans:
    def __init__(self, device: torch.device):
        self.device = device
        self._sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss*n, correct, n
        on_cuda = device.type == "cuda"
        self._host = torch.zeros(3, dtype=torch.float64, pin_memory=on_cuda)
        self._event = torch.cuda.Event() if on_cuda else None
        self._shown = (float("nan"), float("nan"))

    def add(self, loss: Tensor, logits: Tensor, labels: Tensor) -> None:
        batch = labels.shape[0]
        self._sums[0] += loss.detach().double() * batch
        self._sums[1] += (logits.argmax(dim=1) == labels).sum()
        self._sums[2] += batch

    def _read_host(self) -> tuple[float, float]:
        loss_sum, correct, count = self._host.tolist()
        if count == 0:
            return self._shown
        return loss_sum / count, correct / count

    def peek(self) -> tuple[float, float]:
        """(mean loss, accuracy) as of the latest completed copy; never blocks on CUDA."""
        if self._event is None:
            self._host.copy_(self._sums)
            self._shown = self._read_host()
            return self._shown
        if self._event.query():
            self._shown = self._read_host()
            self._host.copy_(self._sums, non_blocking=True)
            self._event.record()
        return self._shown

    def final(self) -> tuple[float, float]:
        """Exact means at the end of the epoch (one sync, outside the batch loop)."""
        loss_sum, correct, count = self._sums.tolist()
        count = max(count, 1.0)
        return loss_sum / count, correct / count
