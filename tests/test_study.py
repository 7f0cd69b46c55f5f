"""reports/study.json: every figure checked against an independent computation (closed forms,
exact integer arithmetic, published t quantiles, simulation), never the SciPy call
part/evaluation/statistics.py
itself makes."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from part.evaluation.report import write_report
from part.evaluation.statistics import (
    Evaluated,
    StudyError,
    detectable_difference,
    holm_adjusted,
    load_study_inputs,
    mcnemar_exact_p,
    student_t_quantile,
    study,
    t_interval,
    t_test_p,
    wilson_interval,
)
from part.params import params_from_dict

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
# Student's t 97.5% quantiles by degrees of freedom (published tables, e.g. NIST/SEMATECH
# e-Handbook of Statistical Methods, 1.3.6.7.2, to the digits given there and beyond).
T975 = {1: 12.706204736174707, 2: 4.302652729749464, 3: 3.182446305284263,
        4: 2.776445105197793, 9: 2.262157162798205, 29: 2.045229642132703}


def _wilson_closed_form(correct: int, n: int) -> tuple[float, float]:
    """Wilson (1927): the score interval in closed form."""
    p = correct / n
    centre = p + Z95 * Z95 / (2 * n)
    spread = Z95 * math.sqrt(p * (1 - p) / n + Z95 * Z95 / (4 * n * n))
    scale = 1 + Z95 * Z95 / n
    return max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 3000), data=st.data())
def test_wilson_interval_matches_its_closed_form(n, data):
    correct = data.draw(st.integers(0, n))
    low, high = wilson_interval(correct, n)
    expected = _wilson_closed_form(correct, n)
    assert low == pytest.approx(expected[0], abs=1e-9)
    assert high == pytest.approx(expected[1], abs=1e-9)


def _mcnemar_by_counting(b: int, c: int) -> float:
    """Twice the binomial(b + c, 1/2) tail of the smaller count, in exact integers."""
    total = b + c
    if total == 0:
        return 1.0
    tail = sum(math.comb(total, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**total)


@settings(max_examples=200, deadline=None)
@given(only_first=st.integers(0, 1000), only_second=st.integers(0, 1000))
def test_mcnemar_exact_p_matches_counting_the_binomial_tail(only_first, only_second):
    assert mcnemar_exact_p(only_first, only_second) == pytest.approx(
        _mcnemar_by_counting(only_first, only_second), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("df", sorted(T975))
def test_student_t_quantile_matches_the_published_table(df):
    assert student_t_quantile(0.975, df) == pytest.approx(T975[df], rel=1e-9)
    assert student_t_quantile(0.025, df) == pytest.approx(-T975[df], rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-200, 200).map(lambda k: k / 1000), min_size=2, max_size=5))
def test_t_interval_is_the_mean_plus_minus_the_tabled_quantile_times_the_standard_error(values):
    """Differences of accuracies on 1000 examples: multiples of 1/1000."""
    interval = t_interval(values)
    if statistics.pstdev(values) == 0:  # no spread: no interval (the mean cannot be tested)
        assert interval is None
        return
    half = (T975[len(values) - 1] * statistics.stdev(values) / math.sqrt(len(values))
            if len(values) - 1 in T975 else None)
    if half is None:
        return
    mean = statistics.fmean(values)
    assert interval == pytest.approx((mean - half, mean + half), rel=1e-9, abs=1e-12)
    assert t_interval(values[:1]) is None


def _t_cdf_closed_form(t: float, df: int) -> float:
    """Student's t CDF in closed form for 1 (Cauchy) and 2 degrees of freedom."""
    if df == 1:
        return 0.5 + math.atan(t) / math.pi
    assert df == 2
    return 0.5 + t / (2 * math.sqrt(2 + t * t))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-100, 100).map(lambda k: k / 1000), min_size=2, max_size=3))
