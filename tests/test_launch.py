"""part.launch, the stages' command: a job of N processes on GPUs claims N GPUs as one set
before torchrun starts (faked GPU counts on the CPU, as in test_gpu_claim), so two such jobs
never share a GPU; fewer GPUs than processes, or one named GPU for several, fail at once; the
claim passes to torchrun through exec and ends with it, a kill included; and each rank then
takes its own GPU of the set."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from part.errors import PartError
from part.runtime import gpu_claim, launch
from part.runtime.device import resolve_device
from part.runtime.gpu_claim import auto_gpu_index

ROOT = Path(__file__).resolve().parents[1]

# Claims a set of 2 of 4 faked GPUs through the launcher's own function, prints the visible
# set it would give torchrun, then holds it until stdin closes.
HOLDER = textwrap.dedent("""
    import sys
    from part.runtime import launch
    launch._visible_gpu_count = lambda: 4
    env = launch.gpu_environment(2, "auto", {})
    print(env["CUDA_VISIBLE_DEVICES"], flush=True)
    sys.stdin.read()
""")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_claim, "_held", {})
    monkeypatch.setenv(gpu_claim.LOCK_DIR_ENV, str(tmp_path / "locks"))
    monkeypatch.setenv(gpu_claim.WAIT_ENV, "0")
    for key in ("CUDA_VISIBLE_DEVICES", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "WORLD_SIZE",
                gpu_claim.CLAIMED_ENV):
        monkeypatch.delenv(key, raising=False)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _holder() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())


def test_two_jobs_get_disjoint_sets_and_a_third_fails_naming_the_holders(monkeypatch):
    monkeypatch.setattr(launch, "_visible_gpu_count", lambda: 4)
    # one after the other: two claims racing may interleave GPU by GPU ({0,2} and {1,3}), as
    # disjoint, but not the sets this test names
    first = _holder()
    first_set = first.stdout.readline().strip()
    second = _holder()
    try:
        sets = {first_set, second.stdout.readline().strip()}
        assert sets == {"0,1", "2,3"}, (sets, first.stderr, second.stderr)
        with pytest.raises(PartError, match="fewer than 2 of the 4 GPUs are free") as error:
            launch.gpu_environment(2, "auto", {})
        assert f"pid {first.pid}" in str(error.value) and f"pid {second.pid}" in str(error.value)
        # a set is all or nothing: the failed claim holds no GPU
        assert gpu_claim._held == {}
    finally:
        for holder in (first, second):
            holder.stdin.close()
            holder.wait(timeout=30)


def test_a_killed_job_frees_its_set(monkeypatch):
    monkeypatch.setattr(launch, "_visible_gpu_count", lambda: 2)
    holder = _holder()
    assert holder.stdout.readline().strip() == "0,1"
    with pytest.raises(PartError):
        launch.gpu_environment(2, "auto", {})
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert launch.gpu_environment(2, "auto", {})["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_fewer_gpus_than_processes_or_one_named_gpu_fail_at_once(monkeypatch, tmp_path):
    monkeypatch.setattr(launch, "_visible_gpu_count", lambda: 1)
    with pytest.raises(PartError, match="nproc_per_node is 2 but only 1 GPU"):
        launch.gpu_environment(2, "auto", {})
    with pytest.raises(PartError, match="names one GPU for distributed.nproc_per_node 2"):
        launch.gpu_environment(2, "cuda:0", {})
    assert not (tmp_path / "locks").exists()  # nothing claimed, nothing waited for


def test_one_process_or_the_cpu_claims_nothing_here(monkeypatch, tmp_path):
    monkeypatch.setattr(launch, "_visible_gpu_count", lambda: 4)
    assert launch.gpu_environment(1, "auto", {"A": "1"}) == {"A": "1"}
    assert launch.gpu_environment(4, "cpu", {"A": "1"}) == {"A": "1"}
    assert not (tmp_path / "locks").exists()


def test_the_claim_passes_to_torchrun_and_each_rank_takes_its_own_gpu_of_it(tmp_path):
    """The launcher execs torchrun holding the set; its ranks see exactly the set and find its
    lock files held (by torchrun, not by them)."""
    probe = tmp_path / "rank_probe.py"
    probe.write_text(textwrap.dedent(f"""
        import fcntl, os
        from part.runtime.gpu_claim import auto_gpu_index
        mine = os.environ["CUDA_VISIBLE_DEVICES"].split(",")[int(os.environ["LOCAL_RANK"])]
        lock = open({str(tmp_path / 'locks')!r} + f"/gpu-{{mine}}.lock", "a+b")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = False
        except BlockingIOError:
            held = True
        index = auto_gpu_index(2)
        print("rank", os.environ["LOCAL_RANK"], os.environ["CUDA_VISIBLE_DEVICES"], index,
              held, flush=True)
    """))
    script = ("import sys; from part.runtime import launch; launch._visible_gpu_count = lambda: 3; "
              "launch.main(sys.argv[1:])")
    env = {**_env(), "PYTHONPATH": f"{ROOT}:{tmp_path}", "CUDA_VISIBLE_DEVICES": "4,6,7",
           gpu_claim.LOCK_DIR_ENV: str(tmp_path / "locks")}
    result = subprocess.run([sys.executable, "-c", script, "--nproc-per-node", "2", "--device",
                             "auto", "-m", "rank_probe"], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = sorted(line for line in result.stdout.splitlines() if line.startswith("rank"))
    # GPUs 4 and 6 of the machine (its ids), each rank its own, both held by the job
    assert lines == ["rank 0 4,6 0 True", "rank 1 4,6 1 True"], result.stdout
    # torchrun has ended: the set is free again
    lock = open(tmp_path / "locks" / "gpu-4.lock", "a+b")  # noqa: SIM115
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    lock.close()


def test_a_rank_of_several_per_machine_never_shares_a_gpu(monkeypatch):
    ranks = {"LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2"}
    with pytest.raises(PartError, match="only 1 GPU"):
        auto_gpu_index(1, env=ranks)  # one visible GPU: every rank would get it
    for key, value in ranks.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    assert resolve_device("cuda") == torch.device("cuda:1")  # not cuda:0 for every rank
    with pytest.raises(PartError, match="names one GPU for the 2 processes"):
        resolve_device("cuda:0")


def test_bad_launcher_arguments_say_what_to_set():
    result = subprocess.run([sys.executable, "-m", "part.launch", "--nproc-per-node", "zero",
                             "-m", "stages.train"], capture_output=True, text=True, env=_env())
    assert result.returncode == 2
    assert "distributed.nproc_per_node" in result.stderr and "Traceback" not in result.stderr


# Prints what the process that runs the stage module has loaded.
IN_PROCESS_PROBE = textwrap.dedent("""
    import os, sys
    print("probe", os.getpid(), "part.ui" in sys.modules,
          "torch.distributed.run" in sys.modules, "torch" in sys.modules, sys.argv[1:],
          flush=True)
