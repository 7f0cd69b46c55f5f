"""The eps_low frontier: natural against robust accuracy, one point per experiment and variant.

Points come from the experiments of `dvc exp show --json` (each experiment's params and its
declared metrics files) or from metrics files named on the command line. A point is a variant
(PART, the AT baseline, a control) at one (eps, eps_low), averaged over the seeds it was run
with; every accuracy carries its n and a 95% interval (Wilson for one seed, Student-t over
seeds). The same point found in several experiments (the baseline is cached across an eps_low
sweep) is shown once.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from part.errors import PartError
from part.importance.variants import BASELINE
from part.io.atomic import atomic_write_text
from part.io.paths import FRONTIER_PLOT, FRONTIER_TABLE, metrics_path

ROBUST_KEYS = ("pgd20", "autoattack")
ACCURACY_KEYS = ("natural", *ROBUST_KEYS)


def budget_text(value: float) -> str:
    """A budget as people write it: "8/255" when it is a whole number of 1/255 steps."""
    pixels = value * 255
    return f"{round(pixels)}/255" if abs(pixels - round(pixels)) < 1e-6 else f"{value:.4g}"


class FrontierError(PartError):
    pass


@dataclass(frozen=True)
class Accuracy:
    mean: float
    low: float | None  # None: every seed gave the same accuracy, so no t interval exists
    high: float | None
    n: int  # test examples per seed


@dataclass(frozen=True)
class FrontierPoint:
    source: str  # the experiment's name, or the metrics files' directory
    variant: str
    eps: float
    eps_low: float  # eps for the uniform variants
    seeds: tuple[int, ...]
    accuracy: dict[str, Accuracy]  # natural, pgd20, autoattack where measured

    @property
    def key(self) -> tuple[Any, ...]:
        figures = tuple((name, round(value.mean, 12), value.n)
                        for name, value in sorted(self.accuracy.items()))
        return self.variant, round(self.eps, 12), round(self.eps_low, 12), self.seeds, figures


# --------------------------------------------------------------------------- the points


def _summarise(name: str, per_seed: list[Mapping[str, Any]]) -> Accuracy | None:
    from part.evaluation.statistics import t_interval, wilson_interval

    if not all(name in metrics and f"n_{name}" in metrics for metrics in per_seed):
        return None
    values = [float(metrics[name]) for metrics in per_seed]
    counts = {int(metrics[f"n_{name}"]) for metrics in per_seed}
    n = min(counts)
    mean = sum(values) / len(values)
    if len(values) == 1:
        low, high = wilson_interval(round(values[0] * n), n)
    else:
        low, high = t_interval(values) or (None, None)
    return Accuracy(mean, low, high, n)


def point(source: str, variant: str, eps: float, eps_low: float,
          per_seed: Mapping[int, Mapping[str, Any]]) -> FrontierPoint | None:
    """The point of `variant` from its metrics per seed, or None without a natural accuracy."""
    seeds = tuple(sorted(per_seed))
    metrics = [per_seed[seed] for seed in seeds]
    accuracy = {name: summary for name in ACCURACY_KEYS
                if (summary := _summarise(name, metrics)) is not None}
    if "natural" not in accuracy or len(accuracy) < 2:
        return None
    uniform = variant != "part" and variant != "random_mask"
    return FrontierPoint(source, variant, eps, eps if uniform else eps_low, seeds, accuracy)


def _experiment_records(node: Any) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(name, data) of every revision in `dvc exp show --json` output, however nested."""
    if isinstance(node, list):
        for item in node:
            yield from _experiment_records(item)
    elif isinstance(node, dict):
        data = node.get("data")
        if isinstance(data, dict) and "params" in data:
            rev = str(node.get("rev", "?"))
            name = node.get("name") or (rev if rev == "workspace" else rev[:7])
            yield str(name), data
        for value in node.values():
            if isinstance(value, (list, dict)) and value is not data:
                yield from _experiment_records(value)


