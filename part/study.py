"""Paired statistics over seeds and variants: the content of reports/study.json.

For each variant and attack: the accuracy per seed with its n and a Wilson 95% interval, the mean
and sample standard deviation over seeds; and, against the baseline of the same seed, the
difference per seed, its mean with a 95% Student-t interval over seeds (null below 2 seeds), and
the two-sided exact McNemar p-value of each seed's paired per-example outcomes.

Pure Python on counts: no SciPy at run time (tests check every figure against scipy.stats).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from part.attack_suite import ATTACKS
from part.errors import PartError
from part.variants import BASELINE

WORST_CASE = "worst_case"
WORST_CASE_AUTOATTACK = "worst_case_autoattack"
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


class StudyError(PartError):
    pass


# --------------------------------------------------------------------------- statistics


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion correct / n."""
    if n <= 0:
        raise ValueError("n must be positive")
    p = correct / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)


def mcnemar_exact_p(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts: twice the binomial(b + c, 1/2)
    tail of the smaller count, capped at 1 (1 when there are no discordant pairs)."""
    total = only_first + only_second
    if total == 0:
        return 1.0
    tail = sum(math.comb(total, k) for k in range(min(only_first, only_second) + 1))
    # Exact integers and one correctly rounded division: no overflow for thousands of pairs.
    return min(1.0, 2 * tail / 2**total)


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), by its continued fraction."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast on this side only
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * fraction / a


def student_t_cdf(t: float, df: int) -> float:
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def student_t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with df degrees of freedom (bisection on the CDF)."""
    if not 0 < p < 1 or df < 1:
        raise ValueError("need 0 < p < 1 and df >= 1")
    if p < 0.5:
        return -student_t_quantile(1 - p, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        if student_t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """The Student-t interval of the mean of `values`; None below two values."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    half = (student_t_quantile(0.5 + confidence / 2, len(values) - 1)
            * statistics.stdev(values) / math.sqrt(len(values)))
    return mean - half, mean + half


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Evaluated:
    """One model's metrics file and per-example outcomes."""

    metrics: dict[str, Any]
    outcomes: dict[str, Tensor]


PathFor = Callable[[str, int], Path]


def load_study_inputs(seeds: Sequence[int], variants: Sequence[str], metrics_path: PathFor,
                      outcomes_path: PathFor) -> dict[tuple[str, int], Evaluated]:
    """Every (variant, seed)'s metrics and outcomes, checked against each other."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    inputs = {}
    for seed in seeds:
        for variant in variants:
            stage = f"evaluate@{variant}-{seed}"
            path = metrics_path(variant, seed)
            if not path.is_file():
                raise StudyError(f"{path}: no metrics file; run `dvc repro {stage}`")
            try:
                metrics = json.loads(path.read_text())
                outcomes = load_file(str(outcomes_path(variant, seed)))
            except (OSError, json.JSONDecodeError, SafetensorError) as error:
                raise StudyError(f"{path} or its outcomes file cannot be read ({error}); run "
                                 f"`dvc repro -f {stage}`") from None
            _check_consistent(metrics, outcomes, stage)
            inputs[(variant, seed)] = Evaluated(metrics, outcomes)
    return inputs


def _check_consistent(metrics: Mapping[str, Any], outcomes: Mapping[str, Tensor],
                      stage: str) -> None:
    for key, vector in outcomes.items():
        n = metrics.get(f"n_{key}")
        if n != vector.numel() or int(vector.sum()) != round(metrics.get(key, -1) * n):
            raise StudyError(f"the outcomes of {key} do not add up to the accuracy in the "
                             f"metrics of {stage}; rerun it with `dvc repro -f {stage}`")


# --------------------------------------------------------------------------- the study


def _sig(value: float) -> float:
    return float(f"{value:.6g}")


def _attacks(inputs: Mapping[tuple[str, int], Evaluated]) -> list[str]:
    shared = set.intersection(*(set(item.outcomes) for item in inputs.values()))
    return [key for key in (*ATTACKS, WORST_CASE, WORST_CASE_AUTOATTACK) if key in shared]


def study(inputs: Mapping[tuple[str, int], Evaluated], seeds: Sequence[int],
          variants: Sequence[str]) -> dict[str, Any]:
    """The reports/study.json dict (see the README, "Reading the study")."""
    if BASELINE not in variants:
        raise StudyError(f"variants must include {BASELINE}: every comparison is paired with it")
    attacks = _attacks(inputs)
    if not attacks:
        raise StudyError("the evaluations share no attack; give every model the same eval.attacks")
    result: dict[str, Any] = {"seeds": list(seeds), "baseline": BASELINE, "attacks": attacks,
                              "variants": {}}
    for variant in variants:
        result["variants"][variant] = {
            attack: _summary(inputs, seeds, variant, attack) for attack in attacks}
    return result


def _summary(inputs: Mapping[tuple[str, int], Evaluated], seeds: Sequence[int], variant: str,
             attack: str) -> dict[str, Any]:
    vectors = {str(seed): inputs[(variant, seed)].outcomes[attack] for seed in seeds}
    counts = {seed: vector.numel() for seed, vector in vectors.items()}
    corrects = {seed: int(vector.sum()) for seed, vector in vectors.items()}
    accuracies = {seed: corrects[seed] / counts[seed] for seed in vectors}
    wilson = {seed: [_sig(bound) for bound in wilson_interval(corrects[seed], counts[seed])]
              for seed in vectors}
    ns = set(counts.values())
    summary: dict[str, Any] = {
        "per_seed": {seed: _sig(value) for seed, value in accuracies.items()},
        "n": ns.pop() if len(ns) == 1 else counts,
        "mean": _sig(statistics.fmean(accuracies.values())),
        "std": _sig(statistics.stdev(list(accuracies.values()))) if len(accuracies) > 1 else None,
        "wilson95": wilson,
    }
    if variant != BASELINE:
        summary["diff"] = _paired(inputs, seeds, variant, attack)
    return summary


def _paired(inputs: Mapping[tuple[str, int], Evaluated], seeds: Sequence[int], variant: str,
            attack: str) -> dict[str, Any]:
    diffs, p_values, discordant = {}, {}, {}
    for seed in seeds:
        ours = inputs[(variant, seed)].outcomes[attack]
        base = inputs[(BASELINE, seed)].outcomes[attack]
        if ours.shape != base.shape:
            raise StudyError(
                f"{attack}: {variant}-{seed} was scored on {ours.numel()} examples and "
                f"{BASELINE}-{seed} on {base.numel()}; a paired comparison needs the same ones: "
                f"rerun both evaluations with the same eval settings")
        only_base = int((base & ~ours).sum())
        only_ours = int((ours & ~base).sum())
        diffs[str(seed)] = (only_ours - only_base) / ours.numel()
        p_values[str(seed)] = _sig(mcnemar_exact_p(only_base, only_ours))
        discordant[str(seed)] = {"only_baseline": only_base, "only_variant": only_ours}
    interval = t_interval(list(diffs.values()))
    return {"per_seed": {seed: _sig(value) for seed, value in diffs.items()},
            "mean": _sig(statistics.fmean(diffs.values())),
            "t95": [_sig(bound) for bound in interval] if interval else None,
            "mcnemar_p": p_values,
            "discordant": discordant}
