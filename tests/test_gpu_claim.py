"""GPU claiming for parallel jobs, on the CPU with a faked GPU count: concurrent processes get
distinct GPUs, one too many waits until a holder ends, a killed holder frees its GPU, a wait that
runs out fails with a message that names the lock directory; and which GPU `device: auto` takes
with one GPU, under torchrun, and when a device is named."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from part.errors import PartError
from part.runtime import gpu_claim
from part.runtime.device import resolve_device
from part.runtime.gpu_claim import auto_gpu_index, claim_gpu, visible_gpu_ids, wait_seconds

ROOT = Path(__file__).resolve().parents[1]
COUNT = 3

# Claims one of COUNT GPUs, prints its index, then holds it until stdin closes.
HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from part.runtime.gpu_claim import claim_gpu
    print(claim_gpu(int(sys.argv[2]), Path(sys.argv[1]), wait=float(sys.argv[3])), flush=True)
    sys.stdin.read()
""")


def _holder(lock_dir: Path, wait: float = 60) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key != "CUDA_VISIBLE_DEVICES"}
    env["PYTHONPATH"] = str(ROOT)  # this checkout's part
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_dir), str(COUNT), str(wait)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _claimed(process: subprocess.Popen) -> int:
    line = process.stdout.readline().strip()
    assert line, process.stderr.read() if process.poll() is not None else "no claim printed"
    return int(line)


def _release(*processes: subprocess.Popen) -> None:
    for process in processes:
        if process.poll() is None:
            process.stdin.close()
        process.wait(timeout=30)


@pytest.fixture(autouse=True)
def _no_claims_carried_over(monkeypatch):
    """Claims made in this test process stay with their test."""
    monkeypatch.setattr(gpu_claim, "_held", {})
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for key in ("LOCAL_RANK", "LOCAL_WORLD_SIZE", "WORLD_SIZE", gpu_claim.WAIT_ENV):
        monkeypatch.delenv(key, raising=False)


def test_concurrent_processes_get_distinct_gpus_and_one_too_many_waits(tmp_path):
    holders = [_holder(tmp_path) for _ in range(COUNT)]
    try:
        assert sorted(_claimed(holder) for holder in holders) == list(range(COUNT))
        extra = _holder(tmp_path)
        time.sleep(2)
        assert extra.poll() is None  # waiting: every GPU is taken
        freed = holders[1]
        _release(freed)
        assert _claimed(extra) in range(COUNT)
        _release(extra)
        said = extra.stderr.read()
        assert said.count("waiting up to 60 s") == 1 and str(tmp_path) in said  # once, and why
    finally:
        _release(*holders)


def test_a_killed_holder_frees_its_gpu(tmp_path):
    holders = [_holder(tmp_path) for _ in range(COUNT)]
    try:
        claimed = [_claimed(holder) for holder in holders]
        holders[0].send_signal(signal.SIGKILL)
        holders[0].wait()
        late = _holder(tmp_path, wait=0)  # no waiting: the kill itself must have freed it
        assert _claimed(late) == claimed[0]
        _release(late)
    finally:
        _release(*holders)


def test_a_wait_that_runs_out_names_the_lock_directory_and_the_holder(tmp_path):
    holder = _holder(tmp_path)
    try:
        _claimed(holder)
        started = time.monotonic()
        with pytest.raises(PartError) as failure:
            claim_gpu(1, tmp_path, wait=0.5)
        assert time.monotonic() - started < 10
        message = str(failure.value)
        assert str(tmp_path) in message and f"pid {holder.pid}" in message
        assert gpu_claim.WAIT_ENV in message
    finally:
        _release(holder)


def test_claiming_twice_in_one_process_keeps_the_same_gpu(tmp_path):
    first = claim_gpu(COUNT, tmp_path, wait=0)
    assert claim_gpu(COUNT, tmp_path, wait=0) == first
    other = _holder(tmp_path, wait=0)  # the rest are still free for others
    try:
        assert _claimed(other) != first
    finally:
        _release(other)


def test_the_only_gpu_is_never_claimed(tmp_path):
    assert auto_gpu_index(1, tmp_path, wait=0, env={}) is None
    assert not list(tmp_path.iterdir())  # no lock taken or even created


def test_a_multi_process_job_claims_its_ranks_gpus_so_a_second_job_cannot_share_them(tmp_path):
    """Rank 2 of a 4-process torchrun job takes cuda:2 and holds it: a second job's rank 2
    does not land on it too (it waits, and fails after the wait, naming the holder)."""
    ranks = {"LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "4"}
    holder = _holder(tmp_path)  # another process: claims the first free GPU, 0
    try:
        assert _claimed(holder) == 0
        assert auto_gpu_index(4, tmp_path, wait=0, env=ranks) == 2  # free: taken and held
        second_job = subprocess.run(
            [sys.executable, "-c", "from part.runtime.gpu_claim import auto_gpu_index; "
             f"auto_gpu_index(4, {str(tmp_path)!r}, wait=0, env={ranks!r})"],
            capture_output=True, text=True, cwd=ROOT)
        assert second_job.returncode != 0 and "LOCAL_RANK 2" in second_job.stderr
        assert str(os.getpid()) in second_job.stderr  # names who holds it
    finally:
        _release(holder)
    with pytest.raises(PartError, match="nproc_per_node to at most 2"):
        auto_gpu_index(2, tmp_path, wait=0, env=ranks)


def test_a_torchrun_of_one_process_per_machine_claims_like_a_plain_process(tmp_path):
    # dvc.yaml starts burn-in, masks and training through torchrun even for one process
    single = {"LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "WORLD_SIZE": "1"}
    holder = _holder(tmp_path)
    try:
        taken = _claimed(holder)
        assert auto_gpu_index(COUNT, tmp_path, wait=0, env=single) != taken
    finally:
        _release(holder)


def test_device_auto_claims_and_a_named_gpu_does_not(tmp_path, monkeypatch):
    monkeypatch.setenv(gpu_claim.LOCK_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: COUNT)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert not list(tmp_path.iterdir())
    holder = _holder(tmp_path)
    try:
        taken = _claimed(holder)
        device = resolve_device("auto")
        assert device.type == "cuda" and device.index != taken
    finally:
        _release(holder)


def test_lock_names_are_the_machines_gpu_ids(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5")
    assert visible_gpu_ids(2) == ["3", "5"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_gpu_ids(2) == ["0", "1"]


def test_a_bad_wait_setting_says_what_to_set(monkeypatch):
    monkeypatch.setenv(gpu_claim.WAIT_ENV, "an hour")
    with pytest.raises(PartError, match="PART_GPU_WAIT_SECONDS='an hour' is not a number"):
        wait_seconds()
    monkeypatch.setenv(gpu_claim.WAIT_ENV, "-5")
    with pytest.raises(PartError, match="0 or more seconds"):
        wait_seconds()


def test_an_unusable_lock_directory_says_what_to_set(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PartError, match=f"{gpu_claim.LOCK_DIR_ENV} to a writable directory"):
        claim_gpu(COUNT, blocker / "locks", wait=0)