def _file_data(files: Mapping[str, Any], path: str) -> Mapping[str, Any] | None:
    entry = files.get(path)
    if isinstance(entry, dict) and isinstance(entry.get("data"), dict):
        return entry["data"]
    return None


def points_from_experiments(exp_show: Any) -> list[FrontierPoint]:
    """The points of every experiment (and of the workspace and commits) in `dvc exp show
    --json` output: each variant of `variants` whose metrics exist for every one of `seeds`."""
    from part.params import parse_budget

    points = []
    for name, data in _experiment_records(exp_show):
        params = _file_data(data.get("params") or {}, "params.yaml")
        metrics_files = data.get("metrics") or {}
        if params is None or "eps" not in params:
            continue
        eps = parse_budget(params["eps"], "eps")
        eps_low = parse_budget(params.get("eps_low", params["eps"]), "eps_low")
        for variant in params.get("variants", [BASELINE, "part"]):
            per_seed = {}
            for seed in params.get("seeds", [0]):
                metrics = _file_data(metrics_files, metrics_path(variant, seed).as_posix())
                if metrics is not None:
                    per_seed[int(seed)] = metrics
            if per_seed and len(per_seed) == len(params.get("seeds", [0])):
                points.append(point(name, variant, eps, eps_low, per_seed))
    return unique(points)


def points_from_files(paths: Iterable[Path]) -> list[FrontierPoint]:
    """One point per (variant, eps, eps_low) among metrics files written by `evaluate` (the
    seeds of one setting are averaged)."""
    groups: dict[tuple[str, str, float, float], dict[int, Mapping[str, Any]]] = {}
    for path in paths:
        try:
            metrics = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise FrontierError(f"{path}: not a readable metrics file ({error}); give the "
                                "metrics/<variant>-<seed>.json files `dvc repro` writes") from None
        if not isinstance(metrics, dict) or "natural" not in metrics or "eps" not in metrics:
            raise FrontierError(f"{path}: no natural accuracy and eps in it; give metrics files "
                                "written by the evaluate stage or `part-cli evaluate --json`")
        variant = str(metrics.get("variant") or
                      ("part" if str(metrics.get("method", "")).startswith("part-") else BASELINE))
        eps = float(metrics.get("train_eps") or metrics["eps"])
        eps_low = float(metrics.get("eps_low") if metrics.get("eps_low") is not None else eps)
        key = (str(Path(path).parent), variant, eps, eps_low)
        seed = int(metrics.get("train_seed", len(groups.get(key, {}))))
        groups.setdefault(key, {})[seed] = metrics
    return unique(point(source, variant, eps, eps_low, per_seed)
                  for (source, variant, eps, eps_low), per_seed in groups.items())


def unique(points: Iterable[FrontierPoint | None]) -> list[FrontierPoint]:
    """Each result once (None, a setting without results, is left out), named after an
    experiment or commit rather than the workspace (which holds whichever experiment was applied
    last)."""
    seen: dict[tuple[Any, ...], FrontierPoint] = {}
    found_points = [found for found in points if found is not None]
    for found in sorted(found_points, key=lambda p: p.source == "workspace"):
        seen.setdefault(found.key, found)
    return sorted(seen.values(), key=lambda p: (p.variant, p.eps, p.eps_low, p.source))


def dvc_exp_show(cwd: Path = Path(".")) -> Any:
    """`dvc exp show --json` of the repository at `cwd`."""
    try:
        result = subprocess.run(["dvc", "exp", "show", "--json"], cwd=cwd, capture_output=True,
                                text=True, check=False)
    except FileNotFoundError:
        raise FrontierError("dvc is not on PATH; activate the project's environment, or give "
                            "metrics files on the command line") from None
    if result.returncode != 0:
        raise FrontierError(f"`dvc exp show --json` failed in {cwd.resolve()}: "
                            f"{result.stderr.strip() or result.stdout.strip()}; run it inside "
                            "the project, or give metrics files on the command line")
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        raise FrontierError("`dvc exp show --json` printed no JSON; give metrics files on the "
                            "command line") from None


