"""Paired statistics over seeds and variants: the content of reports/study.json.

For each variant and attack: the accuracy per seed with its n and a Wilson 95% interval, the mean
and sample standard deviation over seeds; and, against the baseline of the same seed (and, for
PART, against each control), the difference per seed, its mean with a 95% Student-t interval over
seeds (null below 2 seeds), and the two-sided exact McNemar p-value of each seed's paired
per-example outcomes. The statistics are SciPy's (scipy.stats).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from part.attacks.suite import ATTACKS
from part.errors import PartError
from part.evaluation.outcomes import WORST_CASE, WORST_CASE_AUTOATTACK
from part.importance.variants import BASELINE, CONTROLS, PART


class StudyError(PartError):
    pass


# --------------------------------------------------------------------------- statistics


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion correct / n."""
    from scipy.stats import binomtest

    if n <= 0:
        raise ValueError("n must be positive")
    interval = binomtest(correct, n).proportion_ci(confidence, method="wilson")
    return max(0.0, float(interval.low)), min(1.0, float(interval.high))


def mcnemar_exact_p(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts: the binomial test of one count
    out of both at 1/2 (1 when there are no discordant pairs)."""
    from scipy.stats import binomtest

    total = only_first + only_second
    if total == 0:
        return 1.0
    return float(binomtest(only_first, total, 0.5).pvalue)


def student_t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with df degrees of freedom."""
    from scipy.stats import t

    if not 0 < p < 1 or df < 1:
        raise ValueError("need 0 < p < 1 and df >= 1")
    return float(t.ppf(p, df))


def _spread(values: Sequence[float]) -> bool:
    return len(values) >= 2 and statistics.pstdev(values) > 0


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """The Student-t interval of the mean of `values` (SciPy's one-sample t-test); None below two
    values or when they are all equal (no spread: the interval cannot be computed)."""
    from scipy.stats import ttest_1samp

    if not _spread(values):
        return None
    interval = ttest_1samp(list(values), 0.0).confidence_interval(confidence)
    return float(interval.low), float(interval.high)


def t_test_p(values: Sequence[float], null: float = 0.0, alternative: str = "two-sided"
             ) -> float | None:
    """SciPy's one-sample t-test p-value of mean `null`; None below two values or when they are
    all equal: without spread the mean cannot be tested (and is never a detection)."""
    from scipy.stats import ttest_1samp

    if not _spread(values):
        return None
    return float(ttest_1samp(list(values), null, alternative=alternative).pvalue)


def detectable_difference(spread: float, n: int, alpha: float = 0.05, power: float = 0.8
                          ) -> float | None:
    """The smallest true mean difference a two-sided one-sample t-test of n values with this
    standard deviation detects with the given power at level alpha (statsmodels' TTestPower);
    None below two values or without spread."""
    from statsmodels.stats.power import TTestPower

    if n < 2 or not spread > 0:
        return None
    effect = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power,
                                      alternative="two-sided")
    return float(effect) * spread


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (statsmodels' multipletests)."""
    from statsmodels.stats.multitest import multipletests

    if not p_values:
        return []
    return [float(p) for p in multipletests(list(p_values), method="holm")[1]]


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
          variants: Sequence[str], alpha: float = 0.05, power: float = 0.8) -> dict[str, Any]:
    """The reports/study.json dict (docs/evaluation.md, "The report"): every variant against
    the baseline and, when PART and controls are present, PART against each control."""
    if BASELINE not in variants:
        raise StudyError(f"variants must include {BASELINE}: every comparison is paired with it")
    attacks = _attacks(inputs)
    if not attacks:
        raise StudyError("the evaluations share no attack; give every model the same eval.attacks")
    result: dict[str, Any] = {"seeds": list(seeds), "baseline": BASELINE, "attacks": attacks,
                              "alpha": alpha, "power": power, "variants": {}, "contrasts": {}}
    for variant in variants:
        result["variants"][variant] = {
            attack: _summary(inputs, seeds, variant, attack, alpha, power) for attack in attacks}
    if PART in variants:
        for control in (variant for variant in CONTROLS if variant in variants):
            result["contrasts"][contrast_name(PART, control)] = {
                attack: paired(inputs, seeds, PART, control, attack, alpha, power)
                for attack in attacks}
    return result


def discordant_counts(ours: Tensor, theirs: Tensor) -> tuple[int, int]:
    """The paired examples only `ours` gets right, and only `theirs` does (McNemar's pair)."""
    return int((ours & ~theirs).sum()), int((theirs & ~ours).sum())


def contrast_name(variant: str, reference: str) -> str:
    return f"{variant}-{reference}"


def _summary(inputs: Mapping[tuple[str, int], Evaluated], seeds: Sequence[int], variant: str,
             attack: str, alpha: float, power: float) -> dict[str, Any]:
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
        summary["diff"] = paired(inputs, seeds, variant, BASELINE, attack, alpha, power)
    return summary


def paired(inputs: Mapping[tuple[str, int], Evaluated], seeds: Sequence[int], variant: str,
           reference: str, attack: str, alpha: float = 0.05, power: float = 0.8
           ) -> dict[str, Any]:
    """`variant` minus `reference` on the same seeds and test examples: per seed, the mean with
    its t interval, the t-test over seeds, the difference it could detect, and McNemar per seed.
    """
    diffs, p_values, discordant = {}, {}, {}
    for seed in seeds:
        ours = inputs[(variant, seed)].outcomes[attack]
        theirs = inputs[(reference, seed)].outcomes[attack]
        if ours.shape != theirs.shape:
            raise StudyError(
                f"{attack}: {variant}-{seed} was scored on {ours.numel()} examples and "
                f"{reference}-{seed} on {theirs.numel()}; a paired comparison needs the same ones: "
                f"rerun both evaluations with the same eval settings")
        only_ours, only_theirs = discordant_counts(ours, theirs)
        diffs[str(seed)] = (only_ours - only_theirs) / ours.numel()
        p_values[str(seed)] = _sig(mcnemar_exact_p(only_theirs, only_ours))
        discordant[str(seed)] = {f"only_{reference}": only_theirs, "only_variant": only_ours}
    values = list(diffs.values())
    interval = t_interval(values)
    p_value = t_test_p(values)
    detectable = (detectable_difference(statistics.stdev(values), len(values), alpha, power)
                  if len(values) > 1 else None)
    return {"per_seed": {seed: _sig(value) for seed, value in diffs.items()},
            "mean": _sig(statistics.fmean(values)),
            "t95": [_sig(bound) for bound in interval] if interval else None,
            "t_test_p": None if p_value is None else _sig(p_value),
            "detectable": None if detectable is None else _sig(detectable),
            "mcnemar_p": p_values,
            "discordant": discordant}
