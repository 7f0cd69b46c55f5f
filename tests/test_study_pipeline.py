"""The confirmatory study's pipeline (study/dvc.yaml), run for real on a tiny copy of the project:
`dvc repro --allow-missing` in study/ (`make study`) runs two seeds from the shipped stage
commands, a rerun runs nothing, a fresh clone without the DVC cache runs nothing either, and
adding a third seed there runs that seed's stages and the report only. The report's figures are
those of the committed outcome files, and study/dvc.yaml is what its generator writes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from _project import ROOT, commit, make_project, ran, run
from safetensors.torch import load_file
from scipy.stats import binomtest

from part.study.pipeline_file import pipeline_text, study_pipeline

pytestmark = pytest.mark.slow
ARM, CONTROL = "quantile-0of8", "random_mask"
SEEDS = [0, 1]


def _tiny_study(seeds: list[int]) -> dict:
    """The shipped study cut to one arm and one control (the same stage matrices every arm's
    and control's are), on the tiny project's data."""
    shipped = yaml.safe_load((ROOT / "study" / "params.yaml").read_text())
    comparison = {"arm": ARM, "variant": "part", "reference": CONTROL}
    shipped.update(
        seeds=seeds, runs={"eval.attacks": ["natural", "pgd20"]},
        arms={ARM: shipped["arms"][ARM]}, controls=[CONTROL], device="cpu")
    analysis = shipped["analysis"]
    analysis["primary"] = {**comparison, "attack": "pgd20"}
    analysis["secondary"] = [{**comparison, "attack": "natural", "margin": 0.01}]
    analysis["replication"] = {"arm": ARM, "variant": "part",
                               "references": ["baseline", CONTROL], "attacks": ["pgd20"],
                               "margin": 0.01}
    return shipped


def _write_params(study: Path, seeds: list[int]) -> None:
    (study / "params.yaml").write_text(yaml.safe_dump(_tiny_study(seeds), sort_keys=False))


def seed_stages(seed: int) -> set[str]:
    per_arm = {f"{name}@{seed}-{ARM}" for name in (
        "configure", "arm_inputs", "arm_budgets", "train", "evaluate", "summarize")}
    per_control = {f"{name}@{seed}-{ARM}-{CONTROL}" for name in ("train_control",
                                                                "evaluate_control")}
    per_seed = {f"{name}@{seed}" for name in ("configure_at", "prepare", "burnin", "baseline",
                                              "budgets", "evaluate_baseline")}
    return per_arm | per_control | per_seed


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    repo = make_project(tmp_path_factory.mktemp("study") / "repo")
    (repo / "study").mkdir()
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / "study" / name, repo / "study" / name)
    shutil.copytree(ROOT / "study" / "pilot" / "summaries", repo / "study/pilot/summaries")
    _write_params(repo / "study", SEEDS)
    commit(repo, "tiny study")
    first = run(["dvc", "repro", "--allow-missing"], repo / "study")
    expected = {"report"} | set().union(*(seed_stages(seed) for seed in SEEDS))
    # DVC's run-cache restores the second seed's prepare: the same command on the same inputs
    restored = set(re.findall(r"Stage '([^']+)' is cached", first.stdout + first.stderr))
    assert ran(first) | restored == expected, first.stdout + first.stderr
    commit(repo, "tiny study ran")
    return repo / "study"


def test_a_rerun_runs_nothing_and_dvc_status_is_clean(study):
    assert "up to date" in run(["dvc", "status", "dvc.yaml"], study).stdout
    assert ran(run(["dvc", "repro", "--allow-missing"], study)) == set()
    # the default run's pipeline is another one: the study's repro did not touch it
    assert not (study.parent / "dvc.lock").exists()


def test_a_fresh_clone_runs_only_a_new_seed(study, tmp_path):
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(study.parent), str(clone)], tmp_path)
    assert not (clone / "study/seeds/0/at/models/baseline-0.safetensors").exists()  # no cache
    assert ran(run(["dvc", "repro", "--allow-missing", "--dry"], clone / "study")) == set()
    before = {path: path.read_bytes() for path in (clone / "study/summaries").rglob("*.json")}
    _write_params(clone / "study", [*SEEDS, 2])
    added = run(["dvc", "repro", "--allow-missing"], clone / "study")
    # the clone has no run-cache: every stage of the new seed runs, and no other stage
    assert ran(added) == seed_stages(2) | {"report"}, added.stdout + added.stderr
    assert {path: path.read_bytes() for path in before} == before
    result = json.loads((clone / "study/report/study.json").read_text())
    assert result["seeds_done"] == [0, 1, 2] and result["complete"] is True
    assert set(result["primary"]["per_seed"]) == {"0", "1", "2"}


def _outcomes(study: Path, run_dir: str, variant: str, seed: int) -> dict[str, torch.Tensor]:
    return load_file(str(study / "seeds" / str(seed) / run_dir / "metrics"
                         / f"{variant}-{seed}.outcomes.safetensors"))


def test_the_report_pairs_the_models_as_their_outcome_files_say(study):
    result = json.loads((study / "report" / "study.json").read_text())
    assert result["seeds_done"] == SEEDS and result["complete"] is True
    primary = result["primary"]
    for seed in SEEDS:
        ours = _outcomes(study, ARM, "part", seed)["pgd20"]
        theirs = _outcomes(study, ARM, CONTROL, seed)["pgd20"]
        assert primary["per_seed"][str(seed)] == pytest.approx(
            (ours.double().mean() - theirs.double().mean()).item(), abs=1e-6)
        only_ours, only_theirs = int((ours & ~theirs).sum()), int((theirs & ~ours).sum())
        expected = (binomtest(only_ours, only_ours + only_theirs).pvalue
                    if only_ours + only_theirs else 1.0)
        assert primary["mcnemar_p"][str(seed)] == pytest.approx(expected, rel=1e-5)
        baseline = _outcomes(study, "at", "baseline", seed)["pgd20"]
        assert ours.shape == baseline.shape  # paired with the seed's AT baseline
    summary = json.loads((study / "summaries" / "0" / f"{ARM}.json").read_text())
    assert summary["dose"] == pytest.approx(0.25, abs=1e-6)  # eps on a quarter of the pixels
    assert summary["budget_checks"][CONTROL]["counts_equal"] is True
    assert summary["budget_checks"][CONTROL]["max_mean_budget_gap"] == 0
    text = (study / "report" / "results.md").read_text()
    assert "## Primary" in text and "## How many seeds" in text
    assert "less than" not in text
    assert (study / "report" / f"paired-{ARM}.png").read_bytes()[:4] == b"\x89PNG"


def test_the_arms_train_from_their_seeds_burn_in_and_data(study):
    for seed in SEEDS:
        at = study / "seeds" / str(seed) / "at"
        arm = study / "seeds" / str(seed) / ARM
        for path in (f"models/burnin-{seed}.safetensors",
                     "data/prepared/train.safetensors", "data/prepared/test.safetensors"):
            assert (arm / path).read_bytes() == (at / path).read_bytes(), path
        assert not list(arm.glob("models/baseline-*")) and not list(at.glob("models/part-*"))


def test_study_dvc_yaml_is_what_its_generator_writes_from_the_main_pipeline():
    assert (ROOT / "study" / "dvc.yaml").read_text() == pipeline_text(), \
        "run `python -m part.study.pipeline_file` and commit study/dvc.yaml"
    main = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    stages = study_pipeline()["stages"]
    for study_stage, main_stage in (("burnin", "burnin"), ("baseline", "train"),
                                    ("train", "train"), ("train_control", "train_control"),
                                    ("evaluate", "evaluate"), ("prepare", "prepare")):
        body = stages[study_stage].get("do", stages[study_stage])
        source = main[main_stage].get("do", main[main_stage])
        code = [dep.removeprefix("../../../../") for dep in body["deps"] if dep.startswith("../")]
        assert code == [dep for dep in source["deps"] if dep.split("/")[0] in ("part", "stages")]
        assert body["params"] == source["params"]
