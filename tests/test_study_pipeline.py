"""The dose-response study's pipeline (study/dvc.yaml), run for real on a tiny copy of the
project: one `dvc repro` in study/ runs every stage from the shipped stage commands, the arms
share the burn-ins and the baseline, `dvc status` is clean after it and a rerun runs nothing,
each stage declares exactly the code it executes, and the report's figures are those of the
outcome files."""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
from pathlib import Path

import pytest
import torch
import yaml
from _project import ROOT, Repro, commit, make_project, ran, repro, run
from safetensors.torch import load_file

pytestmark = pytest.mark.slow
# The study's first repro as it ran, with the project files each stage process executed.
FIRST: dict[str, Repro] = {}
# One arm keeps the run short; its stages are the same matrices every arm's are.
ARMS = {"quantile-0of8": {"mask_rule": "quantile", "mask.quantile": 0.25, "eps_low": 0.0}}
SEEDS = [0, 1]


def _tiny_study() -> dict:
    shipped = yaml.safe_load((ROOT / "study" / "params.yaml").read_text())
    shipped["runs"] = {"seeds": SEEDS, "eval.attacks": ["natural", "pgd20"]}
    shipped["arms"] = ARMS
    shipped["device"] = "cpu"
    return shipped


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    repo = make_project(root / "repo")
    (repo / "study").mkdir()
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / "study" / name, repo / "study" / name)
    (repo / "study" / "params.yaml").write_text(yaml.safe_dump(_tiny_study(), sort_keys=False))
    commit(repo, "tiny study")
    FIRST["repro"] = recorded = repro(repo / "study", record_imports=root / "imports",
                                      root=repo)
    first = recorded.result
    expected = {"configure_shared", *(f"configure@{arm}" for arm in ARMS), "prepare", "budgets",
                "report", *(f"arm_data@{arm}" for arm in ARMS),
                *(f"arm_budgets@{arm}" for arm in ARMS), *(f"summarize@{arm}" for arm in ARMS)}
    for seed in SEEDS:
        expected |= {f"burnin@{seed}", f"baseline@{seed}", f"evaluate_baseline@{seed}"}
        for arm in ARMS:
            expected |= {f"arm_burnin@{arm}-{seed}", f"train@{arm}-{seed}",
                         f"evaluate@{arm}-{seed}"}
            for control in ("uniform_matched", "random_mask"):
                expected |= {f"train_control@{arm}-{control}-{seed}",
                             f"evaluate_control@{arm}-{control}-{seed}"}
    # DVC's run-cache may restore a copy stage another arm's identical one ran
    restored = set(re.findall(r"Stage '([^']+)' is cached", first.stdout + first.stderr))
    assert ran(first) | restored == expected, first.stdout + first.stderr
    commit(repo, "tiny study ran")
    return repo / "study"


def test_one_command_runs_it_and_then_dvc_status_is_clean_and_a_rerun_runs_nothing(study):
    status = run(["dvc", "status", "dvc.yaml"], study).stdout
    assert "up to date" in status, status
    again = run(["dvc", "repro"], study)
    assert ran(again) == set(), again.stdout
    # the default run's pipeline is another one: the study's repro did not touch it
    assert not (study.parent / "dvc.lock").exists()


def test_a_fresh_clone_shows_the_committed_study_current(study, tmp_path):
    # The README's staleness check: without DVC's cache only "deleted" or "not in cache" may
    # show; "modified", "new" or "changed command" would mean the report is not current.
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(study.parent), str(clone)], tmp_path)
    status = run(["dvc", "status", "dvc.yaml"], clone / "study").stdout
    assert "deleted:" in status, status  # the models are not in the clone's cache
    stale = [line for line in status.splitlines()
             if re.search(r"modified|new:|changed command", line)]
    assert not stale, status


def test_the_arms_train_from_the_shared_burn_ins_and_are_paired_with_the_shared_baseline(study):
    for seed in SEEDS:
        shared = (study / "shared" / "models" / f"burnin-{seed}.safetensors").read_bytes()
        for arm in ARMS:
            assert (study / "arms" / arm / "models" / f"burnin-{seed}.safetensors"
                    ).read_bytes() == shared
    assert not list((study / "arms").glob("*/models/baseline-*"))
    assert not list((study / "shared" / "models").glob("part-*"))
    for arm in ARMS:
        for name in ("train", "val", "test"):
            assert (study / "arms" / arm / "data" / "prepared" / f"{name}.safetensors"
                    ).read_bytes() == (study / "shared" / "data" / "prepared"
                                       / f"{name}.safetensors").read_bytes()


def _accuracies(path: Path, attack: str) -> torch.Tensor:
    return load_file(str(path))[attack]