# --------------------------------------------------------------------------- outputs



def frontier_table(points: list[FrontierPoint]) -> str:
    lines = ["| experiment | variant | eps | eps_low | seeds | natural (%) | PGD-20 (%) | "
             "AutoAttack (%) | n (natural / PGD-20 / AA, per seed) |",
             "|---|---|---|---|---|---:|---:|---:|---:|"]
    for found in points:
        cells, counts = [], []
        for name in ACCURACY_KEYS:
            value = found.accuracy.get(name)
            cells.append("" if value is None else _cell(value))
            counts.append("-" if value is None else str(value.n))
        seeds = ", ".join(str(seed) for seed in found.seeds)
        lines.append(f"| {found.source} | {found.variant} | {budget_text(found.eps)} | "
                     f"{budget_text(found.eps_low)} | {seeds} | " + " | ".join(cells) +
                     f" | {' / '.join(counts)} |")
    intervals = ("Intervals: 95%, Wilson for one seed, Student-t over seeds (the mean of the "
                 "seeds' accuracies); \"seeds agree\" where every seed gave the same accuracy, "
                 "so the seeds' spread gives no interval.")
    return ("# eps_low frontier\n\nOne row per variant and budget; the same result found in "
            "several experiments is listed once. " + intervals + "\n\n" + "\n".join(lines) + "\n")


def _cell(value: Accuracy) -> str:
    if value.low is None or value.high is None:
        return f"{100 * value.mean:.2f} [seeds agree]"
    return f"{100 * value.mean:.2f} [{100 * value.low:.2f}, {100 * value.high:.2f}]"


def _error_bars(values: list[Accuracy]) -> list[list[float]]:
    """Bar lengths below and above each mean, in points; never negative (a Wilson bound at 0 or
    1 can sit a rounding error on the wrong side of the mean); none without an interval."""
    return [[0.0 if v.low is None else max(0.0, 100 * (v.mean - v.low)) for v in values],
            [0.0 if v.high is None else max(0.0, 100 * (v.high - v.mean)) for v in values]]


def save_frontier_plot(path: Path, points: list[FrontierPoint]) -> None:
    import matplotlib

    from part.evaluation.report import save_png

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [key for key in ROBUST_KEYS if any(key in p.accuracy for p in points)]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for axis, key in zip(axes[0], panels, strict=True):
        for variant in sorted({p.variant for p in points}):
            series = sorted((p for p in points if p.variant == variant and key in p.accuracy),
                            key=lambda p: (p.eps, p.eps_low))
            if not series:
                continue
            xs = [100 * p.accuracy["natural"].mean for p in series]
            ys = [100 * p.accuracy[key].mean for p in series]
            xerr = _error_bars([p.accuracy["natural"] for p in series])
            yerr = _error_bars([p.accuracy[key] for p in series])
            axis.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="o-" if len(series) > 1 else "o",
                          capsize=3, label=variant)
            uniform = variant not in ("part", "random_mask")
            for p, x, y in zip(series, xs, ys, strict=True):
                label = f"eps {budget_text(p.eps)}" if uniform else budget_text(p.eps_low)
                axis.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4),
                              fontsize=7)
        axis.set_xlabel("natural accuracy (%)")
        axis.set_ylabel(f"{'PGD-20' if key == 'pgd20' else 'AutoAttack'} accuracy (%)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("PART across eps_low (labels), uniform budgets across eps; 95% intervals",
                    fontsize=9)
    save_png(figure, path)


def write_frontier(points: list[FrontierPoint], plot_path: Path = FRONTIER_PLOT,
                   table_path: Path = FRONTIER_TABLE) -> None:
    if not points:
        raise FrontierError("no experiment has both a natural and a robust accuracy (pgd20 or "
                            "autoattack in eval.attacks); run the sweep first, e.g. "
                            "dvc exp run --queue -S eps_low=6/255, then dvc queue start")
    save_frontier_plot(plot_path, points)
    atomic_write_text(table_path, frontier_table(points))