""")


def test_one_process_runs_the_module_in_the_launchers_own_process_without_torchrun(tmp_path):
    (tmp_path / "launch_probe.py").write_text(IN_PROCESS_PROBE)
    env = {**_env(), "PYTHONPATH": f"{ROOT}:{tmp_path}"}
    process = subprocess.Popen([sys.executable, "-m", "part.launch", "--nproc-per-node", "1",
                                "--device", "cpu", "-m", "launch_probe", "--seed", "3"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, cwd=tmp_path)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    # the launcher's own pid and its modules (part.ui): no torchrun, no elastic agent, no torch
    assert stdout.split() == ["probe", str(process.pid), "True", "False", "False", "['--seed',",
                              "'3']"], stdout


def _params_with(directory: Path, **overrides: str) -> None:
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(device="cpu", **overrides)
    (directory / "params.yaml").write_text(yaml.safe_dump(params))


# (params overrides, what the message must say): a bad param, and an input not made yet
FAILURES = {"bad param": ({"model": "nosuch"}, "model: 'nosuch' is not one of"),
            "missing input": ({}, "missing input file(s): data/prepared/train.safetensors")}


@pytest.mark.parametrize("nproc", [1, 2])
@pytest.mark.parametrize("failure", FAILURES)
def test_an_expected_failure_is_one_message_per_process_and_exit_2_with_no_traceback(
        tmp_path, nproc, failure):
    overrides, said = FAILURES[failure]
    _params_with(tmp_path, **overrides)
    result = subprocess.run([sys.executable, "-m", "part.launch", "--nproc-per-node",
                             str(nproc), "--device", "cpu", "-m", "stages.burnin", "--seed", "0"],
                            capture_output=True, text=True, env=_env(), cwd=tmp_path,
                            timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Traceback" not in output and "ChildFailedError" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == lines, output[-3000:]  # nothing but the messages
    assert all(said in line for line in errors), errors
    if nproc == 1:
        assert len(errors) == 1
    else:  # each rank's own message, then the one line that names the rank that failed
        assert len(errors) == nproc + 1
        assert re.match(r"error: rank [01] of 2 failed with exit code 2: ", errors[-1]), errors


def test_a_killed_rank_is_named_in_one_line(tmp_path):
    (tmp_path / "dying_rank.py").write_text(textwrap.dedent("""
        import os, signal, time
        if os.environ["RANK"] == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
    """))
    env = {**_env(), "PYTHONPATH": f"{ROOT}:{tmp_path}"}
    result = subprocess.run([sys.executable, "-m", "part.launch", "--nproc-per-node", "2",
                             "--device", "cpu", "-m", "dying_rank"], capture_output=True,
                            text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    output = (result.stdout + result.stderr).strip()
    assert output == "error: rank 1 of 2 was killed by SIGKILL", output
