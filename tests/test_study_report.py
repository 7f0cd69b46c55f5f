"""The study's report on a study directory with known answers: an arm where PART beats random
places by 4 points on every seed is detected after Holm's correction, an arm where it does not
reads "none detected: less than X", and a control that spent another budget is shown as such."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from part.evaluation.statistics import detectable_difference
from part.importance.budget_trace import BudgetTrace, save_trace
from part.io.paths import metrics_path, outcomes_path, trace_path
from part.io.tensorfile import write_safetensors
from part.study.config import load_study_config, run_dir_path, write_run_params
from part.study.report import build_study, write_study_report
from part.study.summaries import StudyReportError, write_arm_summary

ROOT = Path(__file__).resolve().parents[1]
N = 1000
SEEDS = (0, 1, 2)
# arm -> variant -> the number of test examples more than the baseline's it gets right, per seed
GAINS = {
    "strong": {"part": (40, 41, 39), "uniform_matched": (0, 1, -1), "random_mask": (0, 2, 1)},
    "none": {"part": (3, -4, 1), "uniform_matched": (2, -2, 0), "random_mask": (-1, 3, 2)},
}


def _outcomes(correct: int) -> torch.Tensor:
    vector = torch.zeros(N, dtype=torch.bool)
    vector[:correct] = True
    return vector


def _evaluated(directory: Path, variant: str, seed: int, correct: dict[str, int]) -> None:
    outcomes = {attack: _outcomes(count) for attack, count in correct.items()}
    metrics = {}
    for attack, count in correct.items():
        metrics[attack], metrics[f"n_{attack}"] = count / N, N
    path = directory / metrics_path(variant, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics))
    write_safetensors(directory / outcomes_path(variant, seed), outcomes, {})


def _trace(directory: Path, variant: str, seed: int, budgets: list[float],
           counts: torch.Tensor | None) -> None:
    trace = BudgetTrace({"run": f"{variant}-{seed}", "seed": seed}, [3, 4, 5], list(budgets))
    if counts is not None:
        trace.counts = [counts.clone() for _ in budgets]
    path = directory / trace_path(variant, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_trace(path, trace)


def _build() -> dict:
    """What the study's summarize and report stages do: every arm's summary, then the study."""
    for arm in load_study_config().arms:
        write_arm_summary(arm)
    return build_study()


@pytest.fixture
def study_dir(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    study = tmp_path / "study"
    study.mkdir()
    raw = yaml.safe_load((ROOT / "study" / "params.yaml").read_text())
    raw["arms"] = {"strong": {"mask_rule": "quantile", "mask.quantile": 0.25, "eps_low": 0.0},
                   "none": {"mask_rule": "official", "eps_low": 0.0875}}
    (study / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.chdir(study)
    for run_dir in load_study_config().run_dirs():
        write_run_params(run_dir)
    for seed in SEEDS:
        _evaluated(run_dir_path("shared"), "baseline", seed, {"natural": 700, "pgd20": 500})
    counts = torch.full((6, 1), 196, dtype=torch.int32)
    for arm, variants in GAINS.items():
        for variant, gains in variants.items():
            for seed, gain in zip(SEEDS, gains, strict=True):
                _evaluated(run_dir_path(arm), variant, seed,
                           {"natural": 700 + gain, "pgd20": 500 + gain})
                _trace(run_dir_path(arm), variant, seed, [0.025, 0.025, 0.025],
                       counts if variant != "uniform_matched" else None)
    return study


def test_a_consistent_effect_is_detected_after_holm_and_a_null_reads_less_than_x(study_dir):
    result = _build()
    rows = {(row["arm"], row["control"], row["attack"]): row for row in result["primary"]["rows"]}
    assert len(rows) == 2 * 2 * 2
    strong = rows[("strong", "random_mask", "pgd20")]
    diffs = [(40 - 0) / N, (41 - 2) / N, (39 - 1) / N]
    assert strong["mean"] == pytest.approx(sum(diffs) / 3, rel=1e-6)
    assert strong["detected"] and strong["holm_p"] <= 0.05
    null = rows[("none", "random_mask", "natural")]
    assert not null["detected"]
    spread = torch.tensor([4.0, -7.0, -1.0]).std().item() / N
    assert null["detectable"] == pytest.approx(detectable_difference(spread, 3), rel=1e-4)
    # Holm: the smallest p-value times the family's size
    smallest = min(result["primary"]["rows"], key=lambda row: row["t_test_p"])
    assert smallest["holm_p"] == pytest.approx(min(1.0, 8 * smallest["t_test_p"]), rel=1e-9)
    assert result["arms"]["strong"]["dose"] == pytest.approx(0.25)
    write_study_report(result)
    text = Path("report/results.md").read_text()
    assert f"none detected: less than {100 * null['detectable']:.2f}" in text
    assert "| strong | 0.250 | part − random_mask | PGD-20 | +3.90" in text
    assert "higher (Holm p ≤ 0.05)" in text
    assert json.loads(Path("report/study.json").read_text())["primary"]["rows"][0]["arm"] == \
        "strong"
    for plot in ("part_minus_controls.png", "variants_minus_at.png"):
        assert Path("report", plot).read_bytes()[:4] == b"\x89PNG"
    assert math.isclose(result["arms"]["none"]["budget_checks"]["uniform_matched"]["0"]
                        ["max_mean_budget_gap"], 0.0)


def test_a_difference_significant_only_before_holm_never_reads_less_than_x(study_dir):
    # PART - random_mask in "none": 7, 10, 13 examples per seed (p = 0.029 uncorrected)
    for seed, gain in zip(SEEDS, (6, 13, 15), strict=True):
        _evaluated(run_dir_path("none"), "part", seed, {"natural": 700 + gain, "pgd20": 500 + gain})
    result = _build()
    row = next(row for row in result["primary"]["rows"]
               if (row["arm"], row["control"], row["attack"]) == ("none", "random_mask", "natural"))
    assert row["t_test_p"] <= 0.05 < row["holm_p"] and not row["detected"]
    write_study_report(result)
    line = next(line for line in Path("report/results.md").read_text().splitlines()
                if line.startswith("| none | ") and "random_mask | Natural" in line)
    assert "not detected after Holm (uncorrected p ≤ 0.05)" in line
    assert "less than" not in line


def test_a_control_that_spent_another_budget_is_shown_as_such(study_dir):
    counts = torch.full((6, 1), 100, dtype=torch.int32)
    _trace(run_dir_path("none"), "random_mask", 1, [0.025, 0.025, 0.03], counts)
    result = _build()
    check = result["arms"]["none"]["budget_checks"]["random_mask"]["1"]
    assert check["counts_equal"] is False
    assert check["max_mean_budget_gap"] == pytest.approx(0.005)
    write_study_report(result)
    assert "COUNTS DIFFER" in Path("report/results.md").read_text()


def test_a_missing_evaluation_names_the_fix_in_the_study(study_dir):
    Path(run_dir_path("none") / metrics_path("part", 2)).unlink()
    with pytest.raises(StudyReportError, match=r"no metrics file.*run `dvc repro` in its "
                                               r"directory"):
        _build()


def test_an_arm_whose_runs_differ_from_the_shared_ones_is_refused(study_dir):
    path = run_dir_path("strong") / "params.yaml"
    path.write_text(path.read_text().replace("epochs: 5", "epochs: 6"))
    with pytest.raises(StudyReportError, match=r"differ in `epochs`"):
        _build()
    shutil.rmtree(run_dir_path("strong"))
    with pytest.raises(StudyReportError, match=r"missing; run `dvc repro`"):
        _build()


def test_a_damaged_summary_is_named_with_its_fix(study_dir):
    _build()
    summary = Path("summaries/none.json")
    summary.write_text(summary.read_text()[:100])
    with pytest.raises(StudyReportError, match=r"summaries/none.json: not a summary .*delete it "
                                               r"and run `dvc repro`"):
        build_study()
