"""Choosing the torch device from the `device` param, and making CUDA deterministic on it."""

from __future__ import annotations

import os

import torch

from part.errors import PartError
from part.runtime.gpu_claim import auto_gpu_index, per_machine_ranks

DEVICES = ("auto", "cpu", "cuda")  # the values of the `device` param


def resolve_device(name: str = "auto") -> torch.device:
    """`auto`: the CPU without a GPU, the GPU where there is one, and where there are several a
    free one that this process claims until it ends, or cuda:LOCAL_RANK under a torchrun of
    several processes per machine (part/runtime/gpu_claim.py), so that parallel jobs (dvc queue
    start
    --jobs N) each get their own. `cuda` is the only GPU, or under several processes per
    machine cuda:LOCAL_RANK as `auto` takes it; a named device (cuda:N) is taken as it is, but
    never by several processes of one machine, which it would put on one GPU."""
    ranks_here = per_machine_ranks()
    if name.startswith("cuda:") and ranks_here > 1:
        raise PartError(f"device {name!r} names one GPU for the {ranks_here} processes torchrun "
                        "started on this machine (distributed.nproc_per_node), and two "
                        "processes cannot share one; set device: auto (or cuda): each process "
                        "takes its own")
    if name == "auto" or (name == "cuda" and ranks_here > 1 and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        index = auto_gpu_index(torch.cuda.device_count())
        if index is None:
            return torch.device("cuda")
        torch.cuda.set_device(index)
        return torch.device(f"cuda:{index}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PartError(
            f"device {name!r} was asked for but no CUDA GPU is visible; set device: auto or cpu"
        )
    try:
        return torch.device(name)
    except RuntimeError:
        raise PartError(f"device {name!r} is not a torch device; use auto, cpu or cuda") from None


# cuBLAS reproducible only with a fixed workspace per handle (NVIDIA's cuBLAS docs, "Results
# reproducibility"); either value is what torch's deterministic mode accepts.
DETERMINISTIC_CUBLAS_WORKSPACES = (":4096:8", ":16:8")


def make_deterministic(device: torch.device, deterministic: bool = True) -> None:
    """On CUDA with `deterministic` (train.deterministic), the same code, params and data give
    the same bytes, as the DVC cache promises: deterministic algorithms only (an op that has none
    raises, naming itself, rather than train a model that would not reproduce), a fixed cuBLAS
    workspace, no cuDNN autotuning (it picks kernels by timing, so by chance). Call it before the
    process's first CUDA matmul: torch sizes its cuBLAS workspace once. The CPU's kernels are
    deterministic already, so it changes nothing there."""
    if not deterministic or device.type != "cuda":
        return
    if os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in DETERMINISTIC_CUBLAS_WORKSPACES:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = DETERMINISTIC_CUBLAS_WORKSPACES[0]
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
