"""One GPU per process on a machine with several: what `dvc queue start --jobs N` needs, where N
workers each start stages with `device: auto`.

A process claims a GPU by holding an exclusive lock on <lock dir>/gpu-<id>.lock (fcntl.flock),
<id> the GPU's id on the machine (its CUDA_VISIBLE_DEVICES entry where that is set), so that
processes with different views of the GPUs still agree. The
lock lives as long as the open file, that is as long as the process: the operating system
releases it when the process ends, by a crash or a kill too, so a claim can never be left behind.
A process that finds every GPU claimed waits for one, and fails after a while with a message
that says which lock directory to look at.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path
from typing import IO

from part.errors import PartError
from part.ui import console

LOCK_DIR_ENV = "PART_GPU_LOCK_DIR"
WAIT_ENV = "PART_GPU_WAIT_SECONDS"
DEFAULT_WAIT_SECONDS = 3600.0
POLL_SECONDS = 1.0

_held: list[IO[bytes]] = []  # the open lock files: a claim lasts while its file stays open


def default_lock_dir() -> Path:
    """Shared by every process of this user on this machine."""
    configured = os.environ.get(LOCK_DIR_ENV)
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"part-gpu-locks-{os.getuid()}"


def wait_seconds() -> float:
    raw = os.environ.get(WAIT_ENV)
    if raw is None:
        return DEFAULT_WAIT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        raise PartError(f"{WAIT_ENV}={raw!r} is not a number of seconds; set it to e.g. 600, "
                        "or unset it for the default of one hour") from None
    if seconds < 0:
        raise PartError(f"{WAIT_ENV} must be 0 or more seconds, got {raw}")
    return seconds


def visible_gpu_ids(count: int) -> list[str]:
    """The machine's ids of the `count` GPUs torch sees, in torch's order."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(index) for index in range(count)]
    return [entry.strip() for entry in listed.split(",") if entry.strip()][:count]


def _try_claim(lock_dir: Path, gpu_id: str) -> IO[bytes] | None:
    handle = open(lock_dir / f"gpu-{gpu_id}.lock", "a+b")  # noqa: SIM115 (held past this call)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n".encode())  # who holds it, for a person looking
    handle.flush()
    return handle


def claim_gpu(gpu_ids: list[str], lock_dir: Path | None = None, wait: float | None = None) -> int:
    """The position in `gpu_ids` of a GPU that no other process of this user holds, now held by
    this process until it ends. Waits up to `wait` seconds for one to come free."""
    lock_dir = lock_dir or default_lock_dir()
    wait = wait_seconds() if wait is None else wait
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PartError(f"cannot create the GPU lock directory {lock_dir}: {error}; set "
                        f"{LOCK_DIR_ENV} to a writable directory") from None
    deadline = time.monotonic() + wait
    told = False
    while True:
        for index, gpu_id in enumerate(gpu_ids):
            handle = _try_claim(lock_dir, gpu_id)
            if handle is not None:
                _held.append(handle)
                return index
        if time.monotonic() >= deadline:
            raise PartError(
                f"all {len(gpu_ids)} GPUs are claimed by other part processes (locks in "
                f"{lock_dir}); run fewer jobs at once (dvc queue start --jobs "
                f"{len(gpu_ids)}), name a GPU with "
                f"device: cuda:N, or wait longer with {WAIT_ENV}")
        if not told:
            console.print(f"[yellow]all {len(gpu_ids)} GPUs are claimed (locks in {lock_dir}); "
                          "waiting for one to come free[/]")
            told = True
        time.sleep(POLL_SECONDS)
