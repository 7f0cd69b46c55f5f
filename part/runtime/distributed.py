"""Data parallelism across the processes that torchrun starts: one per GPU, or gloo processes on a
CPU (`distributed.nproc_per_node`).

Every rank builds only its contiguous share of each global batch, with the random numbers one
process draws for those examples (the order, augmentation and random starts:
part/runtime/random_draws.py),
and trains through DistributedDataParallel with its loss weighted by its share, so that a step is
the single-process step on the whole batch up to the order of float sums. Baseline and PART stay
paired: they see the same global batches on the same ranks. On CUDA batch norm is synchronised
(SyncBatchNorm); on the CPU each rank normalises its share, and the running statistics are
averaged at the end of every epoch, so every rank holds the same model. The mask refresh and the
per-epoch monitor are sharded and gathered. Rank 0 decides whether a run resumes and sends the
state to the others; only rank 0 writes files.
"""

from __future__ import annotations

import ctypes
import inspect
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from part.errors import PartError

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


def data_parallel(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """What the training loss runs through: under several ranks, PyTorch's
    DistributedDataParallel (bucketed gradient all-reduce, overlapped with the backward pass; the
    average over ranks, which train_epoch's share-weighted loss turns into the global batch's
    mean); in one process the model itself. Buffers are not broadcast at every forward: batch
    norm's running statistics are averaged after each epoch (average_buffers)."""
    if not world.is_distributed:
        return model
    parallel = nn.parallel.DistributedDataParallel
    # torch 2.14 renamed broadcast_buffers; 2.11 knows only the old name
    no_forward_sync = ("forward_sync_buffers" if "forward_sync_buffers"
                       in inspect.signature(parallel.__init__).parameters else "broadcast_buffers")
    where = {}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        where = {"device_ids": [index], "output_device": index}
    return parallel(model, **where, **{no_forward_sync: False})


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


def node_name() -> str:
    """This process's machine as a message names it: torchrun's node rank and the host name."""
    return f"node {os.environ.get('GROUP_RANK', '0')} ({socket.gethostname()})"


def _collective_device(device: torch.device) -> torch.device:
    return device if device.type == "cuda" else torch.device("cpu")  # NCCL: CUDA; gloo: CPU


def broadcast_bytes(payload: bytes, world: World, device: torch.device) -> bytes:
    """Rank 0's `payload` on every rank (the others' is ignored)."""
    if not world.is_distributed:
        return payload
    where = _collective_device(device)
    length = torch.tensor([len(payload)], dtype=torch.int64, device=where)
    dist.broadcast(length, src=0)
    buffer = torch.empty(int(length.item()), dtype=torch.uint8, device=where)
    if world.is_main and payload:
        buffer.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
    dist.broadcast(buffer, src=0)
    return buffer.cpu().numpy().tobytes()


def gather_text(text: str, world: World, device: torch.device) -> list[str]:
    """Every rank's `text`, in rank order, on every rank (no pickling: UTF-8 bytes, padded)."""
    if not world.is_distributed:
        return [text]
    where = _collective_device(device)
    encoded = text.encode()
    longest = torch.tensor([len(encoded)], dtype=torch.int64, device=where)
    dist.all_reduce(longest, op=dist.ReduceOp.MAX)
    lengths = [torch.zeros(1, dtype=torch.int64, device=where) for _ in range(world.size)]
    dist.all_gather(lengths, torch.tensor([len(encoded)], dtype=torch.int64, device=where))
    padded = torch.zeros(int(longest.item()), dtype=torch.uint8, device=where)
    if encoded:
        padded[:len(encoded)] = torch.frombuffer(bytearray(encoded), dtype=torch.uint8)
    gathered = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(gathered, padded)
    return [piece[:int(n.item())].cpu().numpy().tobytes().decode()
            for piece, n in zip(gathered, lengths, strict=True)]


def require_everywhere(paths: list[Path], world: World, device: torch.device) -> None:
    """Fail on every rank, with one message naming each missing file and its node, unless every
    rank finds every one of `paths` (on several machines each reads its own copy)."""
    missing = [str(path) for path in paths if not Path(path).is_file()]
    where = f" on {node_name()}, rank {world.rank}" if world.is_distributed else ""
    mine = f"{', '.join(missing)}{where}" if missing else ""
    reports = [report for report in gather_text(mine, world, device) if report]
    if reports:
        where = " on that machine, or copy them there" if world.is_distributed else ""
        raise PartError("missing input file(s): " + "; ".join(reports) + "; run the stages "
                        f"before this one (dvc repro){where}")


def agree(value: str, what: str, world: World, device: torch.device) -> None:
    """Fail on every rank unless every rank computed the same `value` (`what` names it)."""
    values = gather_text(value, world, device)
    differing = [rank for rank, other in enumerate(values) if other != values[0]]
    if differing:
        raise PartError(f"ranks {', '.join(map(str, differing))} see another {what} than rank 0 "
                        "(other code, params or data on their machine); give every machine the "
                        "same checkout, params.yaml and data")


def barrier(world: World) -> None:
    if world.is_distributed:
        dist.barrier()
