"""One GPU per process on a machine with several: what `dvc queue start --jobs N` needs, where N
workers each start stages with `device: auto`.

A process claims a GPU by holding an exclusive lock on <lock dir>/gpu-<id>.lock (fcntl.flock),
<id> the GPU's id on the machine (its CUDA_VISIBLE_DEVICES entry where that is set), so that
processes with different views of the GPUs still agree. The lock lives as long as the open
file, that is as long as the process: the operating system releases it when the process ends,
by a crash or a kill too, so a claim can never be left behind. A process that finds every GPU
claimed waits for one, and fails after a while with a message that says which lock directory to
look at and which processes hold the GPUs.

Not claimed: the only GPU of a machine. A job of N > 1 processes per machine claims N GPUs as
one set before torchrun starts (part.launch, the stages' command in dvc.yaml), and its ranks take
cuda:LOCAL_RANK of that set: a second such job waits for a whole free set (and fails after the
wait) instead of landing on the same GPUs, and a machine with fewer than N visible GPUs fails at
once. A torchrun job started by hand (several machines) claims rank by rank. A torchrun of one
process per machine claims as a plain process does: otherwise every queued job would land on
GPU 0.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from part.errors import PartError
from part.ui import console

LOCK_DIR_ENV = "PART_GPU_LOCK_DIR"
WAIT_ENV = "PART_GPU_WAIT_SECONDS"
DEFAULT_WAIT_SECONDS = 3600.0
POLL_SECONDS = 1.0

__all__ = ["CLAIMED_ENV", "DEFAULT_WAIT_SECONDS", "LOCK_DIR_ENV", "WAIT_ENV", "auto_gpu_index",
           "claim_gpu", "claim_gpus", "default_lock_dir", "held_lock_files", "per_machine_ranks",
           "visible_gpu_ids", "wait_seconds"]

# This process's claim by lock directory: the open lock files (a claim lasts while they stay
# open) and the GPUs' indices. A second `device: auto` in the same process gets the same GPU.
_held: dict[Path, tuple[list[IO[bytes]], list[int]]] = {}
# Set by part.launch for the ranks of a job whose GPUs it claimed as a set: the claimed ids.
CLAIMED_ENV = "PART_CLAIMED_GPUS"


def default_lock_dir() -> Path:
    """$PART_GPU_LOCK_DIR, else a directory shared by every process of this user here."""
    configured = os.environ.get(LOCK_DIR_ENV)
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"part-gpu-locks-{os.getuid()}"


def wait_seconds() -> float:
    """How long a process waits for a free GPU: $PART_GPU_WAIT_SECONDS, default one hour."""
    raw = os.environ.get(WAIT_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_WAIT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        raise PartError(f"{WAIT_ENV}={raw!r} is not a number of seconds; set it to e.g. 600, "
                        "or unset it for the default of one hour") from None
    if not seconds >= 0:  # also refuses nan
        raise PartError(f"{WAIT_ENV} must be 0 or more seconds, got {raw!r}")
    return seconds


def visible_gpu_ids(count: int) -> list[str]:
    """The machine's ids of the `count` GPUs torch sees, in torch's order."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(index) for index in range(count)]
    ids = [entry.strip() for entry in listed.split(",") if entry.strip()][:count]
    # More GPUs than entries cannot happen under CUDA; fall back to positions rather than fail.
    return ids if len(ids) == count else [str(index) for index in range(count)]


def _lock_path(lock_dir: Path, gpu_id: str) -> Path:
    # Ids can be UUIDs, and old-style MIG ids hold slashes: keep a file name of them.
    return lock_dir / f"gpu-{re.sub(r'[^A-Za-z0-9._-]', '_', gpu_id)}.lock"


def _try_claim(path: Path) -> IO[bytes] | None:
    try:
        handle = open(path, "a+b")  # noqa: SIM115 (held past this call: it is the claim)
    except OSError as error:
        raise PartError(f"cannot open the GPU lock file {path}: {error.strerror}; set "
                        f"{LOCK_DIR_ENV} to a directory of your own") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n".encode())  # who holds it, for the message and for a person
    handle.flush()
    return handle


def _holders(lock_dir: Path, gpu_ids: list[str]) -> str:
    """'<id>: pid <pid>' for each claimed GPU, as far as the lock files tell."""
    found = []
    for gpu_id in gpu_ids:
        try:
            pid = _lock_path(lock_dir, gpu_id).read_text().strip()
        except OSError:
            pid = ""
        found.append(f"GPU {gpu_id}: pid {pid or '?'}")
    return ", ".join(found)


