"""One GPU per process on a machine with several: what `dvc queue start --jobs N` needs, where N
workers each start stages with `device: auto`.

A process claims a GPU by holding an exclusive lock on <lock dir>/gpu-<id>.lock (fcntl.flock),
<id> the GPU's id on the machine (its CUDA_VISIBLE_DEVICES entry where that is set), so that
processes with different views of the GPUs still agree. The lock lives as long as the open
file, that is as long as the process: the operating system releases it when the process ends,
by a crash or a kill too, so a claim can never be left behind. A process that finds every GPU
claimed waits for one, and fails after a while with a message that says which lock directory to
look at and which processes hold the GPUs.

Not claimed: the only GPU of a machine. A process of a torchrun job with several processes per
machine takes cuda:LOCAL_RANK, as torchrun means it to, and claims exactly that GPU: a second
such job queued beside it waits for those GPUs (and fails after the wait) instead of landing on
them. dvc.yaml starts the training stages through torchrun even with one process
(distributed.nproc_per_node: 1), so a torchrun of one process per machine claims as a plain
process does: otherwise every queued job would land on GPU 0.
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

__all__ = ["DEFAULT_WAIT_SECONDS", "LOCK_DIR_ENV", "WAIT_ENV", "auto_gpu_index", "claim_gpu",
           "default_lock_dir", "visible_gpu_ids", "wait_seconds"]

# This process's claims by lock directory: the open lock file (a claim lasts while it stays
# open) and the GPU's index. A second `device: auto` in the same process gets the same GPU.
_held: dict[Path, tuple[IO[bytes], int]] = {}


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


def claim_gpu(count: int, lock_dir: Path | None = None, wait: float | None = None,
              only: int | None = None) -> int:
    """The index (among the `count` GPUs torch sees) of a GPU that no other process holds, now
    held by this process until it ends; `only` restricts it to that one index. Waits up to
    `wait` seconds (default: wait_seconds()) for one to come free, then raises PartError.
    Claiming again in the same process returns the GPU it already holds."""
    lock_dir = Path(lock_dir or default_lock_dir())
    if lock_dir in _held:
        return _held[lock_dir][1]
    wait = wait_seconds() if wait is None else wait
    try:
        lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise PartError(f"cannot create the GPU lock directory {lock_dir}: {error.strerror}; "
                        f"set {LOCK_DIR_ENV} to a writable directory") from None
    gpu_ids = visible_gpu_ids(count)
    candidates = [only] if only is not None else range(count)
    deadline = time.monotonic() + wait
    told = False
    while True:
        for index in candidates:
            gpu_id = gpu_ids[index]
            handle = _try_claim(_lock_path(lock_dir, gpu_id))
            if handle is not None:
                _held[lock_dir] = (handle, index)
                return index
        if time.monotonic() >= deadline:
            holders = _holders(lock_dir, [gpu_ids[index] for index in candidates])
            wanted = (f"GPU {gpu_ids[only]} (LOCAL_RANK {only}) is" if only is not None
                      else f"all {count} GPUs are")
            raise PartError(
                f"{wanted} claimed by other part processes ({holders}; lock files "
                f"in {lock_dir}) and none came free within {wait:g} s; "
                f"end one of those processes, or run fewer jobs at once (dvc queue start --jobs "
                f"{count}), or wait longer with {WAIT_ENV}=<seconds>, or name a GPU with "
                "device: cuda:N (never claimed)")
        if not told:
            what = f"GPU {gpu_ids[only]} is" if only is not None else f"all {count} GPUs are"
            console.print(f"[yellow]{what} claimed by other part processes "
                          f"(lock files in {lock_dir}); waiting up to {wait:g} s for one to come "
                          f"free ({WAIT_ENV})[/]", soft_wrap=True)  # one line in a log
            told = True
        time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0.0)))


def _env_int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError:
        raise PartError(f"environment variable {key}={raw!r} is not an integer; it is set by "
                        "torchrun: start the stage through torchrun, or unset it") from None


def auto_gpu_index(count: int, lock_dir: Path | None = None, wait: float | None = None,
                   env: Mapping[str, str] | None = None) -> int | None:
    """Which of `count` visible GPUs `device: auto` takes: None for the only one; LOCAL_RANK,
    claimed, for a process of a torchrun job with several processes per machine; otherwise a
    claimed free one (claim_gpu)."""
    env = os.environ if env is None else env
    if count <= 1:
        return None
    per_machine = _env_int(env, "LOCAL_WORLD_SIZE", _env_int(env, "WORLD_SIZE", 1))
    if "LOCAL_RANK" in env and per_machine > 1:
        local_rank = _env_int(env, "LOCAL_RANK", 0)
        if not 0 <= local_rank < count:
            raise PartError(f"torchrun started process LOCAL_RANK={local_rank} but only {count} "
                            "GPUs are visible; set distributed.nproc_per_node to at most "
                            f"{count}, or device: cpu")
        return claim_gpu(count, lock_dir, wait, only=local_rank)
    return claim_gpu(count, lock_dir, wait)
