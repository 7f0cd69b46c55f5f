"""The dose-response study's report (study/report/): what each arm's PART and controls did against
the shared AT baseline and against each other, as the dose (the mean budget PART spent) falls.

Every comparison is paired: the same seed (so the same burn-in, batches and random starts) and
the same test examples. The primary family (study/params.yaml, `primary`, named before the study
ran) is tested by a one-sample t-test of the per-seed differences, Holm-corrected over the whole
family; every difference carries its 95% t interval over seeds and the smallest difference the
seeds' spread lets the test detect at the stated power. Run from the study's directory.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from part.evaluation.report import LABELS, _interval, _points, _signed, save_png
from part.evaluation.statistics import (
    detectable_difference,
    holm_adjusted,
)
from part.importance.variants import BASELINE
from part.study.config import REPORT_DIR, SHARED, StudyConfig, load_study_config, summary_path
from part.study.summaries import StudyReportError, load_summary, run_params

STUDY_JSON = REPORT_DIR / "study.json"
RESULTS = REPORT_DIR / "results.md"
CONTRAST_PLOT = REPORT_DIR / "part_minus_controls.png"
BASELINE_PLOT = REPORT_DIR / "variants_minus_at.png"


def _holm(config: StudyConfig, rows: list[dict[str, Any]], seeds: Sequence[int]) -> None:
    primary = config.primary
    adjusted = holm_adjusted([row["t_test_p"] if row["t_test_p"] is not None else 1.0
                              for row in rows])
    strictest = primary.alpha / len(rows)
    for row, holm in zip(rows, adjusted, strict=True):
        row["holm_p"] = holm
        row["detected"] = holm <= primary.alpha
        spread = statistics.stdev(row["per_seed"].values()) if len(seeds) > 1 else 0.0
        # what Holm's first step (the smallest p-value, at alpha / m) could detect
        row["detectable_holm_first"] = detectable_difference(spread, len(seeds), strictest,
                                                             primary.power)


def build_study() -> dict[str, Any]:
    """The study from every arm's summary (summaries/<arm>.json): the primary family is
    corrected here, across the arms."""
    config = load_study_config()
    shared = run_params(SHARED)
    seeds = list(shared.seeds)
    arms: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for arm in config.arms:
        summary = load_summary(arm)
        if summary["study"]["seeds"] != seeds:
            raise StudyReportError(f"{summary_path(arm)} covers seeds {summary['study']['seeds']}"
                                   f", the study {seeds}; run `dvc repro` in the study's "
                                   "directory")
        rows.extend(summary.pop("primary_rows"))
        arms[arm] = summary
    _holm(config, rows, seeds)
    return {"seeds": seeds, "eps": shared.eps, "dataset": shared.dataset,
            "model": shared.model, "method": shared.method, "epochs": shared.epochs,
            "burn_in_epochs": shared.burn_in_epochs,
            "primary": {"comparisons": [list(pair) for pair in config.primary.comparisons],
                        "attacks": list(config.primary.attacks), "alpha": config.primary.alpha,
                        "power": config.primary.power, "correction": "holm",
                        "test": "two-sided one-sample t-test of the per-seed paired differences",
                        "rows": rows},
            "arms": arms}


# --------------------------------------------------------------------------- text


def _pt(value: float | None, signed: bool = True) -> str:
    """A figure in points as the default run's report writes it; "-" where there is none
    (one seed has no spread)."""
    if value is None:
        return "-"
    return _signed(value) if signed else _points(value)


def _ci(bounds: Sequence[float] | None) -> str:
    return _interval(None if bounds is None else list(bounds), signed=True)


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _arm_label(arm: Mapping[str, Any]) -> str:
    rule = arm["mask_rule"] + (f" q={arm['quantile']:g}" if arm["quantile"] is not None else "")
    return f"{rule}, eps_low {arm['eps_low']:.4g}"


def primary_table(result: Mapping[str, Any]) -> str:
    primary = result["primary"]
    lines = ["| arm | dose | comparison | attack | difference [95% CI] | t-test p | Holm p | "
             f"detectable at {primary['power']:.0%} power (α={primary['alpha']:g}; Holm's "
             "first step) | reading |",
             "|---|---:|---|---|---:|---:|---:|---:|---|"]
    for row in primary["rows"]:
        if row["detected"]:
            reading = f"{'higher' if row['mean'] > 0 else 'lower'} (Holm p ≤ {primary['alpha']:g})"
        elif row["t_test_p"] is not None and row["t_test_p"] <= primary["alpha"]:
            # "less than X" would be false here: the uncorrected test rejects zero
            reading = f"not detected after Holm (uncorrected p ≤ {primary['alpha']:g})"
        elif row["detectable"] is not None:
            reading = (f"none detected: less than {100 * row['detectable']:.2f} "
                       f"({100 * row['detectable_holm_first']:.2f} at Holm's first step)")
        else:
            reading = "no spread over seeds: no test"
        lines.append(
            f"| {row['arm']} | {row['dose']:.3f} | {row['variant']} − {row['control']} | "
            f"{LABELS[row['attack']]} | {_pt(row['mean'])}{_ci(row['t95'])} | "
            f"{_p(row['t_test_p'])} | {_p(row['holm_p'])} | {_pt(row['detectable'], False)}; "
            f"{_pt(row['detectable_holm_first'], False)} | {reading} |")
    return "\n".join(lines)


def baseline_table(result: Mapping[str, Any]) -> str:
    variants = [v for v in next(iter(result["arms"].values()))["study"]["variants"]
                if v != BASELINE]
    lines = ["| arm | dose | attack | " + " | ".join(f"{v} − AT" for v in variants) + " |",
             "|---|---:|---|" + "---:|" * len(variants)]
    for name, arm in result["arms"].items():
        summary = arm["study"]
        for attack in summary["attacks"]:
            cells = []
            for variant in variants:
                diff = summary["variants"][variant][attack]["diff"]
                detectable = ("" if diff["detectable"] is None else
                              f" (≥{_pt(diff['detectable'], False)})")
                cells.append(f"{_pt(diff['mean'])}{_ci(diff['t95'])}{detectable}")
            lines.append(f"| {name} | {arm['dose']:.3f} | {LABELS[attack]} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def accuracy_table(result: Mapping[str, Any]) -> str:
    first = next(iter(result["arms"].values()))["study"]
    variants = list(first["variants"])
    lines = ["| arm | attack | " + " | ".join(variants) + " | n per seed |",
             "|---|---|" + "---:|" * len(variants) + "---:|"]
    for name, arm in result["arms"].items():
        summary = arm["study"]
        for attack in summary["attacks"]:
            cells = [f"{_pt(summary['variants'][v][attack]['mean'], False)} ± "
                     f"{_pt(summary['variants'][v][attack]['std'], False)}" for v in variants]
            lines.append(f"| {name} | {LABELS[attack]} | " + " | ".join(cells)
                         + f" | {summary['variants'][BASELINE][attack]['n']} |")
    return "\n".join(lines)


def arms_table(result: Mapping[str, Any]) -> str:
    lines = ["| arm | mask rule | eps_low / eps | PART's mean budget / AT's, per seed | mean | "
             "controls' budgets |", "|---|---|---:|---|---:|---|"]
    for name, arm in result["arms"].items():
        per_seed = ", ".join(f"{value:.4f}" for value in arm["dose_per_seed"].values())
        checks = []
        for control, per in arm["budget_checks"].items():
            gap = max(check["max_mean_budget_gap"] for check in per.values())
            text = (f"{control}: mean budget equal to PART's in every epoch" if gap == 0 else
                    f"{control}: mean budget within {gap:.1e} of PART's")
            if any("counts_equal" in check for check in per.values()):
                equal = all(check.get("counts_equal") for check in per.values())
                text += ", " + ("the same counts per image and epoch" if equal else
                                "COUNTS DIFFER")
            checks.append(text)
        rule = arm["mask_rule"] + (f" (q = {arm['quantile']:g})" if arm["quantile"] else "")
        lines.append(f"| {name} | {rule} | {arm['eps_low'] / result['eps']:.3f} | {per_seed} | "
                     f"{arm['dose']:.3f} | {'; '.join(checks)} |")
    return "\n".join(lines)


def per_seed_table(result: Mapping[str, Any]) -> str:
    seeds = [str(seed) for seed in result["seeds"]]
    lines = ["| arm | comparison | attack | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|---|---|" + "---:|" * len(seeds)]
    for row in result["primary"]["rows"]:
        cells = [f"{_pt(row['per_seed'][s])} (p={row['mcnemar_p'][s]:.3g})" for s in seeds]
        lines.append(f"| {row['arm']} | {row['variant']} − {row['control']} | "
                     f"{LABELS[row['attack']]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_study_report(result: Mapping[str, Any]) -> Path:
    from part.io.atomic import atomic_write_text

    primary = result["primary"]
    seeds = len(result["seeds"])
    n = next(iter(result["arms"].values()))["study"]["variants"][BASELINE]
    n_text = ", ".join(f"{LABELS[a]} n = {n[a]['n']}" for a in primary["attacks"])
    atomic_write_text(STUDY_JSON, json.dumps(result, indent=2) + "\n")
    save_dose_plot(CONTRAST_PLOT, result, "contrasts")
    save_dose_plot(BASELINE_PLOT, result, "baseline")
    detected = [row for row in primary["rows"] if row["detected"]]
    text = "\n\n".join([
        f"# Dose-response: PART against its controls on {result['dataset']}, {result['model']}, "
        f"{seeds} seeds",
        f"{result['method'].upper()} base method, eps {result['eps']:g}, {result['epochs']} "
        f"epochs ({result['burn_in_epochs']} of burn-in, shared by every variant of a seed). "
        "Each arm is one dose (eps_low) under one mask rule; its PART and controls start from "
        "the same burn-ins as the shared AT baseline and see the same batches and random "
        f"starts. Test examples per seed: {n_text}. The dose is PART's mean budget over its "
        "epochs as a fraction of AT's (eps).",
        arms_table(result),
        "## Primary comparisons",
        f"Named before the study ran (study/params.yaml): {len(primary['rows'])} comparisons, "
        f"{primary['test']}, Holm-corrected over the family at α = {primary['alpha']:g}. "
        "Differences in points, with the paired 95% Student-t interval over seeds. "
        f"\"Detectable\": the smallest true difference the test finds with "
        f"{primary['power']:.0%} power given the seeds' spread (the noncentral t), at "
        f"α = {primary['alpha']:g} and at Holm's strictest step "
        f"(α / {len(primary['rows'])}). Detected: {len(detected)} of {len(primary['rows'])}.",
        primary_table(result),
        f"![PART minus each control against the dose]({CONTRAST_PLOT.name})",
        "## Each variant minus AT (secondary, uncorrected)",
        "Mean paired difference [95% t interval over seeds] (≥ the difference detectable at "
        f"{primary['power']:.0%} power, α = {primary['alpha']:g}).",
        baseline_table(result),
        f"![each variant minus AT against the dose]({BASELINE_PLOT.name})",
        "## Accuracy",
        "Mean ± sample standard deviation over the seeds, in %.",
        accuracy_table(result),
        "## Per seed, with McNemar's exact test (primary comparisons)",
        "The difference in points and the two-sided exact McNemar p-value of that seed's paired "
        "per-example outcomes (uncorrected).",
        per_seed_table(result),
    ]) + "\n"
    atomic_write_text(RESULTS, text)
    return RESULTS


def save_dose_plot(path: Path, result: Mapping[str, Any], kind: str) -> None:
    """Paired differences (points) against the dose, one panel per primary attack, with paired
    95% t intervals over seeds; the arms of one mask rule joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = result["primary"]["attacks"]
    arms = result["arms"]
    points: dict[tuple[str, str, str], list[tuple[float, float, float, float]]] = {}
    if kind == "contrasts":
        labels = [f"{v} − {c}" for v, c in result["primary"]["comparisons"]]
        for row in result["primary"]["rows"]:
            points.setdefault((f"{row['variant']} − {row['control']}", row["attack"],
                               arms[row["arm"]]["mask_rule"]), []).append(
                _point(arms[row["arm"]]["dose"], row))
    else:
        variants = [v for v in next(iter(arms.values()))["study"]["variants"] if v != BASELINE]
        labels = [f"{v} − AT" for v in variants]
        for arm in arms.values():
            for variant in variants:
                for attack in attacks:
                    diff = arm["study"]["variants"][variant][attack]["diff"]
                    points.setdefault((f"{variant} − AT", attack, arm["mask_rule"]), []).append(
                        _point(arm["dose"], diff))
    figure, axes = plt.subplots(1, len(attacks), figsize=(5 * len(attacks), 4), squeeze=False)
    for axis, attack in zip(axes[0], attacks, strict=True):
        for index, label in enumerate(labels):
            shift = 0.006 * (index - (len(labels) - 1) / 2)  # side by side, not on top
            for (name, on, rule), series in points.items():
                if name != label or on != attack:
                    continue
                series = sorted(series)
                xs = [x + shift for x, _, _, _ in series]
                axis.errorbar(xs, [y for _, y, _, _ in series],
                              yerr=[[lo for _, _, lo, _ in series], [hi for _, _, _, hi in series]],
                              color=f"C{index}", capsize=3, markersize=5,
                              fmt="-o" if rule == "quantile" else "-s", label=f"{label} ({rule})")
        axis.axhline(0, color="0.5", linewidth=0.8)
        axis.set_xlabel("PART's mean budget / AT's (dose)")
        axis.set_ylabel(f"{LABELS[attack]} accuracy difference (points)")
        axis.set_title(f"{LABELS[attack]}: {len(result['seeds'])} seeds, paired 95% t intervals",
                       fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    save_png(figure, path)


def _point(dose: float, diff: Mapping[str, Any]) -> tuple[float, float, float, float]:
    """(x, y, error below, error above) in points; no bar without an interval."""
    low, high = diff["t95"] or (diff["mean"], diff["mean"])
    return dose, 100 * diff["mean"], 100 * (diff["mean"] - low), 100 * (high - diff["mean"])


def run_study_report() -> Path:
    result = build_study()
    path = write_study_report(result)
    return path

