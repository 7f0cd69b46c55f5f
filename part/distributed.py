"""Data parallelism across the processes that torchrun starts: one per GPU, or gloo processes on a
CPU (`distributed.nproc_per_node`).

Every rank builds the same global batch as a single process would (the same order, augmentation
and random starts), trains on its contiguous share of it, and the ranks average their gradients
with one all-reduce per step, each weighted by its share of the batch, so that a step is the
single-process step on the whole batch up to the order of float sums. Baseline and PART stay
paired: they see the same global batches on the same ranks. On CUDA batch norm is synchronised
(SyncBatchNorm); on the CPU each rank normalises its share, and the running statistics are
averaged at the end of every epoch, so every rank holds the same model. The mask refresh is
sharded by sample index and gathered. Only rank 0 writes files.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn

# A rank that waits this long for the others in a collective gives up: a rank that died is
# normally noticed by torchrun, which stops the others at once.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class World:
    """This process's place among the ranks (size 1: a plain single process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.size > 1

    def share(self, count: int) -> slice:
        """This rank's contiguous share of `count` items; shares differ by at most one."""
        base, extra = divmod(count, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))


SINGLE = World()


def _die_with_launcher() -> None:
    """torchrun starts its workers in sessions of their own, so a kill of torchrun that they do
    not see (SIGKILL of DVC's process group, the OOM killer) would leave them training and
    writing outputs behind the user's back. Linux kills a worker whose parent dies, if asked."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the launcher was gone before the request took effect
        os._exit(1)


def world_from_env() -> World:
    """The world torchrun describes in RANK, WORLD_SIZE and LOCAL_RANK; SINGLE without it. A
    worker started by torchrun ends with it."""
    _die_with_launcher()
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE
    return World(rank=int(os.environ["RANK"]), size=size,
                 local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def join(world: World, device: torch.device) -> None:
    """Join the process group of `world` (NCCL on CUDA, gloo on the CPU), once per process."""
    if world.is_distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=COLLECTIVE_TIMEOUT)


def leave(world: World) -> None:
    if world.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def prepare_model(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """On CUDA under several ranks, batch norm over the whole global batch."""
    if world.is_distributed and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def average_gradients(model: nn.Module, world: World, share: int, batch: int) -> None:
    """Each rank's gradient (of its share's mean loss) weighted by share / batch and summed over
    the ranks: the gradient of the whole batch's mean loss. One flat all-reduce."""
    if not world.is_distributed:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads]).mul_(share / batch)
    dist.all_reduce(flat)
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def average_buffers(model: nn.Module, world: World) -> None:
    """The ranks' mean of every float buffer (batch norm's running statistics)."""
    if not world.is_distributed:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer.div_(world.size)


def sum_across(tensor: Tensor, world: World) -> Tensor:
    if world.is_distributed:
        dist.all_reduce(tensor)
    return tensor


def gather_masks(world: World, compute: Callable[[Tensor], Tensor], images: Tensor,
                 chunk: int) -> Tensor:
    """compute(images), a bool tensor with a row per image, with the images sharded over the
    ranks and the rows gathered in order. Shards start on multiples of `chunk`, so a chunked
    computation sees the very chunks a single process would."""
    if not world.is_distributed:
        return compute(images)
    count = images.shape[0]
    chunks = -(-count // chunk)

    def rows(rank: int) -> slice:
        share = World(rank, world.size).share(chunks)
        return slice(share.start * chunk, min(share.stop * chunk, count))

    mine = rows(world.rank)
    if mine.stop > mine.start:
        local = compute(images[mine])
    else:  # fewer chunks than ranks: nothing to do but learn the rows' shape
        local = compute(images[:1])[:0]
    # all_gather takes equal sizes, and gloo no bool: every shard padded to the largest, as bytes
    largest = -(-chunks // world.size) * chunk
    padded = torch.zeros((largest, *local.shape[1:]), dtype=torch.uint8, device=local.device)
    padded[:local.shape[0]] = local
    gathered = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(gathered, padded)
    pieces = [part[:max(rows(rank).stop - rows(rank).start, 0)]
              for rank, part in enumerate(gathered)]
    return torch.cat(pieces).bool()


def barrier(world: World) -> None:
    if world.is_distributed:
        dist.barrier()
