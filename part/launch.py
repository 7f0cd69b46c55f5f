"""`python -m part.launch --nproc-per-node N --device D -m stages.<name> ARGS...`: the command of
the burn-in, mask and training stages in dvc.yaml. It runs `torchrun --standalone` with N processes
on this machine, after claiming the GPUs they will use as one set.

A job of N > 1 processes on GPUs (`device: auto` or `cuda`) needs N GPUs of its own: the launcher
claims N free ones together (part/gpu_claim.py: all of them or none, waiting while fewer are
free), makes exactly those visible to torchrun's processes (CUDA_VISIBLE_DEVICES), each of which
takes cuda:LOCAL_RANK, and then becomes torchrun itself (exec), keeping the lock files open: the
claim lasts as long as torchrun does and ends with it, by a crash or a kill too. Fewer visible
GPUs than N, or a named GPU (`cuda:1`) for N processes, fails at once. With one process, or on
the CPU, nothing is claimed here (one process claims for itself as any process does).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from part.errors import PartError
from part.ui import guarded

USAGE = ("usage: python -m part.launch --nproc-per-node N --device DEVICE -m MODULE [ARGS...]")


def _parse(argv: Sequence[str]) -> tuple[int, str, list[str]]:
    args = list(argv)
    options: dict[str, str] = {}
    while args and args[0] in ("--nproc-per-node", "--device"):
        if len(args) < 2:
            raise PartError(f"{args[0]} needs a value; {USAGE}")
        options[args[0]] = args[1]
        args = args[2:]
    if len(args) < 2 or args[0] != "-m":
        raise PartError(f"no module to run; {USAGE}")
    raw = options.get("--nproc-per-node", "1")
    try:
        nproc = int(raw)
    except ValueError:
        nproc = 0
    if nproc < 1:
        raise PartError(f"--nproc-per-node {raw!r} is not a number of processes (1 or more); "
                        "set distributed.nproc_per_node in params.yaml")
    return nproc, options.get("--device", "auto"), args


def gpu_environment(nproc: int, device: str, env: dict[str, str] | None = None
                    ) -> dict[str, str]:
    """The environment torchrun's processes get: for N > 1 processes on GPUs, N GPUs claimed as
    a set (held by this process) and made the only visible ones."""
    from part import gpu_claim

    env = dict(os.environ if env is None else env)
    if nproc == 1 or device == "cpu":
        return env
    if device.startswith("cuda:"):
        raise PartError(f"device {device!r} names one GPU for distributed.nproc_per_node "
                        f"{nproc} processes, and two processes cannot share one; set device: "
                        "auto (or cuda): the job claims a GPU for each process")
    count = _visible_gpu_count()
    if count == 0:
        if device == "cuda":
            raise PartError("device 'cuda' was asked for but no CUDA GPU is visible; set "
                            "device: auto or cpu")
        return env  # auto without a GPU: gloo processes on the CPU
    if count < nproc:
        raise PartError(f"distributed.nproc_per_node is {nproc} but only {count} GPU(s) are "
                        "visible, and two processes cannot share one; set it to at most "
                        f"{count}, or device: cpu")
    indices = gpu_claim.claim_gpus(count, nproc)
    ids = gpu_claim.visible_gpu_ids(count)
    claimed = ",".join(ids[index] for index in indices)
    env["CUDA_VISIBLE_DEVICES"] = claimed
    env[gpu_claim.CLAIMED_ENV] = claimed
    return env


def _visible_gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def torchrun_command(nproc: int, module_args: list[str]) -> list[str]:
    """torchrun (of this interpreter) on one machine with `nproc` processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(nproc), *module_args]


@guarded
def _launch(argv: Sequence[str]) -> None:
    from part import gpu_claim

    nproc, device, module_args = _parse(argv)
    env = gpu_environment(nproc, device)
    for handle in gpu_claim.held_lock_files():
        os.set_inheritable(handle.fileno(), True)  # the claim passes to torchrun with exec
    sys.stdout.flush()
    sys.stderr.flush()
    command = torchrun_command(nproc, module_args)
    os.execve(command[0], command, env)


def main(argv: Sequence[str] | None = None) -> None:
    _launch(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
