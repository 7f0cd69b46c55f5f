"""Several machines, stood in for by two torchrun launches on this one (`--nnodes 2`, a static
rendezvous on localhost), each in its own working copy, as two machines each have theirs. Only
rank 0 (node 0) writes `runs/`; after an interruption node 0 has a resume state and node 1 none,
and the rerun resumes on both (rank 0 decides and sends the state) and ends with the
uninterrupted run's bytes. A node that lacks an input fails the stage on every rank with one
message naming the file and the node."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from _project import make_project, run, user_env

pytestmark = pytest.mark.slow

STAGE = ["-m", "stages.train", "baseline", "--seed", "0"]
MODEL = Path("models/baseline-0.safetensors")
STATE = Path("runs/baseline-0.safetensors")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch(nodes: tuple[Path, Path]) -> list[subprocess.Popen]:
    port = _free_port()
    launches = []
    for rank, copy in enumerate(nodes):
        command = ["python", "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank",
                   str(rank), "--nproc-per-node", "1", "--master-addr", "127.0.0.1",
                   "--master-port", str(port), *STAGE]
        launches.append(subprocess.Popen(command, cwd=copy, env=user_env(), text=True,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         start_new_session=True))
    return launches


def _finish(launches: list[subprocess.Popen], timeout: float = 120) -> list[tuple[int, str]]:
    results = []
    for launch in launches:
        try:
            output, _ = launch.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:  # a hang (ranks waiting on each other) is a failure
            os.killpg(launch.pid, signal.SIGKILL)
            output, _ = launch.communicate()
            output += "\n<killed after the timeout>"
        results.append((launch.returncode, output))
    return results


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("nodes")
    first = make_project(root / "node0", epochs=3)
    for command in (["python", "-m", "stages.prepare"], ["python", "-m", "stages.budgets"],
                    ["python", "-m", "part.launch", "--nproc-per-node", "1", "--device", "cpu",
                     "-m", "stages.burnin", "--seed", "0"]):
        run(command, first)
    second = root / "node1"
    shutil.copytree(first, second)  # the other machine's own copy of code, data and burn-in
    return first, second


def test_an_interrupted_two_node_run_resumes_as_rank_0_decides(nodes):
    first, second = nodes
    results = _finish(_launch(nodes))
    assert all(code == 0 for code, _ in results), results
    reference = _md5(first / MODEL)
    assert not (second / MODEL).exists() and not (second / STATE).exists()  # rank 0 writes

    (first / MODEL).unlink()
    launches = _launch(nodes)
    deadline = time.monotonic() + 300
    while not (first / STATE).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (first / STATE).exists(), "the first epoch never finished"
    for launch in launches:
        os.killpg(launch.pid, signal.SIGKILL)
    _finish(launches)
    assert not (second / STATE).exists()  # node 1 has nothing to resume from

    results = _finish(_launch(nodes))
    assert all(code == 0 for code, _ in results), results
    assert "resuming after epoch 2" in results[0][1]
    assert _md5(first / MODEL) == reference


def test_a_node_missing_an_input_fails_the_stage_naming_the_file_and_the_node(nodes):
    first, second = nodes
    (second / "models/burnin-0.safetensors").unlink()
    results = _finish(_launch(nodes))
    assert all(code != 0 for code, _ in results), results
    for _, output in results:  # every rank says the same, whichever torchrun reports
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert errors and "models/burnin-0.safetensors on node 1" in errors[0], output[-2000:]
