"""GPU claiming for parallel jobs, on the CPU with a faked set of GPUs: concurrent processes get
distinct GPUs, one too many waits until a holder ends, a killed holder frees its GPU, and a
wait that runs out fails with a message that names the lock directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from part.errors import PartError
from part.gpu_claim import claim_gpu, visible_gpu_ids

ROOT = Path(__file__).resolve().parents[1]
GPUS = ["0", "1", "2"]

# Claims one of GPUS, prints its id, then holds it until stdin closes.
HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from part.gpu_claim import claim_gpu
    gpus = sys.argv[2].split(",")
    print(gpus[claim_gpu(gpus, Path(sys.argv[1]), wait=float(sys.argv[3]))], flush=True)
    sys.stdin.read()
""")


def _holder(lock_dir: Path, wait: float = 60) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_dir), ",".join(GPUS),
                             str(wait)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _claimed(process: subprocess.Popen) -> str:
    return process.stdout.readline().strip()


def _release(*processes: subprocess.Popen) -> None:
    for process in processes:
        if process.poll() is None:
            process.stdin.close()
        process.wait(timeout=30)


def test_concurrent_processes_get_distinct_gpus_and_one_too_many_waits(tmp_path):
    holders = [_holder(tmp_path) for _ in GPUS]
    try:
        assert sorted(_claimed(holder) for holder in holders) == GPUS
        extra = _holder(tmp_path)
        time.sleep(2)
        assert extra.poll() is None  # waiting: every GPU is taken
        _release(holders[1])
        assert _claimed(extra) in GPUS  # the freed one
        _release(extra)
    finally:
        _release(*holders)


def test_a_killed_holder_frees_its_gpu(tmp_path):
    holders = [_holder(tmp_path) for _ in GPUS]
    try:
        claimed = [_claimed(holder) for holder in holders]
        holders[0].send_signal(signal.SIGKILL)
        holders[0].wait()
        late = _holder(tmp_path)
        assert _claimed(late) == claimed[0]
        _release(late)
    finally:
        _release(*holders)


def test_a_wait_that_runs_out_names_the_lock_directory(tmp_path):
    holders = [_holder(tmp_path) for _ in GPUS[:1]]
    try:
        _claimed(holders[0])
        with pytest.raises(PartError, match=f"all 1 GPUs are claimed .*{tmp_path}"):
            claim_gpu(GPUS[:1], tmp_path, wait=0)
    finally:
        _release(*holders)


def test_lock_names_are_the_machines_gpu_ids(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5")
    assert visible_gpu_ids(2) == ["3", "5"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_gpu_ids(2) == ["0", "1"]
