"""The confirmatory study's report (study/report/): the pre-registered primary test, the
secondary family, the replication at the paper's dose, the per-seed differences, the planning
calculation and what the study cannot say, from the per-seed summaries (part/study/analysis.py
computes every figure). Run from the study's directory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from part.evaluation.report import LABELS, save_png
from part.io.atomic import atomic_write_text
from part.study.analysis import analyse, differences, pilot_summary
from part.study.config import AT_RUN, REPORT_DIR, StudyConfig, load_study_config
from part.study.summaries import load_summary, run_params

STUDY_JSON = REPORT_DIR / "study.json"
RESULTS = REPORT_DIR / "results.md"
NAMES = {"part": "PART", "baseline": "AT", "random_mask": "random_mask",
         "uniform_matched": "uniform_matched"}


def plot_path(arm: str) -> Path:
    return REPORT_DIR / f"paired-{arm}.png"


def collect(config: StudyConfig) -> dict[int, dict[str, dict[str, Any]]]:
    """seed -> arm -> summary, for the seeds whose every arm has its summary."""
    found = {}
    for seed in config.seeds:
        arms = {arm: load_summary(seed, arm) for arm in config.arms}
        if all(summary is not None for summary in arms.values()):
            found[seed] = arms
    return found


def build_study() -> dict[str, Any]:
    config = load_study_config()
    summaries = collect(config)
    result = analyse(config, summaries, pilot_summary(config))
    params = run_params(config.seeds[0], AT_RUN) if summaries else None
    result["preregistered"] = config.preregistered
    if params is not None:
        result["setting"] = {"dataset": params.dataset, "model": params.model,
                             "method": params.method, "epochs": params.epochs,
                             "burn_in_epochs": params.burn_in_epochs, "eps": params.eps,
                             "train_subset": params.data.train_subset,
                             "n_test": next(iter(next(iter(summaries.values())).values()))
                             ["accuracy"]["baseline"][config.analysis.primary.attack]["n"]}
    return result


# --------------------------------------------------------------------------- text


def _pt(value: float | None, signed: bool = True) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def _ci(bounds: Sequence[float] | None) -> str:
    return "-" if not bounds else f"[{_pt(bounds[0])}, {_pt(bounds[1])}]"


def _p(value: float | None) -> str:
    return "-" if value is None else (f"{value:.2g}" if value < 0.001 else f"{value:.3f}")


def _label(row: Mapping[str, Any]) -> str:
    return (f"{NAMES.get(row['variant'], row['variant'])} − "
            f"{NAMES.get(row['reference'], row['reference'])}, {LABELS[row['attack']]}")


def _verdict(row: Mapping[str, Any], complete: bool) -> str:
    if not complete:
        return "not yet tested"
    if not row["testable"]:
        return "cannot be tested (every seed gave the same difference)"
    if row.get("margin") is not None and "equivalent" not in row:
        return (f"non-inferior (above −{100 * row['margin']:g} points)" if row["detected"]
                else f"non-inferiority not shown; the 95% interval is {_ci(row['ci95'])}")
    return ("detected" if row["detected"]
            else f"not detected; the 95% interval is {_ci(row['ci95'])}")


def primary_paragraph(result: Mapping[str, Any]) -> str:
    row = result["primary"]
    if row is None:
        return "No seed has run yet."
    arm = result["arms"][row["arm"]]
    seeds = len(result["seeds_done"])
    head = (f"At a matched budget (dose {arm['dose']:.3f}: PART spends that fraction of AT's "
            f"mean budget, eps_low = {arm['eps_low']:g} under the {arm['mask_rule']} mask rule), "
            f"putting the budget where the CAM points instead of at random places "
            f"({_label(row)}) changed PGD-20 accuracy by {_pt(row['mean'])} points on average "
            f"over {seeds} seeds")
    if not result["complete"]:
        return (head + f" (per seed: {', '.join(_pt(v) for v in row['per_seed'].values())}). "
                f"The pre-registered test is read once all {len(result['seeds_planned'])} "
                "seeds have run; until then no interval or test is reported.")
    if not row["testable"]:
        return head + "; every seed gave the same difference, so it cannot be tested."
    return (head + f": 95% interval {_ci(row['ci95'])}, one-sample t-test over seeds "
            f"p = {_p(row['p'])} (α = {result['alpha']:g}): "
            + ("detected." if row["detected"] else
               f"not detected; the 95% interval is {_ci(row['ci95'])}."))


def secondary_table(result: Mapping[str, Any]) -> str:
    lines = ["| comparison | test | mean (points) | 95% interval | p | Holm p | result |",
             "|---|---|---|---|---|---|---|"]
    for row in result["secondary"]:
        test = ("two-sided, no difference" if row["margin"] is None
                else f"one-sided, non-inferiority at −{100 * row['margin']:g}")
        lines.append(f"| {_label(row)} ({row['arm']}) | {test} | {_pt(row['mean'])} | "
                     f"{_ci(row.get('ci95'))} | {_p(row.get('p'))} | {_p(row['holm_p'])} | "
                     f"{_verdict(row, result['complete'])} |")
    return "\n".join(lines)


def replication_table(result: Mapping[str, Any]) -> str:
    lines = ["| comparison | mean (points) | 90% interval | 95% interval | TOST p | Holm p | "
             "result |", "|---|---|---|---|---|---|---|"]
    for row in result["replication"]:
        if not result["complete"]:
            verdict = "not yet tested"
        elif row["tost_p"] is None:
            verdict = "cannot be tested (every seed gave the same difference)"
        elif row["equivalent"]:
            verdict = f"equivalent within ±{100 * row['margin']:g}"
        else:
            verdict = (f"equivalence not shown; the 90% interval is {_ci(row.get('ci90'))}")
        lines.append(f"| {_label(row)} | {_pt(row['mean'])} | {_ci(row.get('ci90'))} | "
                     f"{_ci(row.get('ci95'))} | {_p(row.get('tost_p'))} | {_p(row['holm_p'])} "
                     f"| {verdict} |")
    return "\n".join(lines)


def per_seed_table(result: Mapping[str, Any]) -> str:
    rows = [result["primary"], *result["secondary"], *result["replication"]]
    seeds = [str(seed) for seed in result["seeds_done"]]
    lines = ["| comparison | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|" + "---|" * len(seeds)]
    for row in rows:
        cells = [f"{_pt(row['per_seed'][s])} (McNemar p {_p(row['mcnemar_p'].get(s))})"
                 if s in row["mcnemar_p"] else _pt(row["per_seed"][s]) for s in seeds]
        lines.append(f"| {_label(row)} ({row['arm']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def planning_text(result: Mapping[str, Any]) -> str:
    plan = result["planning"]
    text = (f"The number of seeds was fixed before the runs: a two-sided one-sample t-test at "
            f"α = {plan['alpha']:g} detects a true mean difference of "
            f"{100 * plan['difference']:g} points with {plan['power']:.0%} power at a planning "
            f"SD of the per-seed differences of {100 * plan['sd']:g} points when it has "
            f"{plan['seeds_needed']:.2f} seeds (statsmodels `TTestPower`), so the study runs "
            f"{plan['seeds_planned']} (power {plan['power_at_planning_sd']:.2f} at that SD).")
    pilot = plan["pilot"]
    if pilot:
        text += (f" The planning SD is set above the pilot's: {pilot['comparison']} had per-seed "
                 f"differences {', '.join(_pt(v) for v in pilot['per_seed'])}, SD "
                 f"{100 * pilot['sd']:.2f} points with {pilot['df']} degrees of freedom "
                 f"({pilot['summary']}). {100 * plan['sd']:g} points is its "
                 f"{pilot['planning_sd_confidence']:.0%} upper confidence bound; its 80% upper "
                 f"bound, {100 * pilot['sd_upper80']:.2f} points, would need "
                 f"{pilot['seeds_needed_at_upper80']:.1f} seeds, and at it "
                 f"{plan['seeds_planned']} seeds have power {pilot['power_at_upper80']:.2f}. "
                 "The pilot scored 1,000 test images per model and this study all 10,000, which "
                 "removes most of the test set's sampling noise from each per-seed difference.")
    return text


def _settings(result: Mapping[str, Any]) -> str:
    s = result.get("setting")
    if not s:
        return ""
    return (f"Setting: {s['dataset']}, {s['model']}, {s['method'].upper()}-based PART, "
            f"{s['epochs']} epochs ({s['burn_in_epochs']} of burn-in), eps = {s['eps']:g}, "
            f"{s['train_subset']} training images, {s['n_test']} test images per model. What "
            "the study says holds for this setting only.")


def write_study_report(result: Mapping[str, Any]) -> Path:
    done, planned = result["seeds_done"], result["seeds_planned"]
    prereg = result.get("preregistered")
    lines = [
        "# The confirmatory study: does placing the budget where the CAM points matter?",
        "",
        "Written by the study's `report` stage (`cd study && dvc repro --allow-missing`) from "
        "summaries/; every figure is part/study/analysis.py's.",
        "",
        f"Seeds: {len(done)} of the {len(planned)} pre-registered have run "
        f"({', '.join(map(str, done)) or 'none'})."
        + (f" The question, the tests and the seeds were committed in {prereg} before any run "
           f"(`git show {prereg} -- study/params.yaml part/study/analysis.py`)." if prereg
           else ""),
        "", _settings(result), "",
        "## Primary", "", primary_paragraph(result), "",
    ]
    if result["primary"] is not None:
        lines += [
            "## Secondary (Holm over the family)", "", secondary_table(result), "",
            "## Replication at the paper's dose (equivalence, TOST, Holm over the family)", "",
            replication_table(result), "",
            "## Per seed", "",
            "Each seed's paired difference, with its exact McNemar p-value: that p-value "
            "describes those two trained models on these test examples, not the method.", "",
            per_seed_table(result), "",
            "## Doses and budgets", "",
            *[f"- {arm}: dose {info['dose']:.4f} (eps_low {info['eps_low']:g}, "
              f"{info['mask_rule']} rule); the controls spent PART's mean budget exactly in "
              f"every epoch: {'yes' if info['controls_spent_parts_budget'] else 'NO'}; "
              f"random_mask kept PART's counts per image: "
              f"{'yes' if info['random_mask_counts_equal'] else 'NO'}"
              for arm, info in result["arms"].items()], "",
            "Paired differences per seed: " + ", ".join(
                f"[{arm}]({plot_path(arm).name})" for arm in result["arms"]) + ".", "",
        ]
    lines += ["## How many seeds", "", planning_text(result), "",
              "## What it cannot say", "",
              "- Anything beyond its setting: one data set, one small model, a CPU-sized "
              "schedule; not the paper's CIFAR-10 / ResNet-18 runs.",
              "- A null is its interval: \"not detected\" means the data are consistent with "
              "every difference inside the interval, including zero.",
              "- The pilot (pilot/) chose the question and the planning SD; it is not pooled.",
              ""]
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    atomic_write_text(STUDY_JSON, json.dumps(result, indent=2) + "\n")
    atomic_write_text(RESULTS, "\n".join(lines))
    return RESULTS


def save_paired_plot(path: Path, arm: str, config: StudyConfig,
                     summaries: Mapping[int, Mapping[str, Mapping[str, Any]]],
                     result: Mapping[str, Any]) -> None:
    """Each seed's paired difference (a point) for every comparison of one arm, PGD-20 and
    natural side by side; the mean and its 95% interval once every seed has run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in [result["primary"], *result["secondary"], *result["replication"]]
            if row and row["arm"] == arm]
    comparisons = [c for c in config.analysis.comparisons() if c.arm == arm]
    attacks = sorted({c.attack for c in comparisons}, key=lambda a: (a != "pgd20", a))
    figure, axes = plt.subplots(1, len(attacks), figsize=(5 * len(attacks), 4), squeeze=False)
    for axis, attack in zip(axes[0], attacks, strict=True):
        shown = [c for c in comparisons if c.attack == attack]
        labels = []
        for index, comparison in enumerate(shown):
            diffs = differences(summaries, comparison)
            axis.scatter([index] * len(diffs), [100 * v for v in diffs.values()], s=14,
                         color=f"C{index}", alpha=0.7)
            row = next((r for r in rows if r["name"] == comparison.name), {})
            if row.get("ci95"):
                low, high = row["ci95"]
                axis.errorbar([index + 0.2], [100 * row["mean"]],
                              yerr=[[100 * (row["mean"] - low)], [100 * (high - row["mean"])]],
                              fmt="o", color="k", capsize=4)
            labels.append(f"{NAMES[comparison.variant]} − {NAMES[comparison.reference]}")
        axis.axhline(0, color="0.5", linewidth=0.8)
        axis.set_xticks(range(len(labels)), labels, fontsize=8)
        axis.set_ylabel(f"{LABELS[attack]} accuracy difference (points)")
        axis.set_title(f"{arm}, {LABELS[attack]}: {len(summaries)} seeds", fontsize=9)
        axis.grid(alpha=0.3)
    save_png(figure, path)


def run_study_report() -> Path:
    config = load_study_config()
    result = build_study()
    path = write_study_report(result)
    summaries = collect(config)
    for arm in config.arms:
        save_paired_plot(plot_path(arm), arm, config, summaries, result)
    return path