def test_t_test_p_matches_the_closed_form_t_distribution(values):
    p = t_test_p(values)
    if statistics.pstdev(values) == 0:  # no spread: cannot be tested, never a detection
        assert p is None
        return
    t = statistics.fmean(values) / (statistics.stdev(values) / math.sqrt(len(values)))
    expected = 2 * (1 - _t_cdf_closed_form(abs(t), len(values) - 1))
    assert p == pytest.approx(expected, rel=1e-7, abs=1e-12)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_a_true_difference_of_the_detectable_size_is_found_80_percent_of_the_time(n):
    """Simulate the t-test at the detectable difference: its power is the stated 80%."""
    spread = 0.01
    detectable = detectable_difference(spread, n, alpha=0.05, power=0.8)
    generator = np.random.default_rng(0)
    trials = 40000
    samples = generator.normal(detectable, spread, size=(trials, n))
    t = samples.mean(axis=1) / (samples.std(axis=1, ddof=1) / math.sqrt(n))
    rejected = np.abs(t) > T975[n - 1]
    assert rejected.mean() == pytest.approx(0.8, abs=0.01)
    assert detectable_difference(2 * spread, n) == pytest.approx(2 * detectable, rel=1e-6)
    assert detectable_difference(0.0, n) is None and detectable_difference(spread, 1) is None


def test_equal_differences_cannot_be_tested_and_are_never_detected():
    """Three seeds that all gained exactly 0.1 points: a t-test has no spread to test against."""
    assert t_test_p([0.001] * 3) is None and t_interval([0.001] * 3) is None
    assert t_test_p([0.0] * 3) is None


def _holm_rejects(p_values: list[float], alpha: float) -> list[bool]:
    """Holm (1979), as stated: order the p-values; reject H_(1), ..., H_(k-1) where k is the
    first step with p_(k) > alpha / (m - k + 1)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda index: p_values[index])
    rejected = [False] * m
    for step, index in enumerate(order):
        if p_values[index] > alpha / (m - step):
            break
        rejected[index] = True
    return rejected


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=16),
       st.sampled_from([0.01, 0.05, 0.1, 0.2]))
def test_holm_adjusted_p_values_reject_what_holms_procedure_rejects(p_values, alpha):
    adjusted = holm_adjusted(p_values)
    assert all(p <= a <= 1 for p, a in zip(p_values, adjusted, strict=True))
    # "adjusted <= alpha" is "rejected by the procedure", but where p * k meets alpha up to
    # rounding (multiplying and dividing round differently)
    m = len(p_values)
    if any(math.isclose(p * k, alpha, rel_tol=1e-9) for p in p_values for k in range(1, m + 1)):
        return
    expected = _holm_rejects(p_values, alpha)
    assert [a <= alpha for a in adjusted] == expected, (p_values, alpha)


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
                ci = _wilson_closed_form(round(accuracy * 400), 400)
                assert summary["wilson95"][str(seed)] == pytest.approx(list(ci), rel=1e-5)
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
                p = _mcnemar_by_counting(int(b), int(c))
                assert diff["mcnemar_p"][str(seed)] == pytest.approx(p, rel=1e-5)
                assert diff["per_seed"][str(seed)] == pytest.approx(diffs[-1], rel=1e-5)
            half = T975[len(seeds) - 1] * np.std(diffs, ddof=1) / math.sqrt(len(seeds))
            low, high = np.mean(diffs) - half, np.mean(diffs) + half
            assert diff["mean"] == pytest.approx(np.mean(diffs), rel=1e-5)
            assert diff["t95"] == pytest.approx([low, high], rel=1e-5)


def test_part_minus_each_control_is_paired_on_the_same_seed_and_examples(inputs):
    made, seeds, variants = inputs
    result = study(made, seeds, variants)
    assert set(result["contrasts"]) == {"part-random_mask"}
    for attack in ("natural", "pgd20"):
        contrast = result["contrasts"]["part-random_mask"][attack]
        diffs = [made[("part", s)].outcomes[attack].double().mean().item()
                 - made[("random_mask", s)].outcomes[attack].double().mean().item()
                 for s in seeds]
        assert contrast["mean"] == pytest.approx(np.mean(diffs), rel=1e-5)
        for seed, diff in zip(seeds, diffs, strict=True):
            assert contrast["per_seed"][str(seed)] == pytest.approx(diff, rel=1e-5, abs=1e-9)
            counts = contrast["discordant"][str(seed)]
            assert (counts["only_variant"] - counts["only_random_mask"]) / 400 == \
                pytest.approx(diff, abs=1e-12)
        t = np.mean(diffs) / (np.std(diffs, ddof=1) / math.sqrt(3))
        assert contrast["t_test_p"] == pytest.approx(
            2 * (1 - _t_cdf_closed_form(abs(t), 2)), rel=1e-5)
        assert contrast["detectable"] == pytest.approx(
            detectable_difference(np.std(diffs, ddof=1), 3), rel=1e-5)


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
    from part.io.tensorfile import write_safetensors

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
