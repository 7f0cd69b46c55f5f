"""A cached result must be the result: byte-identical artifacts, no stale resume, complete code
deps, bytecode kept out of the hashes. A real `dvc repro` of a tiny copy of the project, run as a
user runs it (bytecode writing on, the copy's own code imported)."""

from __future__ import annotations

import hashlib
import random
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from _project import (
    ALL_STAGES,
    Repro,
    commit,
    is_up_to_date,
    kill,
    kill_once_written,
    locked_outs,
    make_project,
    ran,
    repro,
    run,
    start,
)

from part.io.paths import OWN_DATA_DIR, OWN_MODELS_DIR

pytestmark = pytest.mark.slow
# Two epochs of burn-in and two after it, so that a kill can land between epochs of a stage.
EPOCHS = {"epochs": 4, "burn_in_epochs": 2}
# The first repro as it ran: each stage's wall time and the project files each stage executed.
FIRST: dict[str, Repro] = {}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("caching")
    repo = make_project(root / "repo", **EPOCHS)
    first = repro(repo, record_imports=root / "imports")
    assert ran(first.result) == ALL_STAGES, first.result.stdout
    FIRST["repro"] = first
    commit(repo, "first repro")
    return repo


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _contents(repo: Path, outs: dict[str, str]) -> dict[str, str]:
    """md5 of every file of the outputs, a directory's (a DVCLive log's plots) file by file."""
    files = {}
    for out in outs:
        path = repo / out
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file():
                files[str(file.relative_to(repo))] = _md5(file)
    return files


def _restore(repo: Path) -> None:
    """Back to the committed code and outputs; everything up to date again."""
    run(["git", "checkout", "--", "."], repo)
    run(["dvc", "checkout", "-q", "--force"], repo, check=False)
    assert is_up_to_date(repo), run(["dvc", "status"], repo).stdout


def test_bytecode_written_by_the_run_does_not_dirty_the_cache(project):
    assert list((project / "part" / "models").glob("__pycache__/*.pyc")), \
        "the stages ran with bytecode writing off: this test proves nothing"
    assert is_up_to_date(project), run(["dvc", "status"], project).stdout


def test_a_finished_stage_leaves_no_resume_state(project):
    assert not list((project / "runs").glob("*.safetensors"))


# the training and evaluation stages: their forced reruns end the SIGKILL test below
@pytest.mark.parametrize("stage", ["prepare", "budgets"])
def test_a_forced_rerun_writes_the_same_bytes_and_dvc_sees_nothing_new(project, stage):
    before = locked_outs(project)
    files = _contents(project, before)
    result = run(["dvc", "repro", "--force", "--single-item", stage], project)
    assert ran(result) == {stage}
    assert locked_outs(project) == before
    assert _contents(project, before) == files
    assert is_up_to_date(project), run(["dvc", "status"], project).stdout


def _declared_code(repo: Path, stage: str) -> set[str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    declared: set[str] = set()
    for dep in lock["stages"][stage]["deps"]:
        path = repo / dep["path"]
        if Path(dep["path"]) in (OWN_MODELS_DIR, OWN_DATA_DIR):
            continue  # yours: executed where params name a model there (tests/test_own_model.py)
        if path.is_dir():
            declared |= {str(file.relative_to(repo)) for file in path.rglob("*.py")
                         if "__pycache__" not in file.parts}
        elif path.suffix == ".py":
            declared.add(dep["path"])
    return declared


def test_each_stage_declares_exactly_the_project_code_it_executes(project):
    """What each stage process of the first repro executed (recorded as it ran, by
    tests/import_recorder) against what its dvc.lock entry declares."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    recorded = {tuple(record["argv"]): record for record in FIRST["repro"].executed}
    for stage, entry in lock["stages"].items():
        words = entry["cmd"].split()
        assert words[0] == "python" and f"stages.{stage.split('@')[0]}" in words, words
        record = recorded.get(tuple(words[1:]))
        assert record is not None, f"{stage}: no process ran {entry['cmd']!r}"
        assert Path(record["cwd"]).resolve() == project.resolve()
        executed = set(record["files"])
        # the copy's own package ran, not an installed checkout's
        assert "part/__init__.py" in executed, executed
        declared = _declared_code(project, stage)
        assert executed == declared, (
            f"{stage}: executed but not declared {sorted(executed - declared)}; "
            f"declared but not executed {sorted(declared - executed)}")


def _kill_after(process: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    if process.poll() is None:
        kill(process)
    process.wait()


def test_a_code_change_retrains_from_the_first_epoch(project):
    state = project / "runs" / "burnin-0.safetensors"
    kill_once_written(project, ["dvc", "repro", "--force", "--single-item", "burnin@0"], state)

    with open(project / "part" / "attacks" / "linf.py", "a") as source:
        source.write("\n# a code change\n")
    result = run(["dvc", "repro", "burnin@0"], project)
    output = result.stdout + result.stderr
    assert "burnin@0" in ran(result) and "resuming" not in output
    logged = (project / "dvclive/burnin-0/plots/metrics/val_pgd.tsv").read_text()
    assert [line.split("\t")[0] for line in logged.splitlines()[1:]] == ["1", "2"]
    assert not state.exists()
    _restore(project)


# evaluate@baseline-0 runs the same code as evaluate@part-0, which also attacks through masks
KILLED_STAGES = ("burnin@0", "masks@0", "train@baseline-0", "train@part-0", "evaluate@part-0")


@pytest.mark.parametrize("stage", KILLED_STAGES)
def test_sigkill_at_random_points_then_a_rerun_gives_the_same_bytes(project, stage):
    reference = locked_outs(project)
    files = _contents(project, reference)
    metrics = {path: (project / path).read_bytes() for path in
               ("metrics/baseline-0.json", "metrics/part-0.json")}
    first = FIRST["repro"]  # as long as DVC's start and the stage took in the first repro
    duration = first.startup + first.seconds[stage]
    rng = random.Random(f"{stage}-kill-point")
    lock = (project / "dvc.lock").read_bytes()
    process = start(project, ["dvc", "repro", "--force", "--single-item", stage])
    _kill_after(process, rng.uniform(0.1, 1.0) * duration)
    # DVC rewrites dvc.lock in place (open "w", not atomic): a kill inside that write
    # truncates it and loses the entries after the cut, so DVC would rerun those stages.
    # That is DVC's file, not ours; this test is about our outputs, so put it back whole.
    (project / "dvc.lock").write_bytes(lock)
    # --no-run-cache: the interrupted computation itself must finish (resuming where it
    # can), rather than DVC restoring the earlier outputs from its run cache
    rerun = run(["dvc", "repro", "--no-run-cache", stage], project)
    assert locked_outs(project) == reference, stage
    assert _contents(project, reference) == files, f"after killing {stage}"
    for path, content in metrics.items():
        assert (project / path).read_bytes() == content, path
    assert is_up_to_date(project), (rerun.stdout + rerun.stderr
                                    + run(["dvc", "status"], project).stdout)
    # A kill after the outputs were written but before the state was removed leaves the outputs
    # whole, so DVC skips the rerun and the state (of this very computation) stays; the next
    # finished run of the stage removes it, and writes the same bytes again.
    run(["dvc", "repro", "--force", "--single-item", stage], project)
    assert not list((project / "runs").glob("*.safetensors"))
    assert locked_outs(project) == reference and _contents(project, reference) == files
