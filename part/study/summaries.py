"""One arm of the dose-response study condensed into a git-tracked summary
(study/summaries/<arm>.json): its dose, the checks that its controls spent PART's budget, its
arm's statistics and its primary rows before Holm's correction, read from the arm's params,
metrics, outcomes and traces. The report reads only the summaries, so a fresh clone without
the DVC cache shows the committed study current. Run from the study's directory.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from part.errors import PartError
from part.evaluation.statistics import (
    Evaluated,
    StudyError,
    load_study_inputs,
    paired,
    study,
)
from part.importance.variants import BASELINE, PART
from part.io.atomic import atomic_write_text
from part.io.paths import metrics_path, outcomes_path, trace_path
from part.params import Params, load_params
from part.study.config import SHARED, StudyConfig, load_study_config, run_dir_path, summary_path


class StudyReportError(PartError):
    pass


def _in(run_dir: str, path: Path) -> Path:
    return run_dir_path(run_dir) / path


def run_params(run_dir: str) -> Params:
    path = _in(run_dir, Path("params.yaml"))
    if not path.is_file():
        raise StudyReportError(f"{path}: missing; run `dvc repro` in the study's directory")
    return load_params(path)


def _check_same_runs(shared: Params, arm: str, params: Params) -> None:
    """The arm must share what pairing it with the shared baseline needs."""
    for key in ("seeds", "dataset", "model", "method", "eps", "epochs", "burn_in_epochs",
                "data", "train", "eval"):
        if getattr(shared, key) != getattr(params, key):
            raise StudyReportError(
                f"{_in(arm, Path('params.yaml'))} and {SHARED}/params.yaml differ in `{key}`; "
                "the arm cannot be paired with the shared baseline: run `dvc repro` in the "
                "study's directory")


def _arm_inputs(arm: str, seeds: Sequence[int], controls: Sequence[str]
                ) -> dict[tuple[str, int], Evaluated]:
    try:
        return _load_arm_inputs(arm, seeds, controls)
    except StudyError as error:  # its fix names the main pipeline's stages
        raise StudyReportError(f"{error} (in the study: run `dvc repro` in its directory)"
                               ) from None


def _load_arm_inputs(arm: str, seeds: Sequence[int], controls: Sequence[str]
                     ) -> dict[tuple[str, int], Evaluated]:
    inputs = load_study_inputs(seeds, [BASELINE], lambda v, s: _in(SHARED, metrics_path(v, s)),
                               lambda v, s: _in(SHARED, outcomes_path(v, s)))
    inputs.update(load_study_inputs(seeds, [PART, *controls],
                                    lambda v, s: _in(arm, metrics_path(v, s)),
                                    lambda v, s: _in(arm, outcomes_path(v, s))))
    return inputs


def _dose(arm: str, params: Params, controls: Sequence[str]) -> tuple[dict[str, float],
                                                                         dict[str, Any]]:
    """PART's mean budget per seed (over its epochs, as a fraction of eps), and how exactly each
    control's recorded budget followed it."""
    from part.importance.budget_trace import load_trace

    doses, checks = {}, {}
    for seed in params.seeds:
        part = load_trace(_in(arm, trace_path(PART, seed)))
        doses[str(seed)] = statistics.fmean(part.mean_budgets) / params.eps
        for control in controls:
            trace = load_trace(_in(arm, trace_path(control, seed)))
            if trace.epochs != part.epochs:
                raise StudyReportError(f"{arm}: the trace of {control}-{seed} covers other "
                                       "epochs than PART's; run `dvc repro` in the study")
            gap = max(abs(a - b) for a, b in zip(trace.mean_budgets, part.mean_budgets,
                                                 strict=True))
            check: dict[str, Any] = {"max_mean_budget_gap": gap}
            if trace.counts:
                check["counts_equal"] = all(bool((a == b).all()) for a, b in
                                            zip(trace.counts, part.counts, strict=True))
            checks.setdefault(control, {})[str(seed)] = check
    return doses, checks


def _paired_rows(config: StudyConfig, arm: str, dose: float,
                 inputs: Mapping[tuple[str, int], Evaluated], seeds: Sequence[int]
                 ) -> list[dict[str, Any]]:
    """One arm's primary comparisons, before the family's correction."""
    primary = config.primary
    return [{"arm": arm, "dose": dose, "variant": variant, "control": control, "attack": attack,
             **paired(inputs, seeds, variant, control, attack, primary.alpha, primary.power)}
            for variant, control in primary.comparisons for attack in primary.attacks]


def summarize_arm(arm: str) -> dict[str, Any]:
    """What the report needs of one arm: its settings, dose, budget checks, the study of its
    variants against the shared baseline, and its primary comparisons before Holm."""
    config = load_study_config()
    if arm not in config.arms:
        raise StudyReportError(f"no arm named {arm!r} in study/params.yaml; the arms: "
                               f"{', '.join(config.arms)}")
    shared = run_params(SHARED)
    seeds = list(shared.seeds)
    params = run_params(arm)
    _check_same_runs(shared, arm, params)
    inputs = _arm_inputs(arm, seeds, config.controls)
    doses, checks = _dose(arm, params, config.controls)
    dose = statistics.fmean(doses.values())
    return {
        "mask_rule": params.mask_rule,
        "quantile": params.mask.quantile if params.mask_rule == "quantile" else None,
        "cam": params.cam, "eps_low": params.eps_low,
        "dose": dose, "dose_per_seed": doses, "budget_checks": checks,
        "study": study(inputs, seeds, [BASELINE, PART, *config.controls],
                       config.primary.alpha, config.primary.power),
        "primary_rows": _paired_rows(config, arm, dose, inputs, seeds)}


def write_arm_summary(arm: str) -> Path:
    summary = summarize_arm(arm)
    path = summary_path(arm)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
    return path


def load_summary(arm: str) -> dict[str, Any]:
    path = summary_path(arm)
    if not path.is_file():
        raise StudyReportError(f"{path}: missing; run `dvc repro` in the study's directory "
                               f"(its stage summarize@{arm} writes it)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise StudyReportError(f"{path}: not a summary ({error}); delete it and run `dvc repro` "
                               "in the study's directory") from None
