"""reports/: the study as JSON, tables of every variant against the baseline and of PART against
each control, and a plot of those paired differences.

Accuracies are given with their n; differences are paired (the same seed, the same test
examples), with a 95% Student-t interval over seeds, the difference the seeds' spread could
detect, and the exact McNemar p-value of each seed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from part.errors import PartError
from part.importance.variants import BASELINE
from part.io.atomic import atomic_path, atomic_write_text
from part.params import Params

LABELS = {"natural": "Natural", "fgsm": "FGSM", "pgd20": "PGD-20", "cw20": "CW-inf-20",
          "mma": "MMA (paper)", "mma_max": "MMA-max", "pgd_unimportant": "PGD-20, unimportant",
          "autoattack": "AutoAttack", "worst_case": "Worst case",
          "worst_case_autoattack": "Worst case with AutoAttack"}
FAMILY = {"at": "PART", "trades": "PART-T", "mart": "PART-M"}
BASE = {"at": "AT", "trades": "TRADES", "mart": "MART"}
VARIANT_NOTES = {
    "baseline": "the base method, uniform eps",
    "part": "eps on the CAM mask, eps_low elsewhere",
    "uniform_matched": "each epoch, uniform eps equal to PART's recorded mean budget of that epoch",
    "random_mask": "each epoch, PART's recorded per-image, per-channel counts of eps elements "
                   "at random places",
}


class ReportError(PartError):
    pass


def _points(value: float) -> str:
    return f"{100 * value:.2f}"


def _signed(value: float) -> str:
    return f"{100 * value:+.2f}"


def _interval(bounds: list[float] | None, signed: bool = False) -> str:
    if bounds is None:
        return ""
    show = _signed if signed else _points
    return f" [{show(bounds[0])}, {show(bounds[1])}]"


def _n(summary: dict[str, Any]) -> str:
    n = summary["n"]
    return str(n) if isinstance(n, int) else ", ".join(f"{k}: {v}" for k, v in n.items())


def accuracy_table(study: dict[str, Any]) -> str:
    """Mean accuracy over seeds (± sample std), or for one seed its Wilson 95% interval."""
    variants = list(study["variants"])
    one_seed = len(study["seeds"]) == 1
    lines = ["| accuracy (%) | " + " | ".join(variants) + " | n per seed |",
             "|---|" + "---:|" * len(variants) + "---:|"]
    for attack in study["attacks"]:
        cells = []
        for variant in variants:
            summary = study["variants"][variant][attack]
            if one_seed:
                seed = str(study["seeds"][0])
                cells.append(_points(summary["mean"]) + _interval(summary["wilson95"][seed]))
            else:
                cells.append(f"{_points(summary['mean'])} ± {_points(summary['std'])}")
        lines.append(f"| {LABELS[attack]} | " + " | ".join(cells)
                     + f" | {_n(study['variants'][BASELINE][attack])} |")
    return "\n".join(lines)


def difference_table(study: dict[str, Any]) -> str:
    """Each variant minus the baseline, in points: the mean over seeds with its t interval."""
    others = [variant for variant in study["variants"] if variant != BASELINE]
    lines = ["| minus baseline (points) | " + " | ".join(others) + " |",
             "|---|" + "---:|" * len(others)]
    for attack in study["attacks"]:
        cells = []
        for variant in others:
            diff = study["variants"][variant][attack]["diff"]
            cells.append(_signed(diff["mean"]) + _interval(diff["t95"], signed=True)
                         + _detectable(diff))
        lines.append(f"| {LABELS[attack]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def contrast_table(study: dict[str, Any]) -> str:
    """PART minus each control, in points: the mean over seeds with its t interval, and the
    difference the seeds' spread could detect (80% power by default, two-sided)."""
    names = list(study.get("contrasts", {}))
    if not names:
        return ""
    lines = ["| PART minus control (points) | " + " | ".join(
        name.replace("-", " − ", 1) for name in names) + " |",
        "|---|" + "---:|" * len(names)]
    for attack in study["attacks"]:
        cells = []
        for name in names:
            diff = study["contrasts"][name][attack]
            cells.append(_signed(diff["mean"]) + _interval(diff["t95"], signed=True)
                         + _detectable(diff))
        lines.append(f"| {LABELS[attack]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _detectable(diff: dict[str, Any]) -> str:
    value = diff.get("detectable")
    return "" if value is None else f" (detectable: {_points(value)})"


def mcnemar_table(study: dict[str, Any]) -> str:
    """Per seed: the difference and the exact McNemar p-value of the paired outcomes."""
    others = [variant for variant in study["variants"] if variant != BASELINE]
    seeds = [str(seed) for seed in study["seeds"]]
    lines = ["| attack | variant | " + " | ".join(f"seed {seed}" for seed in seeds) + " |",
             "|---|---|" + "---:|" * len(seeds)]
    for attack in study["attacks"]:
        for variant in others:
            diff = study["variants"][variant][attack]["diff"]
            cells = [f"{_signed(diff['per_seed'][seed])} (p={diff['mcnemar_p'][seed]:.3g})"
                     for seed in seeds]
            lines.append(f"| {LABELS[attack]} | {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def settings_table(params: Params) -> str:
    rows = [("dataset", params.dataset), ("model", params.model),
            ("method", f"{params.method} ({FAMILY[params.method]} against {BASE[params.method]})"),
            ("eps / eps_low", f"{params.eps:.5g} / {params.eps_low:.5g}"),
            ("CAM / mask rule", f"{params.cam} / {params.mask_rule}"
             + (f" (q = {params.mask.quantile:g})" if params.mask_rule == "quantile" else "")),
            ("mask refresh", f"every {params.mask.refresh_every} epoch(s)"
             if params.mask.refresh_every else "never (burn-in masks)"),
            ("epochs (burn-in)", f"{params.epochs} ({params.burn_in_epochs})"),
            ("PGD training", f"{params.train.steps} steps of {params.train.step_size:.5g}"),
            ("optimiser", f"SGD lr {params.train.lr} momentum {params.train.momentum} "
                          f"wd {params.train.weight_decay}, {params.train.lr_schedule} schedule"),
            ("training examples", str(params.data.train_subset or "all")
             + (f" (after {params.data.val_subset} held out for validation)"
                if params.data.val_subset else "")),
            ("scored checkpoint", _scored_checkpoint(params)),
            ("evaluation eps / step", f"{params.eval_eps:.5g} / {params.eval_step_size:.5g}"),
            ("seeds", ", ".join(str(seed) for seed in params.seeds))]
    return "\n".join(["| setting | value |", "|---|---|"]
                     + [f"| {name} | {value} |" for name, value in rows])


def _scored_checkpoint(params: Params) -> str:
    if params.eval.checkpoint == "last":
        return "the last epoch's"
    if params.data.val_subset:
        return (f"the best epoch's by PGD accuracy on "
                f"{min(params.train.monitor_subset, params.data.val_subset)} validation "
                "examples held out of the training set")
    return (f"the best epoch's by PGD accuracy on {params.train.monitor_subset} TEST examples "
            "(data.val_subset: 0): optimistic, the selection saw the test set")


def write_report(path: str | Path, study_path: str | Path, plot_path: str | Path,
                 study: dict[str, Any], params: Params) -> Path:
    path, study_path, plot_path = Path(path), Path(study_path), Path(plot_path)
    atomic_write_text(study_path, json.dumps(study, indent=2) + "\n")
    save_paired_plot(plot_path, study, params)
    seeds = len(study["seeds"])
    spread = ("mean ± sample standard deviation over the seeds" if seeds > 1 else
              "one seed, with the Wilson 95% interval of the proportion")
    interval = ("the 95% Student-t interval of the mean over seeds and, in brackets after it, "
                f"the smallest difference a two-sided t-test over the seeds detects with "
                f"{study['power']:.0%} power at α = {study['alpha']:g}, given their spread"
                if seeds > 1 else
                "no interval over seeds with one seed: see McNemar's test below")
    notes = "\n".join(f"- `{variant}`: {VARIANT_NOTES[variant]}" for variant in study["variants"])
    contrasts = contrast_table(study)
    text = "\n\n".join([
        f"# {FAMILY[params.method]} against {BASE[params.method]} on {params.dataset}, "
        f"{seeds} seed{'s' if seeds > 1 else ''}",
        "Every variant of a seed starts from that seed's burn-in weights and sees the same "
        "batches, augmentations and random starts; they differ only in the budget they train "
        "on.\n" + notes,
        f"## Accuracy\n\n{spread}; n is the number of test examples per seed.",
        accuracy_table(study),
        f"## Paired difference from the baseline\n\nSame seed, same test examples; {interval}.",
        difference_table(study),
        *([f"## PART minus each control\n\nSame seed, same test examples; {interval}.",
           contrasts] if contrasts else []),
        "## Per seed, with McNemar's exact test\n\nThe difference in points and the two-sided "
        "exact McNemar p-value on that seed's paired per-example outcomes (no correction for "
        "the many comparisons).",
        mcnemar_table(study),
        "Worst case: an example counts as robust only if it survives every attack but "
        "AutoAttack, over every test example they all ran on. Worst case with AutoAttack: "
        "AutoAttack too, over the AutoAttack subset only (its n).",
        "## Settings",
        settings_table(params),
        f"![paired differences]({os.path.relpath(plot_path, path.parent)})",
    ]) + "\n"
    atomic_write_text(path, text)
    return path


def _comparisons(study: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, {attack: paired difference}) for every variant minus the baseline and PART minus
    every control."""
    rows = [(f"{variant} − {BASELINE}", {attack: summaries[attack]["diff"]
                                          for attack in study["attacks"]})
            for variant, summaries in study["variants"].items() if variant != BASELINE]
    rows += [(name.replace("-", " − ", 1), by_attack)
             for name, by_attack in study.get("contrasts", {}).items()]
    return rows


def _bounds(diff: dict[str, Any], seeds: list[int], n: int) -> tuple[float, float]:
    """The difference's 95% interval: Student-t over seeds, or for one seed (n test examples)
    the exact binomial interval of how the discordant pairs split, given their number."""
    from scipy.stats import binomtest

    if diff["t95"] is not None:
        return diff["t95"][0], diff["t95"][1]
    counts = diff["discordant"][str(seeds[0])]
    ours = counts["only_variant"]
    total = sum(counts.values())
    if total == 0:
        return 0.0, 0.0
    split = binomtest(ours, total).proportion_ci(0.95, method="exact")
    return total / n * (2 * split.low - 1), total / n * (2 * split.high - 1)


def save_paired_plot(path: Path, study: dict[str, Any], params: Params) -> None:
    """Each variant minus the baseline and PART minus each control, in points, on natural
    accuracy and on PGD-20 (or the first attack after natural), with 95% intervals: paired
    Student-t over seeds, or for one seed exact from the discordant pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    robust = next((key for key in ("pgd20", *study["attacks"])
                   if key in study["attacks"] and key not in ("natural", "worst_case")), None)
    if "natural" not in study["attacks"] or robust is None:
        raise ReportError("the plot needs natural and one attack in eval.attacks (e.g. pgd20)")
    if any(not isinstance(study["variants"][BASELINE][key]["n"], int)
           for key in ("natural", robust)):
        raise ReportError("the seeds were scored on different numbers of test examples; "
                          "rerun the evaluations with the same eval settings")
    rows = _comparisons(study)
    figure, axes = plt.subplots(1, 2, figsize=(9, 0.6 * len(rows) + 1.8), squeeze=False)
    for axis, attack in zip(axes[0], ("natural", robust), strict=True):
        for index, (_, by_attack) in enumerate(rows):
            diff = by_attack[attack]
            low, high = _bounds(diff, study["seeds"], study["variants"][BASELINE][attack]["n"])
            mean = 100 * diff["mean"]
            axis.errorbar([mean], [index], xerr=[[mean - 100 * low], [100 * high - mean]],
                          fmt="o", capsize=3, color=f"C{index}")
        axis.axvline(0, color="0.5", linewidth=0.8)
        axis.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
        axis.invert_yaxis()
        axis.set_xlabel(f"{LABELS[attack]} accuracy difference (points)")
        axis.grid(alpha=0.3)
    seeds = len(study["seeds"])
    n = study["variants"][BASELINE][robust]["n"]
    figure.suptitle(f"{params.dataset}, {params.model}, eps {params.eps:.4g}: paired differences, "
                    f"{seeds} seed(s), n = {n} test examples; 95% "
                    + ("t intervals over seeds" if seeds > 1 else
                       "exact intervals from the discordant pairs"), fontsize=8)
    save_png(figure, path)




def save_png(figure: Any, path: Path) -> None:
    """Write a matplotlib figure as a PNG atomically, then free it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=120, format="png")
    finally:
        plt.close(figure)
