"""Sweeps: `dvc queue start --jobs 2` runs two queued experiments at once on this CPU, and each
gets the metrics it gets when run alone; `dvc exp show` lists both; killing one experiment's
worker loses that experiment only."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from _project import commit, make_project, run

pytestmark = pytest.mark.slow

def _scores(metrics: dict) -> dict:
    """Every figure of a metrics file and the sha256 of the checkpoint it scored: the same
    computation gives the same bytes, so an experiment run beside another must match exactly."""
    assert "NaN" not in json.dumps(metrics)
    return {key: value for key, value in metrics.items()
            if isinstance(value, float | int) or key == "checkpoint_sha256"}


def _experiments(repo: Path) -> dict[str, dict]:
    """name -> metrics/part-0.json of each experiment dvc exp show lists."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    found = {}
    for commit_entry in shown:
        for experiment in commit_entry.get("experiments") or []:
            for revision in experiment.get("revs", []):
                data = revision.get("data") or {}
                name = revision.get("name") or experiment.get("name")
                metrics = (data.get("metrics") or {}).get("metrics/part-0.json", {})
                if name and metrics.get("data"):
                    found[name] = metrics["data"]
    return found


def _wait_for(repo: Path, names: set[str], timeout: float = 900) -> str:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], repo).stdout
        rows = [line for line in status.splitlines() if any(n in line for n in names)]
        if rows and all(("Success" in row or "Failed" in row) for row in rows) \
                and len(rows) >= len(names):
            return status
        time.sleep(2)
    raise AssertionError(f"the queue did not finish:\n{status}")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = make_project(tmp_path_factory.mktemp("sweep"))
    run(["dvc", "repro"], repo)
    commit(repo, "the baseline run")
    return repo


def test_two_queued_experiments_at_once_give_their_alone_metrics(repo):
    for name, low in (("low6", "6/255"), ("low5", "5/255")):
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"eps_low={low}"], repo)
    run(["dvc", "queue", "start", "--jobs", "2"], repo)
    status = _wait_for(repo, {"low6", "low5"})
    assert status.count("Success") >= 2, status
    swept = _experiments(repo)
    assert {"low6", "low5"} <= swept.keys(), swept.keys()
    for name, low in (("low6", "6/255"), ("low5", "5/255")):
        run(["dvc", "exp", "run", "-S", f"eps_low={low}"], repo)  # alone, in the workspace
        alone = json.loads((repo / "metrics/part-0.json").read_text())
        assert _scores(swept[name]) == _scores(alone), name
        assert _scores(alone), alone


def test_a_killed_experiment_loses_only_itself(repo):
    for name, low in (("low4", "4/255"), ("low3", "3/255")):
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"eps_low={low}"], repo)
    run(["dvc", "queue", "start", "--jobs", "2"], repo)
    deadline = time.monotonic() + 300
    while "low3" not in run(["dvc", "queue", "status"], repo).stdout.split("Running")[0] \
            and time.monotonic() < deadline:
        time.sleep(0.5)
    while time.monotonic() < deadline:
        rows = [line for line in run(["dvc", "queue", "status"], repo).stdout.splitlines()
                if "Running" in line]
        if len(rows) == 2:
            break
        time.sleep(0.5)
    run(["dvc", "queue", "kill", "-f", "low3"], repo)
    status = _wait_for(repo, {"low4", "low3"})
    rows = {name: next(line for line in status.splitlines() if name in line)
            for name in ("low4", "low3")}
    assert "Success" in rows["low4"] and "Success" not in rows["low3"], status
    swept = _experiments(repo)
    assert "low4" in swept and "low3" not in swept
    run(["dvc", "exp", "run", "-S", "eps_low=4/255"], repo)
    alone = json.loads((repo / "metrics/part-0.json").read_text())
    assert _scores(swept["low4"]) == _scores(alone)
