"""Sweeps: `dvc queue start --jobs 2` on this CPU runs two queued experiments at once; one that
finishes gets exactly the metrics (and checkpoint) it gets when run alone, `dvc exp show` lists
them, and killing one running experiment loses that experiment only. One queue of three serves
it all: A and B start together, B is killed while both run, C then runs beside A."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from _project import run, start
from conftest import copy_project

pytestmark = pytest.mark.slow

QUEUED = {"a": "6/255", "b": "5/255", "c": "4/255"}  # name -> eps_low; b is killed


def _scores(metrics: dict) -> dict:
    """Every figure of a metrics file and the sha256 of the checkpoint it scored: the same
    computation gives the same bytes, so an experiment run beside another must match exactly."""
    assert "NaN" not in json.dumps(metrics)
    return {key: value for key, value in metrics.items()
            if isinstance(value, float | int) or key == "checkpoint_sha256"}


def _experiments(repo: Path) -> dict[str, dict]:
    """name -> metrics/part-0.json of each experiment `dvc exp show` lists as having run (a
    failed one is listed with its error and its parent commit's metrics)."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    found = {}
    for commit_entry in shown:
        for experiment in commit_entry.get("experiments") or []:
            for revision in experiment.get("revs", []):
                data = revision.get("data") or {}
                name = revision.get("name") or experiment.get("name")
                metrics = (data.get("metrics") or {}).get("metrics/part-0.json", {})
                if name and metrics.get("data") and not revision.get("error"):
                    found[name] = metrics["data"]
    return found


def _rows(repo: Path) -> dict[str, str]:
    """name -> its row of `dvc queue status`, for the queued experiments."""
    status = run(["dvc", "queue", "status"], repo).stdout
    return {name: line for line in status.splitlines() for name in QUEUED
            if name in line.split()[:2]}


def _wait(repo: Path, done, what: str, timeout: float = 600) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    rows: dict[str, str] = {}
    while time.monotonic() < deadline:
        rows = _rows(repo)
        if done(rows):
            return rows
        time.sleep(2)
    raise AssertionError(f"{what} never happened: {rows}")


@pytest.fixture(scope="module")
def swept(tiny_repro, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    # The shared tiny repro (conftest.py), copied, cache included. The experiments run alone
    # run in another copy (conftest's experiment_alone), whose run-cache never holds what the
    # queue computed, so they really run.
    repo = copy_project(tiny_repro, tmp_path_factory.mktemp("sweep") / "queued")
    for name, low in QUEUED.items():
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"eps_low={low}"], repo)
    # detached, not waited for: the workers it starts keep running after it returns
    start(repo, ["dvc", "queue", "start", "--jobs", "2"]).wait(timeout=120)
    _wait(repo, lambda rows: all("Running" in rows.get(name, "") for name in ("a", "b")),
          "a and b running at once")
    run(["dvc", "queue", "kill", "-f", "b"], repo)
    rows = _wait(repo, lambda rows: len(rows) == 3 and not any(
        state in row for row in rows.values() for state in ("Queued", "Running")),
        "the queue finishing")
    return repo, rows


def test_a_killed_experiment_loses_only_itself(swept):
    repo, rows = swept
    assert "Success" in rows["a"] and "Success" in rows["c"], rows
    assert "Success" not in rows["b"], rows
    listed = _experiments(repo)
    assert {"a", "c"} <= listed.keys() and "b" not in listed, listed.keys()
    assert "Experiment run failed" in run(["dvc", "exp", "show", "--json"], repo).stdout


def test_an_experiment_run_beside_another_gets_its_alone_metrics(swept, experiment_alone):
    """a ran beside b (until b was killed) and then beside c: its figures and checkpoint are
    those of the same experiment run alone (test_pipeline's, shared)."""
    repo, _ = swept
    by_itself = _scores(json.loads(experiment_alone(QUEUED["a"]).part_metrics))
    assert by_itself
    assert _scores(_experiments(repo)["a"]) == by_itself
