"""The training and mask stages under torchrun with 2 gloo processes on the CPU: they complete,
PART with eps_low == eps is the baseline bit for bit, a rerun repeats bit for bit, and a rank
killed mid-epoch fails the stage with nothing half-written, after which the rerun resumes."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import psutil
import pytest
import torch
from _project import make_project, ran, run, start

from part.models.checkpoint import load_checkpoint
from part.runtime.distributed import World

pytestmark = pytest.mark.slow
TWO_RANKS = {"distributed": {"nproc_per_node": 2}, "eps_low": "8/255", "epochs": 3,
             "variants": ["baseline", "part"]}


def test_shares_cover_a_batch_in_order_and_differ_by_at_most_one():
    for count in (1, 2, 7, 128):
        for size in (1, 2, 3):
            shares = [World(rank, size).share(count) for rank in range(size)]
            assert [i for share in shares for i in range(count)[share]] == list(range(count))
            lengths = [share.stop - share.start for share in shares]
            assert max(lengths) - min(lengths) <= 1


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    repo = make_project(tmp_path_factory.mktemp("ddp"), **TWO_RANKS)
    result = run(["dvc", "repro", "train@baseline-0", "train@part-0", "masks@0"], repo)
    assert {"burnin@0", "masks@0", "train@baseline-0", "train@part-0"} <= ran(result)
    return repo


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _weights(path: Path) -> dict[str, torch.Tensor]:
    model, _ = load_checkpoint(path)
    return model.state_dict()


def test_part_with_eps_low_equal_to_eps_is_the_baseline_bit_for_bit(project):
    baseline = _weights(project / "models/baseline-0.safetensors")
    part = _weights(project / "models/part-0.safetensors")
    assert baseline.keys() == part.keys()
    assert all(torch.equal(baseline[key], part[key]) for key in baseline)
    assert (project / "masks/burnin-0.safetensors").is_file()


def test_a_two_process_rerun_repeats_bit_for_bit(project):
    outputs = ("models/burnin-0.safetensors", "models/baseline-0.safetensors",
               "masks/burnin-0.safetensors")
    before = {path: _md5(project / path) for path in outputs}
    for stage in ("burnin@0", "masks@0", "train@baseline-0"):
        run(["dvc", "repro", "--force", "--single-item", stage], project)
    assert {path: _md5(project / path) for path in outputs} == before


def _rank(process: psutil.Process, rank: str) -> psutil.Process | None:
    for child in process.children(recursive=True):
        try:
            if child.environ().get("RANK") == rank and "stages.train" in " ".join(
                    child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


def test_a_killed_rank_fails_the_stage_cleanly_and_the_rerun_resumes(project):
    model = project / "models/baseline-0.safetensors"
    reference = _md5(model)
    state = project / "runs/baseline-0.safetensors"
    process = start(project, ["dvc", "repro", "--force", "--single-item", "train@baseline-0"])
    deadline = time.monotonic() + 300
    while not state.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert state.exists(), "the first epoch never finished"
    victim = _rank(psutil.Process(process.pid), "1")
    assert victim is not None
    victim.kill()
    assert process.wait(timeout=300) != 0  # the stage failed
    assert not model.exists()  # DVC removed the old output; no half-written new one
    assert not list(project.glob("models/*.tmp*"))

    # forced: the interrupted computation itself must finish, not DVC check the earlier output
    # out of its cache
    resumed = run(["dvc", "repro", "--force", "--single-item", "train@baseline-0"], project)
    assert "resuming after epoch 2" in resumed.stdout + resumed.stderr
    assert _md5(model) == reference  # the same bytes as the uninterrupted run
