"""The device check (scripts/device_check.sh) runs here on the CPU as it will on a GPU machine:
its CUDA parts are reported skipped, the others run at CPU sizes, and its report keeps every
part's result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from part.runtime.device_check import DeviceCheck, Outcome, install

ROOT = Path(__file__).resolve().parents[1]


def _check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/device_check.sh", *args], cwd=ROOT,
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable})


@pytest.mark.slow
def test_the_cpu_run_skips_the_cuda_parts_and_runs_the_rest(tmp_path):
    out = tmp_path / "check"
    started = time.monotonic()
    result = _check(str(out))
    wall = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "device_check.json").read_text())
    parts = report["parts"]
    assert list(parts) == ["install", "versions", "cuda_tests", "repro", "rerun", "compiled",
                           "bench"]
    assert report["cuda"] is False and report["ok"] is True
    assert parts["install"]["status"] == "skipped"  # this environment has every package
    assert parts["cuda_tests"] == {**parts["cuda_tests"], "status": "skipped",
                                   "why": "no CUDA device"}
    assert parts["compiled"]["status"] == "skipped"  # CI compiles training in test_train.py
    assert parts["versions"]["torch"] and parts["versions"]["cuda_available"] is False
    assert parts["repro"]["status"] == "ok"
    assert parts["repro"]["params"]["model"] == "cnn_small"
    metrics = parts["repro"]["metrics"]["part-0.json"]
    # the accuracies themselves, on as many examples as the tiny study evaluates
    for attack in ("natural", "pgd20", "autoattack"):
        assert 0.0 <= metrics[attack] <= 1.0 and metrics[f"n_{attack}"] > 0, (attack, metrics)
    assert metrics["pgd20"] <= metrics["natural"] + 1 / metrics["n_pgd20"], metrics
    assert parts["rerun"]["status"] == "ok" and parts["rerun"]["same_bytes"] is True
    assert parts["rerun"]["md5_first"] == parts["rerun"]["md5_rerun"] == parts["repro"]["md5"]
    assert parts["bench"]["status"] == "ok" and parts["bench"]["failed"] == []
    for name in ("repro", "rerun", "bench"):
        assert (out / parts[name]["log"]).read_text().strip()
    assert all(part["seconds"] <= part["budget_s"] + 5 for part in parts.values())
    assert report["wall_s"] <= wall and wall < 240


@pytest.mark.parametrize("args", [[], ["--budget", "10"], ["out", "--budget", "soon"],
                                  ["out", "--budget", "-1"]])
def test_a_bad_command_line_is_one_message_and_exit_2(args):
    result = _check(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "usage" in result.stderr or "--budget must be" in result.stderr


def test_a_failing_part_is_kept_and_the_next_still_runs(tmp_path):
    check = DeviceCheck(tmp_path, 60)
    check.report["cuda"] = False

    def broken(budget):
        raise RuntimeError("driver gone")

    assert check.part("versions", broken) == "failed"
    assert check.part("bench", lambda budget: Outcome("ok", {"figures": 1})) == "ok"
    assert check.part("cuda_tests", broken, needs_cuda=True) == "skipped"
    report = json.loads((tmp_path / "device_check.json").read_text())
    assert report["parts"]["versions"]["error"] == "RuntimeError: driver gone"
    assert report["parts"]["bench"]["figures"] == 1
    check.deadline = time.monotonic() + 3  # too little left to start a part
    assert check.part("repro", lambda budget: Outcome("ok", {})) == "not_run"


def test_a_part_out_of_time_is_interrupted_first_so_it_writes_what_it_has(tmp_path):
    """pytest writes its junit file on an interrupt, never on a kill: a timed-out part is
    interrupted before its limit and killed at it."""
    check = DeviceCheck(tmp_path, 60)
    written = tmp_path / "partial.txt"
    script = ("import pathlib, signal, sys, time\n"
              "def stop(*_):\n"
              f"    pathlib.Path({str(written)!r}).write_text('what it had')\n"
              "    sys.exit(1)\n"
              "signal.signal(signal.SIGINT, stop)\n"
              "time.sleep(60)\n")
    started = time.monotonic()
    outcome = check.command("slow", [sys.executable, "-c", script], 4.0)
    assert outcome.status == "timed_out" and time.monotonic() - started < 8
    assert written.read_text() == "what it had"


def test_the_install_retry_has_what_is_left_of_the_install_budget(tmp_path, monkeypatch):
    import part.runtime.device_check as device_check

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "dvc-3.0-py3-none-any.whl").write_bytes(b"")
    monkeypatch.setattr(device_check, "WHEELS", wheels)
    monkeypatch.setattr(device_check, "missing_packages", lambda: ["dvc"])
    check = DeviceCheck(tmp_path / "out", 1000)
    budgets = []

    def refused(name, args, budget, cwd=None):
        budgets.append(budget)
        (check.out / "install.log").write_text("error: externally-managed-environment\n")
        return Outcome("failed", {"exit_status": 1})

    monkeypatch.setattr(check, "command", refused)
    install(check, 60.0)
    assert len(budgets) == 2 and budgets[0] == 60.0 and 0 < budgets[1] <= 60.0, budgets
