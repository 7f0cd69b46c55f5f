"""One arm of one seed of the study condensed into a git-tracked summary
(study/summaries/<seed>/<arm>.json): the arm's dose, the checks that its controls spent PART's
budget, and every model's correct count and paired discordant counts on each attack, read from
the run directories' params, metrics, outcomes and traces. The analysis reads only the summaries,
so a fresh clone without the DVC cache shows the committed study current and a new seed adds its
own summaries beside the others. Run from the study's directory.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from part.errors import PartError
from part.evaluation.statistics import Evaluated, StudyError, discordant_counts, load_study_inputs
from part.importance.variants import BASELINE, PART
from part.io.atomic import atomic_write_text
from part.io.paths import metrics_path, outcomes_path, trace_path
from part.params import Params, load_params
from part.study.config import AT_RUN, load_study_config, run_dir_path, summary_path


class StudyReportError(PartError):
    pass


def run_params(seed: int, run_dir: str) -> Params:
    path = run_dir_path(seed, run_dir) / "params.yaml"
    if not path.is_file():
        raise StudyReportError(f"{path}: missing; run `dvc repro --allow-missing` in the study's "
                               "directory")
    return load_params(path)


def _check_same_runs(shared: Params, seed: int, arm: str, params: Params) -> None:
    """The arm must share what pairing it with its seed's AT baseline needs."""
    for key in ("seeds", "dataset", "model", "method", "eps", "epochs", "burn_in_epochs",
                "data", "train", "eval"):
        if getattr(shared, key) != getattr(params, key):
            raise StudyReportError(
                f"{run_dir_path(seed, arm)}/params.yaml and {run_dir_path(seed, AT_RUN)}/"
                f"params.yaml differ in `{key}`; the arm cannot be paired with the AT baseline: "
                "run `dvc repro --allow-missing` in the study's directory")


def _inputs(seed: int, arm: str, controls: Sequence[str]) -> dict[tuple[str, int], Evaluated]:
    def where(run_dir: str):
        return (lambda v, s: run_dir_path(seed, run_dir) / metrics_path(v, s),
                lambda v, s: run_dir_path(seed, run_dir) / outcomes_path(v, s))

    try:
        inputs = load_study_inputs([seed], [BASELINE], *where(AT_RUN))
        inputs.update(load_study_inputs([seed], [PART, *controls], *where(arm)))
    except StudyError as error:  # its fix names the main pipeline's stages
        raise StudyReportError(f"{error} (in the study: run `dvc repro --allow-missing` in its "
                               "directory)") from None
    return inputs


def _budget(seed: int, arm: str, params: Params, controls: Sequence[str]
            ) -> tuple[float, dict[str, Any]]:
    """PART's mean budget (over its epochs, as a fraction of eps), and how exactly each
    control's recorded budget followed it."""
    from part.importance.budget_trace import load_trace

    where = run_dir_path(seed, arm)
    part = load_trace(where / trace_path(PART, seed))
    checks = {}
    for control in controls:
        trace = load_trace(where / trace_path(control, seed))
        if trace.epochs != part.epochs:
            raise StudyReportError(f"{where}: the trace of {control}-{seed} covers other epochs "
                                   "than PART's; run `dvc repro --allow-missing` in the study")
        gap = max(abs(a - b) for a, b in zip(trace.mean_budgets, part.mean_budgets, strict=True))
        check: dict[str, Any] = {"max_mean_budget_gap": gap}
        if trace.counts:
            check["counts_equal"] = all(bool((a == b).all()) for a, b in
                                        zip(trace.counts, part.counts, strict=True))
        checks[control] = check
    return statistics.fmean(part.mean_budgets) / params.eps, checks


def _counts(inputs: Mapping[tuple[str, int], Evaluated], seed: int, attacks: Sequence[str]
            ) -> dict[str, dict[str, dict[str, int]]]:
    return {variant: {attack: {"correct": int(item.outcomes[attack].sum()),
                               "n": int(item.outcomes[attack].numel())} for attack in attacks}
            for (variant, _), item in inputs.items()}


def _pairs(inputs: Mapping[tuple[str, int], Evaluated], seed: int, attacks: Sequence[str],
           controls: Sequence[str]) -> dict[str, dict[str, dict[str, int]]]:
    """PART against the AT baseline and each control, and each control against the baseline:
    the examples only one of the two gets right (their difference over n is the accuracy
    difference; the pair is McNemar's)."""
    pairs: dict[str, dict[str, dict[str, int]]] = {}
    for variant, reference in ([(PART, BASELINE), *((PART, c) for c in controls),
                                *((c, BASELINE) for c in controls)]):
        by_attack = {}
        for attack in attacks:
            ours = inputs[(variant, seed)].outcomes[attack]
            theirs = inputs[(reference, seed)].outcomes[attack]
            if ours.shape != theirs.shape:
                raise StudyReportError(
                    f"{attack}: {variant}-{seed} was scored on {ours.numel()} examples and "
                    f"{reference}-{seed} on {theirs.numel()}; a paired comparison needs the "
                    "same ones: run `dvc repro --allow-missing` in the study")
            only_ours, only_theirs = discordant_counts(ours, theirs)
            by_attack[attack] = {"only_variant": only_ours, "only_reference": only_theirs}
        pairs[f"{variant}-{reference}"] = by_attack
    return pairs


def summarize(seed: int, arm: str) -> dict[str, Any]:
    """What the analysis needs of one arm and seed."""
    config = load_study_config()
    if arm not in config.arms:
        raise StudyReportError(f"no arm named {arm!r} in study/params.yaml; the arms: "
                               f"{', '.join(config.arms)}")
    shared = run_params(seed, AT_RUN)
    params = run_params(seed, arm)
    _check_same_runs(shared, seed, arm, params)
    inputs = _inputs(seed, arm, config.controls)
    attacks = list(params.eval.attacks)
    dose, checks = _budget(seed, arm, params, config.controls)
    return {"seed": seed, "arm": arm, "mask_rule": params.mask_rule,
            "quantile": params.mask.quantile if params.mask_rule == "quantile" else None,
            "cam": params.cam, "eps": params.eps, "eps_low": params.eps_low,
            "dose": dose, "budget_checks": checks,
            "accuracy": _counts(inputs, seed, attacks),
            "pairs": _pairs(inputs, seed, attacks, config.controls)}


def write_summary(seed: int, arm: str) -> Path:
    summary = summarize(seed, arm)
    path = summary_path(seed, arm)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
    return path


def load_summary(seed: int, arm: str) -> dict[str, Any] | None:
    """The summary of one arm and seed; None where that seed has not run yet."""
    path = summary_path(seed, arm)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise StudyReportError(f"{path}: not a summary ({error}); delete it and run "
                               "`dvc repro --allow-missing` in the study's directory") from None
