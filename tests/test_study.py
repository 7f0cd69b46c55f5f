"""reports/study.json: every figure checked against an independent computation (scipy.stats)."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from part.params import params_from_dict
from part.report import write_report
from part.study import (
    Evaluated,
    StudyError,
    load_study_inputs,
    mcnemar_exact_p,
    student_t_quantile,
    study,
    t_interval,
    wilson_interval,
)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 3000), data=st.data())
def test_wilson_interval_matches_scipy(n, data):
    correct = data.draw(st.integers(0, n))
    expected = stats.binomtest(correct, n).proportion_ci(0.95, method="wilson")
    low, high = wilson_interval(correct, n)
    assert low == pytest.approx(expected.low, abs=1e-12)
    assert high == pytest.approx(expected.high, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(only_first=st.integers(0, 1500), only_second=st.integers(0, 1500))
def test_mcnemar_exact_p_matches_the_binomial_test_on_discordant_pairs(only_first, only_second):
    total = only_first + only_second
    expected = 1.0 if total == 0 else stats.binomtest(only_first, total, 0.5).pvalue
    # SciPy's tail underflows to 0 below ~1e-300 where ours, in exact integers, does not.
    assert mcnemar_exact_p(only_first, only_second) == pytest.approx(expected, rel=1e-9,
                                                                     abs=1e-200)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 29, 200])
@pytest.mark.parametrize("p", [0.9, 0.975, 0.995])
def test_student_t_quantile_matches_scipy(df, p):
    assert student_t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-200, 200).map(lambda k: k / 1000), min_size=2, max_size=8))
def test_t_interval_matches_scipy(values):
    """Differences of accuracies on 1000 examples: multiples of 1/1000."""
    interval = t_interval(values)
    spread = statistics.stdev(values)
    if spread == 0:
        assert interval[0] == pytest.approx(interval[1])
        return
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values),
                                 scale=stats.sem(values))
    assert interval == pytest.approx((low, high), rel=1e-9, abs=1e-12)
    assert t_interval(values[:1]) is None


def _outcomes(seed: int, n: int = 400, accuracy: float = 0.7) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"natural": torch.rand(n, generator=generator) < accuracy,
            "pgd20": torch.rand(n, generator=generator) < accuracy - 0.3}


def _evaluated(outcomes: dict[str, torch.Tensor]) -> Evaluated:
    metrics = {}
    for key, vector in outcomes.items():
        metrics[key] = vector.float().mean().item()
        metrics[f"n_{key}"] = vector.numel()
    return Evaluated(metrics, outcomes)


@pytest.fixture
def inputs():
    seeds, variants = [0, 1, 2], ["baseline", "part", "random_mask"]
    made = {}
    for seed in seeds:
        for index, variant in enumerate(variants):
            made[(variant, seed)] = _evaluated(_outcomes(100 * seed + index,
                                                         accuracy=0.6 + 0.05 * index))
    return made, seeds, variants


def test_study_figures_match_an_independent_computation(inputs):
    made, seeds, variants = inputs
    result = study(made, seeds, variants)
    assert result["seeds"] == seeds and result["baseline"] == "baseline"
    assert result["attacks"] == ["natural", "pgd20"]
    assert "diff" not in result["variants"]["baseline"]["pgd20"]
    for variant in variants:
        for attack in ("natural", "pgd20"):
            summary = result["variants"][variant][attack]
            accuracies = [made[(variant, s)].outcomes[attack].double().mean().item()
                          for s in seeds]
            assert summary["n"] == 400
            assert summary["mean"] == pytest.approx(np.mean(accuracies), rel=1e-5)
            assert summary["std"] == pytest.approx(np.std(accuracies, ddof=1), rel=1e-5)
            for seed, accuracy in zip(seeds, accuracies, strict=True):
                assert summary["per_seed"][str(seed)] == pytest.approx(accuracy, rel=1e-5)
                ci = stats.binomtest(round(accuracy * 400), 400).proportion_ci(method="wilson")
                assert summary["wilson95"][str(seed)] == pytest.approx([ci.low, ci.high],
                                                                       rel=1e-5)
            if variant == "baseline":
                continue
            diff = summary["diff"]
            diffs = []
            for seed in seeds:
                ours = made[(variant, seed)].outcomes[attack].numpy()
                base = made[("baseline", seed)].outcomes[attack].numpy()
                table = np.array([[np.sum(base & ours), np.sum(base & ~ours)],
                                  [np.sum(~base & ours), np.sum(~base & ~ours)]])
                diffs.append(ours.mean() - base.mean())
                b, c = table[0, 1], table[1, 0]
                p = stats.binomtest(int(min(b, c)), int(b + c), 0.5).pvalue if b + c else 1.0
                assert diff["mcnemar_p"][str(seed)] == pytest.approx(p, rel=1e-5)
                assert diff["per_seed"][str(seed)] == pytest.approx(diffs[-1], rel=1e-5)
            low, high = stats.t.interval(0.95, len(seeds) - 1, loc=np.mean(diffs),
                                         scale=stats.sem(diffs))
            assert diff["mean"] == pytest.approx(np.mean(diffs), rel=1e-5)
            assert diff["t95"] == pytest.approx([low, high], rel=1e-5)


def test_one_seed_has_no_spread_or_t_interval(inputs):
    made, _, variants = inputs
    result = study(made, [1], variants)
    summary = result["variants"]["part"]["natural"]
    assert summary["std"] is None and summary["diff"]["t95"] is None
    assert set(summary["wilson95"]) == {"1"}


def test_unpaired_outcomes_are_refused(inputs):
    made, seeds, variants = inputs
    shorter = {key: vector[:300] for key, vector in made[("part", 1)].outcomes.items()}
    made[("part", 1)] = _evaluated(shorter)
    with pytest.raises(StudyError, match="same ones"):
        study(made, seeds, variants)


def test_outcomes_that_disagree_with_their_metrics_are_refused(tmp_path):
    from part.tensorfile import write_safetensors

    outcomes = _outcomes(0)
    metrics = _evaluated(outcomes).metrics
    metrics["pgd20"] += 0.01
    (tmp_path / "baseline-0.json").write_text(json.dumps(metrics))
    write_safetensors(tmp_path / "baseline-0.outcomes.safetensors", outcomes, {})
    with pytest.raises(StudyError, match=r"do not add up.*dvc repro -f evaluate@baseline-0"):
        load_study_inputs([0], ["baseline"], lambda v, s: tmp_path / f"{v}-{s}.json",
                          lambda v, s: tmp_path / f"{v}-{s}.outcomes.safetensors")
    with pytest.raises(StudyError, match=r"no metrics file; run `dvc repro evaluate@part-0`"):
        load_study_inputs([0], ["part"], lambda v, s: tmp_path / f"{v}-{s}.json",
                          lambda v, s: tmp_path / f"{v}-{s}.outcomes.safetensors")


def test_the_report_shows_n_intervals_and_p_values(inputs, tmp_path):
    made, seeds, variants = inputs
    result = study(made, seeds, variants)
    params = params_from_dict({"seeds": seeds, "variants": variants[:2],
                               "controls": variants[2:]})
    write_report(tmp_path / "results.md", tmp_path / "study.json", tmp_path / "plot.png",
                 result, params)
    assert json.loads((tmp_path / "study.json").read_text()) == result
    text = (tmp_path / "results.md").read_text()
    part = result["variants"]["part"]["pgd20"]
    low, high = part["diff"]["t95"]
    assert f"| PGD-20 | {100 * part['diff']['mean']:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]" \
        in text
    assert "| 400 |" in text and "p=" in text
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
