"""The confirmatory study's analysis and report on study directories with known answers, built
through the real summarize step: a consistent effect is detected, a null reads as its interval
(never "less than X"), equal differences on every seed cannot be tested, the tests wait for every
pre-registered seed, equivalence and non-inferiority decide as their definitions say, and a
control that spent another budget is shown as such."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from scipy.stats import ttest_1samp

from part.importance.budget_trace import BudgetTrace, save_trace
from part.io.paths import metrics_path, outcomes_path, trace_path
from part.io.tensorfile import write_safetensors
from part.study.config import AT_RUN, load_study_config, run_dir_path, write_run_params
from part.study.report import build_study, run_study_report
from part.study.summaries import StudyReportError, write_summary

ROOT = Path(__file__).resolve().parents[1]
N = 1000
SEEDS = (0, 1, 2)
CONTROLS = ("random_mask", "uniform_matched")
# arm -> variant -> examples right beyond the AT baseline's (700 natural, 500 PGD-20), per seed
GAINS = {
    "strong": {"part": (40, 41, 39), "random_mask": (0, 2, 1), "uniform_matched": (3, -4, 1)},
    "paper": {"part": (1, -1, 0), "random_mask": (0, 1, -1), "uniform_matched": (25, 20, 30)},
}


def _analysis() -> dict:
    strong = {"arm": "strong", "variant": "part"}
    return {"alpha": 0.05,
            "primary": {**strong, "reference": "random_mask", "attack": "pgd20"},
            "secondary": [{**strong, "reference": "uniform_matched", "attack": "pgd20"},
                          {**strong, "reference": "random_mask", "attack": "natural",
                           "margin": 0.01}],
            "replication": {"arm": "paper", "variant": "part",
                            "references": ["baseline", "random_mask", "uniform_matched"],
                            "attacks": ["pgd20"], "margin": 0.01},
            "planning": {"difference": 0.02, "sd": 0.02, "power": 0.8,
                         "pilot_summary": "pilot/summaries/quantile-0of8.json",
                         "pilot_comparison": {"arm": "quantile-0of8", "variant": "part",
                                              "reference": "random_mask", "attack": "pgd20"}}}


def _evaluated(directory: Path, variant: str, seed: int, correct: dict[str, int]) -> None:
    outcomes, metrics = {}, {}
    for attack, count in correct.items():
        vector = torch.zeros(N, dtype=torch.bool)
        vector[:count] = True
        outcomes[attack] = vector
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


def _set_gains(arm: str, variant: str, gains: tuple[int, ...]) -> None:
    for seed, gain in zip(SEEDS, gains, strict=True):
        _evaluated(run_dir_path(seed, arm), variant, seed,
                   {"natural": 700 + gain, "pgd20": 500 + gain})


def _summarize(seeds=SEEDS) -> None:
    for seed in seeds:
        for arm in GAINS:
            write_summary(seed, arm)


@pytest.fixture
def study_dir(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    study = tmp_path / "study"
    study.mkdir()
    shutil.copytree(ROOT / "study" / "pilot" / "summaries", study / "pilot" / "summaries")
    raw = yaml.safe_load((ROOT / "study" / "params.yaml").read_text())
    raw.update(seeds=list(SEEDS), controls=list(CONTROLS), analysis=_analysis(),
               arms={"strong": {"mask_rule": "quantile", "mask.quantile": 0.25, "eps_low": 0.0},
                     "paper": {"mask_rule": "official", "eps_low": 0.0875}})
    (study / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.chdir(study)
    counts = torch.full((6, 1), 196, dtype=torch.int32)
    for seed in SEEDS:
        for run_dir in load_study_config().run_dirs():
            write_run_params(seed, run_dir)
        _evaluated(run_dir_path(seed, AT_RUN), "baseline", seed, {"natural": 700, "pgd20": 500})
        for arm in GAINS:
            for variant in ("part", *CONTROLS):
                _trace(run_dir_path(seed, arm), variant, seed, [0.025, 0.025, 0.025],
                       counts if variant != "uniform_matched" else None)
    for arm, variants in GAINS.items():
        for variant, gains in variants.items():
            _set_gains(arm, variant, gains)
    return study


def _text() -> str:
    return Path("report/results.md").read_text()


def test_a_consistent_effect_is_detected_and_a_null_reads_as_its_interval(study_dir):
    _summarize()
    run_study_report()
    result = json.loads(Path("report/study.json").read_text())
    primary = result["primary"]
    diffs = [(40 - 0) / N, (41 - 2) / N, (39 - 1) / N]
    assert primary["per_seed"] == {"0": 0.04, "1": 0.039, "2": 0.038}
    assert primary["p"] == pytest.approx(ttest_1samp(diffs, 0).pvalue, rel=1e-5)
    assert primary["detected"] is True and result["complete"] is True
    null = result["secondary"][0]  # part - uniform_matched: 37, 45, 38 more: also detected
    assert null["detected"] is True
    text = _text()
    assert text.index("## Primary") < text.index("## Secondary") < text.index("## Replication")
    assert "detected." in text.split("## Secondary")[0]
    assert "less than" not in text
    assert Path("report/paired-strong.png").read_bytes()[:4] == b"\x89PNG"
    assert result["arms"]["strong"]["dose"] == pytest.approx(0.25)


def test_a_null_is_not_detected_and_shows_its_interval(study_dir):
    _set_gains("strong", "part", (2, -1, 3))
    _summarize()
    run_study_report()
    primary = json.loads(Path("report/study.json").read_text())["primary"]
    assert primary["detected"] is False
    low, high = primary["ci95"]
    assert low < 0 < high
    assert f"not detected; the 95% interval is [{100 * low:+.2f}, {100 * high:+.2f}]" in _text()


def test_equal_differences_on_every_seed_cannot_be_tested_and_are_never_detected(study_dir):
    _set_gains("strong", "part", (10, 12, 11))
    _set_gains("strong", "random_mask", (0, 2, 1))  # +1.0 point on every seed, exactly
    _summarize()
    run_study_report()
    primary = json.loads(Path("report/study.json").read_text())["primary"]
    assert primary["testable"] is False and primary["detected"] is False
    assert primary["p"] is None
    assert "cannot be tested" in _text()


def test_the_tests_wait_for_every_preregistered_seed(study_dir):
    _summarize(SEEDS[:2])
    run_study_report()
    result = json.loads(Path("report/study.json").read_text())
    assert result["seeds_done"] == [0, 1] and result["complete"] is False
    assert "p" not in result["primary"] and result["primary"]["detected"] is None
    assert all(row["holm_p"] is None for row in result["secondary"])
    assert "read once all 3 seeds have run" in _text()


def test_equivalence_and_non_inferiority_decide_as_defined(study_dir):
    _summarize()
    run_study_report()
    result = json.loads(Path("report/study.json").read_text())
    replication = {row["reference"]: row for row in result["replication"]}
    # PART - AT: +0.1, -0.1, 0.0 points, well inside +-1: equivalent
    assert replication["baseline"]["equivalent"] is True
    # PART - uniform_matched: -2.4, -2.1, -3.0 points: outside the margin, not equivalent
    assert replication["uniform_matched"]["equivalent"] is False
    low, high = replication["uniform_matched"]["ci90"]
    assert high < -0.01
    # natural, PART - random_mask at the strong arm: +4.0, +3.9, +3.8: non-inferior
    assert result["secondary"][1]["detected"] is True
    _set_gains("strong", "part", (-30, -25, -28))  # 3 points worse: not non-inferior
    _summarize()
    run_study_report()
    assert json.loads(Path("report/study.json").read_text())["secondary"][1]["detected"] is False


def test_a_control_that_spent_another_budget_is_shown_as_such(study_dir):
    _trace(run_dir_path(1, "paper"), "random_mask", 1, [0.025, 0.025, 0.03],
           torch.full((6, 1), 100, dtype=torch.int32))
    _summarize()
    summary = json.loads(Path("summaries/1/paper.json").read_text())
    check = summary["budget_checks"]["random_mask"]
    assert check["counts_equal"] is False
    assert check["max_mean_budget_gap"] == pytest.approx(0.005)
    run_study_report()
    assert "exactly in every epoch: NO" in _text()


def test_the_planning_figures_are_statsmodels_at_the_pilots_sd(study_dir):
    from statsmodels.stats.power import TTestPower

    result = build_study()
    plan = result["planning"]
    assert plan["seeds_needed"] == pytest.approx(
        TTestPower().solve_power(1.0, alpha=0.05, power=0.8), rel=1e-5)
    assert plan["pilot"]["per_seed"] == [0.064, 0.088, 0.096]  # the committed pilot's
    assert plan["pilot"]["sd_upper80"] > plan["pilot"]["sd"]


def test_bad_inputs_name_their_fix(study_dir):
    Path(run_dir_path(2, "paper") / metrics_path("part", 2)).unlink()
    with pytest.raises(StudyReportError, match=r"no metrics file.*dvc repro --allow-missing"):
        write_summary(2, "paper")
    path = run_dir_path(0, "strong") / "params.yaml"
    path.write_text(path.read_text().replace("epochs: 5", "epochs: 6"))
    with pytest.raises(StudyReportError, match=r"differ in `epochs`"):
        write_summary(0, "strong")
    write_summary(1, "strong")
    summary = Path("summaries/1/strong.json")
    summary.write_text(summary.read_text()[:100])
    with pytest.raises(StudyReportError, match=r"summaries/1/strong.json: not a summary"):
        build_study()
