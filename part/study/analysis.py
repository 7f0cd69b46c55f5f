"""The study's pre-registered analysis (study/params.yaml, `analysis`), from the per-seed
summaries, with the libraries' tests: SciPy's one-sample t-test and its interval for each paired
difference, statsmodels' Holm correction (`multipletests`), its paired equivalence test
(`ttost_paired`), its exact McNemar test and its t-test power (`TTestPower`).

Every comparison is paired: the same seed (so the same burn-in, batches and random starts) and
the same test examples; the unit of replication is the seed. The tests are read once, when every
pre-registered seed has run; before that the report shows the seeds that ran and no test. A
difference whose seeds all agree exactly has no spread: it "cannot be tested" and is never a
detection.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from part.study.config import (
    PILOT_DIR,
    Comparison,
    StudyConfig,
)

Summaries = Mapping[int, Mapping[str, Mapping[str, Any]]]  # seed -> arm -> summary


def _sig(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(f"{value:.6g}")


def accuracy(summary: Mapping[str, Any], variant: str, attack: str) -> float:
    counts = summary["accuracy"][variant][attack]
    return counts["correct"] / counts["n"]


def differences(summaries: Summaries, comparison: Comparison) -> dict[int, float]:
    """variant minus reference, per seed, as the summaries' counts give it (exactly the
    difference of the two accuracies on the same examples)."""
    out = {}
    for seed, arms in summaries.items():
        summary = arms[comparison.arm]
        out[seed] = (accuracy(summary, comparison.variant, comparison.attack)
                     - accuracy(summary, comparison.reference, comparison.attack))
    return out


def _has_spread(values: Sequence[float]) -> bool:
    return len(values) >= 2 and statistics.pstdev(values) > 0


def t_test(values: Sequence[float], margin: float | None = None, confidence: float = 0.95
           ) -> dict[str, Any]:
    """SciPy's one-sample t-test of the per-seed differences: of no difference (two-sided), or,
    with a margin, of non-inferiority (H0: the mean difference is at most -margin; one-sided).
    The interval is always the two-sided `confidence` t interval of the mean."""
    from scipy.stats import ttest_1samp

    result: dict[str, Any] = {"n_seeds": len(values),
                              "mean": _sig(statistics.fmean(values)) if values else None,
                              "sd": _sig(statistics.stdev(values)) if len(values) > 1 else None}
    if not _has_spread(values):
        result.update(ci95=None, p=None, testable=False)
        return result
    null, alternative = (0.0, "two-sided") if margin is None else (-margin, "greater")
    test = ttest_1samp(list(values), null, alternative=alternative)
    interval = ttest_1samp(list(values), 0.0).confidence_interval(confidence)
    result.update(ci95=[_sig(interval.low), _sig(interval.high)], p=_sig(float(test.pvalue)),
                  testable=True, t=_sig(float(test.statistic)), df=len(values) - 1)
    return result


def tost(variant: Sequence[float], reference: Sequence[float], margin: float) -> dict[str, Any]:
    """statsmodels' paired two one-sided tests: is the mean of variant - reference within
    (-margin, +margin)? With the 90% t interval, whose inclusion in the margins is the same
    decision at alpha 0.05."""
    import numpy as np
    from statsmodels.stats.weightstats import ttost_paired

    diffs = [a - b for a, b in zip(variant, reference, strict=True)]
    result = t_test(diffs)
    if not result["testable"]:
        result.update(tost_p=None)
        return result
    p, _, _ = ttost_paired(np.asarray(variant, dtype=float), np.asarray(reference, dtype=float),
                           -margin, margin)
    from scipy.stats import ttest_1samp

    interval = ttest_1samp(diffs, 0.0).confidence_interval(0.90)
    result.update(tost_p=_sig(float(p)), ci90=[_sig(interval.low), _sig(interval.high)])
    return result


def holm(p_values: Sequence[float | None], alpha: float) -> list[float]:
    """statsmodels' Holm adjustment; an untestable member counts in the family as p = 1."""
    from statsmodels.stats.multitest import multipletests

    if not p_values:
        return []
    filled = [1.0 if p is None else p for p in p_values]
    return [float(p) for p in multipletests(filled, alpha=alpha, method="holm")[1]]


def mcnemar_p(only_variant: int, only_reference: int) -> float:
    """statsmodels' exact McNemar test of one seed's paired outcomes: it describes those two
    trained models on these test examples, not the method."""
    from statsmodels.stats.contingency_tables import mcnemar

    return float(mcnemar([[0, only_reference], [only_variant, 0]], exact=True).pvalue)


def _row(comparison: Comparison, summaries: Summaries) -> dict[str, Any]:
    diffs = differences(summaries, comparison)
    row: dict[str, Any] = {"name": comparison.name, "arm": comparison.arm,
                           "variant": comparison.variant, "reference": comparison.reference,
                           "attack": comparison.attack, "margin": comparison.margin,
                           "per_seed": {str(seed): _sig(value) for seed, value in diffs.items()}}
    row.update(t_test(list(diffs.values()), comparison.margin))
    pair = f"{comparison.variant}-{comparison.reference}"
    row["mcnemar_p"] = {}
    for seed, arms in summaries.items():
        counts = arms[comparison.arm]["pairs"].get(pair, {}).get(comparison.attack)
        if counts is not None:
            row["mcnemar_p"][str(seed)] = _sig(mcnemar_p(counts["only_variant"],
                                                          counts["only_reference"]))
    return row


def _read_only_when_complete(row: dict[str, Any], complete: bool) -> None:
    if not complete:
        for key in ("p", "ci95", "t", "df", "tost_p", "ci90"):
            row.pop(key, None)