def test_the_report_pairs_part_with_each_control_as_the_outcome_files_say(study):
    result = json.loads((study / "report" / "study.json").read_text())
    rows = result["primary"]["rows"]
    assert len(rows) == len(ARMS) * 2 * 2  # arms x comparisons x attacks
    for row in rows:
        metrics = study / "arms" / row["arm"] / "metrics"
        diffs = []
        for seed in SEEDS:
            ours = _accuracies(metrics / f"part-{seed}.outcomes.safetensors", row["attack"])
            theirs = _accuracies(metrics / f"{row['control']}-{seed}.outcomes.safetensors",
                                 row["attack"])
            diffs.append((ours.double().mean() - theirs.double().mean()).item())
        assert row["mean"] == pytest.approx(statistics.fmean(diffs), abs=1e-9)
        if statistics.pstdev(diffs) > 0:  # two seeds: the t-test has 1 degree of freedom
            t = statistics.fmean(diffs) / (statistics.stdev(diffs) / math.sqrt(2))
            cauchy = 2 * (0.5 - math.atan(abs(t)) / math.pi)
            assert row["t_test_p"] == pytest.approx(cauchy, rel=1e-5)
    # Holm over the family: the smallest p times m, and never below a smaller p's adjustment
    ordered = sorted(rows, key=lambda row: row["t_test_p"])
    assert ordered[0]["holm_p"] == pytest.approx(min(1.0, len(rows) * ordered[0]["t_test_p"]),
                                                 rel=1e-5)
    assert all(a["holm_p"] <= b["holm_p"] for a, b in zip(ordered, ordered[1:], strict=False))
    # the dose is PART's recorded mean budget, and the controls spent exactly that
    for name, arm in result["arms"].items():
        assert 0 < arm["dose"] <= 1
        for seed in map(str, SEEDS):
            assert arm["budget_checks"]["uniform_matched"][seed]["max_mean_budget_gap"] == 0
            assert arm["budget_checks"]["random_mask"][seed]["counts_equal"] is True
        if name.startswith("quantile"):  # eps_low = 0: eps on a quarter of the pixels
            assert arm["dose"] == pytest.approx(0.25, abs=1e-6)
    text = (study / "report" / "results.md").read_text()
    assert "## Primary comparisons" in text and "Holm" in text
    for plot in ("part_minus_controls.png", "variants_minus_at.png"):
        assert (study / "report" / plot).read_bytes()[:4] == b"\x89PNG"


def _command(stage: dict) -> tuple[list[str], str | None]:
    words = stage["cmd"].split()
    pythonpath = None
    if words[0].startswith("PYTHONPATH="):
        pythonpath = words.pop(0).split("=", 1)[1]
    return words, pythonpath


def test_each_study_stage_declares_exactly_the_project_code_it_executes(study):
    """What each stage process of the first repro executed (recorded as it ran, by
    tests/import_recorder) against what its dvc.lock entry declares, for one stage of each
    group."""
    lock = yaml.safe_load((study / "dvc.lock").read_text())["stages"]
    pipeline = yaml.safe_load((study / "dvc.yaml").read_text())["stages"]
    repo = study.parent
    recorded = {(Path(record["cwd"]).resolve(), tuple(record["argv"])): record
                for record in FIRST["repro"].executed}
    checked, seen = 0, set()
    for name, stage in lock.items():
        group_name = name.split("@")[0]
        if group_name in seen:
            continue  # the items of one group share their code deps
        words, pythonpath = _command(stage)
        if words[:2] != ["python", "-m"]:
            seen.add(group_name)
            continue  # the copies of the shared inputs run cp
        group = pipeline[group_name]
        item = name.split("@")[1] if "@" in name else ""
        wdir = group.get("do", group).get("wdir", ".").replace("${key}", item)
        if "${item.arm}" in wdir:
            wdir = wdir.replace("${item.arm}", next(arm for arm in ARMS if f"@{arm}-" in name))
        cwd = study / wdir
        assert (cwd / pythonpath).resolve() == repo.resolve(), name
        record = recorded.get((cwd.resolve(), tuple(words[1:])))
        if record is None:
            continue  # restored from DVC's run-cache, not run: another item of the group ran
        seen.add(group_name)
        executed = set(record["files"])
        declared = set()
        for dep in stage["deps"]:
            path = (cwd / dep["path"]).resolve()
            if not path.is_relative_to(repo.resolve() / "part") and not path.is_relative_to(
                    repo.resolve() / "stages"):
                continue
            files = ([f for f in path.rglob("*.py") if "__pycache__" not in f.parts]
                     if path.is_dir() else [path])
            declared |= {str(f.relative_to(repo.resolve())) for f in files}
        assert executed == declared, (
            f"{name}: executed but not declared {sorted(executed - declared)}; "
            f"declared but not executed {sorted(declared - executed)}")
        checked += 1
    assert checked == 14  # every stage group but the two that copy the shared inputs
