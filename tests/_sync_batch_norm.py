"""`torchrun --nproc-per-node 2 tests/_sync_batch_norm.py OUT`: one training-mode forward of a
resnet18 whose batch norm is SyncBatchNorm, each rank on its half of a batch, against one
process's plain batch norm on the whole batch (tests/test_cuda.py). Rank 0 writes OUT: both
outputs and both models' running statistics. With one process SyncBatchNorm falls back to plain
batch norm, so only two ranks show whether it synchronises."""

from __future__ import annotations

import copy
import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from part.models import build_model
from part.runtime.precision import numerics

BATCH = 16


def main() -> None:
    dist.init_process_group("nccl")
    rank, size = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    torch.manual_seed(0)
    plain = build_model("resnet18", num_classes=10, in_channels=3).to(device).train()
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(plain))
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(BATCH, 3, 32, 32, generator=generator).to(device)
    share = slice(rank * BATCH // size, (rank + 1) * BATCH // size)
    with numerics("fp32"), torch.no_grad():
        whole = plain(x)
        mine = synced(x[share]).contiguous()
    gathered = [torch.empty_like(mine) for _ in range(size)]
    dist.all_gather(gathered, mine)
    if rank == 0:
        tensors = {"whole": whole.cpu(), "synced": torch.cat(gathered).cpu()}
        for (name, ours), (_, theirs) in zip(plain.state_dict().items(),
                                             synced.state_dict().items(), strict=True):
            if "running_" in name:
                tensors[f"plain.{name}"], tensors[f"synced.{name}"] = ours.cpu(), theirs.cpu()
        save_file(tensors, sys.argv[1])
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