def analyse(config: StudyConfig, summaries: Summaries, pilot: Mapping[str, Any] | None
            ) -> dict[str, Any]:
    """The study.json dict: each pre-registered comparison with its per-seed differences, and,
    once every seed has run, its interval and test."""
    analysis = config.analysis
    done = sorted(summaries)
    complete = done == sorted(config.seeds)
    result: dict[str, Any] = {"seeds_planned": list(config.seeds), "seeds_done": done,
                              "complete": complete, "alpha": analysis.alpha}
    if not summaries:
        result.update(primary=None, secondary=[], replication=[])
        result["planning"] = planning(config, pilot)
        return result
    primary = _row(analysis.primary, summaries)
    primary["detected"] = (bool(primary["p"] is not None and primary["p"] <= analysis.alpha)
                           if complete else None)
    _read_only_when_complete(primary, complete)
    secondary = [_row(comparison, summaries) for comparison in analysis.secondary]
    for row, adjusted in zip(secondary, holm([row["p"] for row in secondary], analysis.alpha),
                             strict=True):
        row["holm_p"] = _sig(adjusted) if complete else None
        row["detected"] = (row["testable"] and adjusted <= analysis.alpha) if complete else None
        _read_only_when_complete(row, complete)
    replication = []
    rep = analysis.replication
    for comparison in rep.comparisons():
        row = _row(comparison, summaries)
        seeds = sorted(summaries)
        variant = [accuracy(summaries[s][comparison.arm], comparison.variant,
                            comparison.attack) for s in seeds]
        reference = [accuracy(summaries[s][comparison.arm], comparison.reference,
                              comparison.attack) for s in seeds]
        equivalence = tost(variant, reference, rep.margin)
        row.update(tost_p=equivalence["tost_p"], ci90=equivalence.get("ci90"),
                   margin=rep.margin)
        replication.append(row)
    for row, adjusted in zip(replication, holm([row["tost_p"] for row in replication],
                                               analysis.alpha), strict=True):
        row["holm_p"] = _sig(adjusted) if complete else None
        row["equivalent"] = ((row["tost_p"] is not None and adjusted <= analysis.alpha)
                             if complete else None)
        _read_only_when_complete(row, complete)
    result.update(primary=primary, secondary=secondary, replication=replication)
    result["arms"] = {arm: _arm(summaries, arm, config.controls) for arm in config.arms}
    result["planning"] = planning(config, pilot)
    return result


def _arm(summaries: Summaries, arm: str, controls: Sequence[str]) -> dict[str, Any]:
    doses = [arms[arm]["dose"] for arms in summaries.values()]
    checks = [arms[arm]["budget_checks"] for arms in summaries.values()]
    matched = all(check[control]["max_mean_budget_gap"] == 0 for check in checks
                  for control in controls)
    counts = all(check[control].get("counts_equal", True) for check in checks
                 for control in controls)
    first = next(iter(summaries.values()))[arm]
    return {"dose": _sig(statistics.fmean(doses)), "mask_rule": first["mask_rule"],
            "quantile": first["quantile"], "eps_low": first["eps_low"], "eps": first["eps"],
            "controls_spent_parts_budget": matched, "random_mask_counts_equal": counts}


def _pilot_differences(pilot: Mapping[str, Any], comparison: Comparison) -> list[float] | None:
    for row in pilot.get("primary_rows", []):
        if (row["variant"], row["control"], row["attack"]) == (
                comparison.variant, comparison.reference, comparison.attack):
            return list(row["per_seed"].values())
    return None


def planning(config: StudyConfig, pilot: Mapping[str, Any] | None) -> dict[str, Any]:
    """How many seeds: statsmodels' one-sample t-test power at the planning SD, beside the
    pilot's own SD and its chi-square upper bounds (2 degrees of freedom from 3 seeds)."""
    from scipy.stats import chi2
    from statsmodels.stats.power import TTestPower

    plan = config.analysis.planning
    power = TTestPower()
    alpha = config.analysis.alpha
    needed = power.solve_power(effect_size=plan.difference / plan.sd, alpha=alpha,
                               power=plan.power, alternative="two-sided")
    n = len(config.seeds)
    result: dict[str, Any] = {
        "difference": plan.difference, "sd": plan.sd, "power": plan.power, "alpha": alpha,
        "seeds_needed": _sig(float(needed)), "seeds_planned": n,
        "power_at_planning_sd": _sig(float(power.power(plan.difference / plan.sd, n, alpha))),
        "pilot": None}
    values = _pilot_differences(pilot, plan.pilot_comparison) if pilot else None
    if values and _has_spread(values):
        sd = statistics.stdev(values)
        df = len(values) - 1
        upper80 = sd * math.sqrt(df / chi2.ppf(0.2, df))
        result["pilot"] = {
            "summary": plan.pilot_summary, "comparison": plan.pilot_comparison.name,
            "per_seed": [_sig(v) for v in values], "sd": _sig(sd), "df": df,
            "sd_upper80": _sig(upper80),
            # how far up the pilot SD's distribution the planning SD lies
            "planning_sd_confidence": _sig(float(chi2.sf(df * sd ** 2 / plan.sd ** 2, df))),
            "seeds_needed_at_upper80": _sig(float(power.solve_power(
                effect_size=plan.difference / upper80, alpha=alpha, power=plan.power,
                alternative="two-sided"))),
            "power_at_upper80": _sig(float(power.power(plan.difference / upper80, n, alpha)))}
    return result


def pilot_summary(config: StudyConfig) -> Mapping[str, Any] | None:
    import json

    path = Path(config.analysis.planning.pilot_summary)
    if not path.is_relative_to(PILOT_DIR) or not path.is_file():
        return None
    return json.loads(path.read_text())
