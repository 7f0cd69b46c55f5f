"""Shared tiny runs: the default tiny pipeline (tests/_project.py, TINY) is built and repro'd
once per test process, and the files that need it take a copy.

`tiny_repro` is the committed result of that first `dvc repro`: read it, never change it.
`tiny_project` is one copy of it, cache included, that tests may change (run experiments in,
reset afterwards); `experiment_alone` runs an `eps_low` experiment there once and hands every
test that asks for it the same result. Under pytest-xdist the files that use them form one
group, which one worker runs (pytest_xdist_make_scheduler, below), so that it builds them once.

Every test process, and every process a test starts, computes on one thread: the tiny models
gain nothing from more, and two workers on a 2-core machine, each with a thread per core, would
oversubscribe it (OpenMP threads then spin on each other, an order of magnitude slower). A run
compares only with runs of the same process settings, so one thread changes no check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from _project import ALL_STAGES, commit, make_project, ran, run

TINY_GROUP = "tiny_repro"


def pytest_configure(config) -> None:
    for threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before any test imports torch
        os.environ[threads] = "1"


@pytest.fixture(scope="session")
def tiny_repro(tmp_path_factory) -> Path:
    repo = make_project(tmp_path_factory.mktemp("tiny") / "repo")
    first = run(["dvc", "repro"], repo)
    assert ran(first) == ALL_STAGES, first.stdout
    commit(repo, "first repro")
    return repo


def copy_project(source: Path, target: Path) -> Path:
    """A working copy of a tiny project as it stands, its git history and DVC cache included."""
    shutil.copytree(source, target, symlinks=True)
    return target


@pytest.fixture(scope="session")
def tiny_project(tiny_repro, tmp_path_factory) -> Path:
    return copy_project(tiny_repro, tmp_path_factory.mktemp("tiny_project") / "repo")


@dataclass(frozen=True)
class Experiment:
    """`dvc exp run -S eps_low=...` as it ran in tiny_project: its output and the metrics
    file it wrote."""

    result: subprocess.CompletedProcess
    part_metrics: bytes


@pytest.fixture(scope="session")
def experiment_alone(tiny_project) -> Callable[[str], Experiment]:
    done: dict[str, Experiment] = {}

    def experiment(eps_low: str) -> Experiment:
        if eps_low not in done:
            result = run(["dvc", "exp", "run", "-S", f"eps_low={eps_low}"], tiny_project)
            metrics = (tiny_project / "metrics/part-0.json").read_bytes()
            run(["git", "checkout", "--", "."], tiny_project)
            run(["dvc", "checkout", "-q"], tiny_project, check=False)
            done[eps_low] = Experiment(result, metrics)
        return done[eps_low]

    return experiment


# Files whose tests share a session fixture run in one worker: one group.
SHARED_GROUPS = {"test_pipeline": TINY_GROUP, "test_sweep": TINY_GROUP}
# The groups that take longest, longest first (bench/results/cpu-2core-make-test-*.json): run
# with --no-loadscope-reorder, xdist hands them out in this order, so that no long group starts
# last while the other worker idles.
LONGEST_FIRST = (TINY_GROUP, "test_caching", "test_study_pipeline", "test_ddp_equivalence",
                 "test_distributed", "test_multinode", "test_evaluate", "test_fast_paths",
                 "test_full_disk", "test_bench_gpu", "test_device_check")


def group_of(nodeid: str) -> str:
    """A test's group: its file's (module) name, or the group its file shares."""
    stem = Path(nodeid.split("::", 1)[0]).stem
    return SHARED_GROUPS.get(stem, stem)


def pytest_collection_modifyitems(items) -> None:
    """The longest groups first (see LONGEST_FIRST); within a group, the order of collection."""
    def rank(item) -> int:
        group = group_of(item.nodeid)
        return LONGEST_FIRST.index(group) if group in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: without it, never called
def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist (`make test`: -n 2), each group's tests go to one worker, so a file's
    module-scoped fixtures and a group's session fixtures are built once. (xdist's own
    `--dist loadgroup` renames node ids in a way pytest 9.2 ignores; this does not rely on it.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return ByGroup(config, log)
