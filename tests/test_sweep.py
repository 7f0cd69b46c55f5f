"""Sweeps: `dvc queue start --jobs 2` runs two queued experiments at once on this CPU, and each
gets the metrics it gets when run alone; `dvc exp show` lists both; killing one experiment's
worker loses that experiment only."""

from __future__ import annotations

import json
import shutil
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


def _rows(repo: Path, names: set[str]) -> dict[str, str]:
    """name -> its row of `dvc queue status`."""
    status = run(["dvc", "queue", "status"], repo).stdout
    return {name: line for line in status.splitlines() for name in names
            if line.split()[:2] and name in line.split()[:2]}


def _wait_for(repo: Path, names: set[str], timeout: float = 900) -> dict[str, str]:
    """The queue rows of `names` once none of them is queued or running any more."""
    deadline = time.monotonic() + timeout
    rows: dict[str, str] = {}
    while time.monotonic() < deadline:
        rows = _rows(repo, names)
        if rows.keys() == names and not any(
                word in row for row in rows.values() for word in ("Queued", "Running")):
            return rows
        time.sleep(2)
    raise AssertionError(f"the queue did not finish: {rows}")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = make_project(tmp_path_factory.mktemp("sweep") / "queued")
    run(["dvc", "repro"], repo)
    commit(repo, "the baseline run")
    return repo


@pytest.fixture(scope="module")
def alone(repo) -> Path:
    """A copy of the repository, cache included, in which experiments run one at a time: its
    run-cache never holds what the queue computed, so each runs for real."""
    copy = repo.parent / "alone"
    shutil.copytree(repo, copy)
    return copy


def _alone(alone: Path, low: str) -> dict:
    run(["dvc", "exp", "run", "-S", f"eps_low={low}"], alone)
    return json.loads((alone / "metrics/part-0.json").read_text())


def test_two_queued_experiments_at_once_give_their_alone_metrics(repo, alone):
    for name, low in (("low6", "6/255"), ("low5", "5/255")):
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"eps_low={low}"], repo)
    run(["dvc", "queue", "start", "--jobs", "2"], repo)
    rows = _wait_for(repo, {"low6", "low5"})
    assert all("Success" in row for row in rows.values()), rows
    swept = _experiments(repo)
    assert {"low6", "low5"} <= swept.keys(), swept.keys()
    for name, low in (("low6", "6/255"), ("low5", "5/255")):
        by_itself = _alone(alone, low)
        assert _scores(by_itself)
        assert _scores(swept[name]) == _scores(by_itself), name


def test_a_killed_experiment_loses_only_itself(repo, alone):
    for name, low in (("low4", "4/255"), ("low3", "3/255")):
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"eps_low={low}"], repo)
    run(["dvc", "queue", "start", "--jobs", "2"], repo)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # both running at once: then one is killed
        rows = _rows(repo, {"low4", "low3"})
        if len(rows) == 2 and all("Running" in row for row in rows.values()):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"the two experiments never ran at once: {rows}")
    run(["dvc", "queue", "kill", "-f", "low3"], repo)
    rows = _wait_for(repo, {"low4", "low3"})
    assert "Success" in rows["low4"] and "Success" not in rows["low3"], rows
    swept = _experiments(repo)
    assert "low4" in swept and "low3" not in swept
    assert _scores(swept["low4"]) == _scores(_alone(alone, "4/255"))
