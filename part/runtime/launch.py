"""`python -m part.launch --nproc-per-node N --device D -m stages.<name> ARGS...`: the command of
the burn-in, mask and training stages in dvc.yaml.

With one process (`distributed.nproc_per_node: 1`, the default) the launcher runs the stage module
here, in this very process, as `python -m stages.<name>` would: no torchrun, no elastic agent, no
second interpreter importing torch again; an expected failure is the stage's own one-line
`error: ...` and exit 2.

With N > 1 this process becomes torchrun's elastic agent (`torchrun --standalone`, in-process) and
starts N worker processes on this machine. A job of N processes on GPUs (`device: auto` or
`cuda`) needs N GPUs of its own: the launcher first claims N free ones together
(part/runtime/gpu_claim.py: all of them or none, waiting while fewer are free) and makes exactly
those
visible to the workers (CUDA_VISIBLE_DEVICES), each of which takes cuda:LOCAL_RANK; the lock files
stay open in this process, so the claim lasts as long as the agent does and ends with it, by a
crash or a kill too. Fewer visible GPUs than N, or a named GPU (`cuda:1`) for N processes, fails
at once. With one process, or on the CPU, nothing is claimed here (one process claims for itself
as any process does). When a worker fails, the workers' own one-line messages come first and the
agent adds one line naming the rank that failed first, its exit code and its message, in place
of torchrun's traceback and failure table.
"""

from __future__ import annotations

import logging
import os
import runpy
import signal
import sys
from collections.abc import Sequence

from rich.markup import escape

from part.errors import PartError
from part.ui import console, guarded

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
    from part.runtime import gpu_claim

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
    """torchrun's command line (of this interpreter) for `nproc` processes on one machine: what
    the launcher runs in-process for N > 1, and what a user types to run a stage by hand."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(nproc), *module_args]


def run_module_here(module_args: list[str]) -> None:
    """`python -m MODULE ARGS...` in this process (the one-process path): the module runs as
    `__main__` with its own argv, and its exit status is this process's."""
    module, *args = module_args[1:]
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def _failure_line(nproc: int, rank: int, exitcode: int, message: str) -> str:
    if exitcode < 0:
        try:
            how = f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"was killed by signal {-exitcode}"
    else:
        how = f"failed with exit code {exitcode}"
    reason = message
    return f"rank {rank} of {nproc} {how}" + (f": {reason}" if reason else "")


class WorkersFailed(PartError):
    """A worker of an N-process job ended with an error; `exit_code` is the first one's."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def run_torchrun_here(nproc: int, module_args: list[str]) -> None:
    """torchrun --standalone with `nproc` workers, its agent in this process. Its own logging
    (rendezvous, the OMP_NUM_THREADS notice, a failure's traceback and table) is kept to errors
    that are not a worker's: a failed worker becomes one WorkersFailed line."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    logging.getLogger("torch.distributed.run").setLevel(logging.CRITICAL)
    arguments = torchrun.parse_args(torchrun_command(nproc, module_args)[3:])
    try:
        torchrun.run(arguments)
    except ChildFailedError as failure:
        rank, first = failure.get_first_failure()
        # a worker's own message, where it left one (part.ui); torchrun's made-up text otherwise
        wrote = os.path.isfile(first.error_file) and isinstance(first.message, str)
        message = first.message if wrote else ""
        exit_code = first.exitcode if first.exitcode > 0 else 1
        raise WorkersFailed(_failure_line(nproc, rank, first.exitcode, message),
                            exit_code) from None


@guarded
def _launch(argv: Sequence[str]) -> None:
    nproc, device, module_args = _parse(argv)
    if nproc == 1:
        run_module_here(module_args)
        return
    os.environ.update(gpu_environment(nproc, device))
    try:
        run_torchrun_here(nproc, module_args)
    except WorkersFailed as failed:
        console.print(f"[bold red]error:[/] {escape(str(failed))}", soft_wrap=True)
        sys.exit(failed.exit_code)


def main(argv: Sequence[str] | None = None) -> None:
    _launch(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