def claim_gpus(count: int, wanted: int = 1, lock_dir: Path | None = None,
               wait: float | None = None, only: int | None = None) -> list[int]:
    """The indices (among the `count` GPUs torch sees) of `wanted` GPUs that no other process
    holds, claimed together (all of them or none: a job never sits on part of a set while it
    waits for the rest), now held by this process until it ends; `only` restricts a claim of
    one to that index. Waits up to `wait` seconds (default: wait_seconds()) for enough to come
    free, then raises PartError. Claiming again in the same process returns what it holds."""
    lock_dir = Path(lock_dir or default_lock_dir())
    if lock_dir in _held:
        return list(_held[lock_dir][1])
    if wanted > count:
        raise PartError(f"{wanted} GPUs are needed but only {count} are visible; lower "
                        "distributed.nproc_per_node, or make more GPUs visible "
                        "(CUDA_VISIBLE_DEVICES)")
    wait = wait_seconds() if wait is None else wait
    try:
        lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise PartError(f"cannot create the GPU lock directory {lock_dir}: {error.strerror}; "
                        f"set {LOCK_DIR_ENV} to a writable directory") from None
    gpu_ids = visible_gpu_ids(count)
    candidates = [only] if only is not None else list(range(count))
    deadline = time.monotonic() + wait
    told = False
    if only is not None:
        wanting = f"GPU {gpu_ids[only]} (LOCAL_RANK {only}) is"
    elif wanted == 1:
        wanting = f"all {count} GPUs are"
    else:
        wanting = f"fewer than {wanted} of the {count} GPUs are free:"
    while True:
        taken: list[tuple[IO[bytes], int]] = []
        for index in candidates:
            handle = _try_claim(_lock_path(lock_dir, gpu_ids[index]))
            if handle is not None:
                taken.append((handle, index))
                if len(taken) == wanted:
                    _held[lock_dir] = ([handle for handle, _ in taken],
                                       [index for _, index in taken])
                    return list(_held[lock_dir][1])
        for handle, _ in taken:  # not enough: hold none of them while waiting
            handle.close()
        if time.monotonic() >= deadline:
            holders = _holders(lock_dir, [gpu_ids[index] for index in candidates])
            raise PartError(
                f"{wanting} claimed by other part processes ({holders}; lock files "
                f"in {lock_dir}) and not enough came free within {wait:g} s; "
                f"end one of those processes, or run fewer jobs at once (dvc queue start --jobs "
                f"{max(count // wanted, 1)}), or wait longer with {WAIT_ENV}=<seconds>, or name "
                "a GPU with device: cuda:N (never claimed)")
        if not told:
            console.print(f"[yellow]{wanting} claimed by other part processes "
                          f"(lock files in {lock_dir}); waiting up to {wait:g} s for enough to "
                          f"come free ({WAIT_ENV})[/]", soft_wrap=True)  # one line in a log
            told = True
        time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0.0)))


def claim_gpu(count: int, lock_dir: Path | None = None, wait: float | None = None,
              only: int | None = None) -> int:
    """The index of one GPU claimed by claim_gpus (the one this process holds, if any)."""
    return claim_gpus(count, 1, lock_dir, wait, only)[0]


def held_lock_files(lock_dir: Path | None = None) -> list[IO[bytes]]:
    """The open lock files of this process's claim: a launcher keeps them open across exec."""
    held = _held.get(Path(lock_dir or default_lock_dir()))
    return list(held[0]) if held else []


def _env_int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError:
        raise PartError(f"environment variable {key}={raw!r} is not an integer; it is set by "
                        "torchrun: start the stage through torchrun, or unset it") from None


def per_machine_ranks(env: Mapping[str, str] | None = None) -> int:
    """How many processes torchrun started on this machine (1 without torchrun)."""
    env = os.environ if env is None else env
    if "LOCAL_RANK" not in env:
        return 1
    return _env_int(env, "LOCAL_WORLD_SIZE", _env_int(env, "WORLD_SIZE", 1))


def auto_gpu_index(count: int, lock_dir: Path | None = None, wait: float | None = None,
                   env: Mapping[str, str] | None = None) -> int | None:
    """Which of `count` visible GPUs `device: auto` takes. One process per machine: None for
    the only GPU, else a claimed free one (claim_gpu). A rank of a torchrun job with several
    processes per machine: cuda:LOCAL_RANK, of the set part.launch claimed for the job, or
    claimed by the rank itself where the job was started by hand; never two ranks on one GPU."""
    env = os.environ if env is None else env
    per_machine = per_machine_ranks(env)
    if per_machine > 1:
        local_rank = _env_int(env, "LOCAL_RANK", 0)
        if per_machine > count or not 0 <= local_rank < count:
            raise PartError(f"torchrun started {per_machine} processes on this machine but only "
                            f"{count} GPU(s) are visible, and two processes cannot share one; "
                            f"set distributed.nproc_per_node to at most {count}, or device: cpu")
        if env.get(CLAIMED_ENV) and env.get(CLAIMED_ENV) == env.get("CUDA_VISIBLE_DEVICES"):
            return local_rank  # part.launch holds the job's GPUs as a set
        return claim_gpu(count, lock_dir, wait, only=local_rank)
    if count <= 1:
        return None
    return claim_gpu(count, lock_dir, wait)
