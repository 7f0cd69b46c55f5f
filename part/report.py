"""reports/results.md: baseline against PART, attack by attack, with deltas and the settings."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from part.atomic import atomic_path, atomic_write_text
from part.errors import PartError
from part.params import Params

ROWS = (("natural", "Natural"), ("fgsm", "FGSM"), ("pgd20", "PGD-20"), ("cw20", "CW-inf-20"),
        ("mma", "MMA"), ("autoattack", "AutoAttack"), ("worst_case", "Worst case"))
FAMILY = {"at": "PART", "trades": "PART-T", "mart": "PART-M"}
BASE = {"at": "AT", "trades": "TRADES", "mart": "MART"}


class ReportError(PartError):
    pass


def read_metrics(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"{path}: no metrics file; run `dvc repro` to evaluate the models first")
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ReportError(f"{path}: not valid JSON ({error}); rerun its evaluate stage") from None
    if not isinstance(metrics, dict) or "natural" not in metrics:
        raise ReportError(f"{path}: no `natural` accuracy in it; rerun its evaluate stage")
    return metrics


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _delta(base: float | None, ours: float | None) -> str:
    if base is None or ours is None:
        return "–"
    return f"{100 * (ours - base):+.2f}"


def results_table(baseline: dict[str, Any], part: dict[str, Any], params: Params) -> str:
    base_name = BASE[params.method]
    ours_name = FAMILY[params.method]
    lines = [f"| accuracy (%) | {base_name} | {ours_name} | delta | n |",
             "|---|---:|---:|---:|---:|"]
    for key, label in ROWS:
        if key not in baseline and key not in part:
            continue
        n = part.get(f"n_{key}", baseline.get(f"n_{key}", ""))
        lines.append(f"| {label} | {_percent(baseline.get(key))} | {_percent(part.get(key))} | "
                     f"{_delta(baseline.get(key), part.get(key))} | {n} |")
    return "\n".join(lines)


def settings_table(params: Params) -> str:
    rows = [("dataset", params.dataset), ("model", params.model),
            ("method", f"{params.method} ({FAMILY[params.method]} against {BASE[params.method]})"),
            ("eps / eps_low", f"{params.eps:.5g} / {params.eps_low:.5g}"),
            ("CAM / mask rule", f"{params.cam} / {params.mask_rule}"),
            ("mask refresh", f"every {params.mask.refresh_every} epoch(s)"
             if params.mask.refresh_every else "never (burn-in masks)"),
            ("epochs (burn-in)", f"{params.epochs} ({params.burn_in_epochs})"),
            ("PGD training", f"{params.train.steps} steps of {params.train.step_size:.5g}"),
            ("optimiser", f"SGD lr {params.train.lr} momentum {params.train.momentum} "
                          f"wd {params.train.weight_decay}, {params.train.lr_schedule} schedule"),
            ("training subset", str(params.data.train_subset or "all")),
            ("evaluation eps / step", f"{params.eval_eps:.5g} / {params.eval_step_size:.5g}"),
            ("seed", str(params.seed))]
    return "\n".join(["| setting | value |", "|---|---|"]
                     + [f"| {name} | {value} |" for name, value in rows])


def write_report(path: str | Path, plot_path: str | Path, baseline: dict[str, Any],
                 part: dict[str, Any], params: Params) -> Path:
    path, plot_path = Path(path), Path(plot_path)
    save_tradeoff_plot(plot_path, baseline, part, params)
    text = "\n\n".join([
        f"# {FAMILY[params.method]} against {BASE[params.method]} on {params.dataset}",
        "Both models start from the same burn-in weights and see the same batches; they differ "
        "only in the budget map (uniform eps against CAM-reweighted eps / eps_low).",
        results_table(baseline, part, params),
        "Worst case: an example counts as robust only if it survives every attack that ran on it.",
        "## Settings",
        settings_table(params),
        f"![accuracy against robustness]({os.path.relpath(plot_path, path.parent)})",
    ]) + "\n"
    atomic_write_text(path, text)
    return path


def save_tradeoff_plot(path: Path, baseline: dict[str, Any], part: dict[str, Any],
                       params: Params) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 4))
    # Worst case is derived from the attacks and often equals AutoAttack: plotting it would only
    # hide that point.
    attacks = [(key, label) for key, label in ROWS[1:-1] if key in baseline and key in part]
    markers = "osD^vP*"
    for (key, label), marker in zip(attacks, markers, strict=False):
        xs = [100 * baseline["natural"], 100 * part["natural"]]
        ys = [100 * baseline[key], 100 * part[key]]
        axis.plot(xs, ys, color="0.7", linewidth=0.8, zorder=1)
        axis.scatter(xs[0], ys[0], marker=marker, color="tab:blue", zorder=2)
        axis.scatter(xs[1], ys[1], marker=marker, color="tab:orange", zorder=2)
        axis.annotate(label, (xs[1], ys[1]), textcoords="offset points", xytext=(5, 0),
                      fontsize=7)
    axis.scatter([], [], color="tab:blue", label=BASE[params.method])
    axis.scatter([], [], color="tab:orange", label=FAMILY[params.method])
    axis.set_xlabel("natural accuracy (%)")
    axis.set_ylabel("robust accuracy (%)")
    axis.set_title(f"{params.dataset}, {params.model}, eps {params.eps:.4g}", fontsize=9)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=120, format="png")
    finally:
        plt.close(figure)

