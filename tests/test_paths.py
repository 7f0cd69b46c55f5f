"""The files the code reads and writes are the ones dvc.yaml declares (part/io/paths.py is the one
place the code names them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from part.importance.variants import CONTROLS, VARIANTS
from part.io import paths
from part.pipeline import PREPARE_PARAMS

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _names(entries: list) -> set[str]:
    """The paths of a deps / outs / metrics / plots list (an entry is a path or {path: options})."""
    return {entry if isinstance(entry, str) else next(iter(entry)) for entry in entries or []}


def _declared(stage: str, field: str, **item: object) -> set[str]:
    """`field` of `stage` with DVC's ${item} / ${item.<key>} templates filled in."""
    spec = STAGES[stage]
    body = spec.get("do", spec)
    names = _names(body.get(field))
    for key, value in item.items():
        names = {name.replace(f"${{item.{key}}}", str(value)) for name in names}
    if "seed" in item:
        names = {name.replace("${item}", str(item["seed"])) for name in names}
    return names


def _as_posix(*files: Path) -> set[str]:
    return {file.as_posix() for file in files}


def test_prepare_writes_the_prepared_sets_and_checks_the_params_it_declares():
    assert _declared("prepare", "outs") == _as_posix(paths.TRAIN_SET, paths.VAL_SET,
                                                     paths.TEST_SET)
    assert set(STAGES["prepare"]["params"]) == set(PREPARE_PARAMS)


@pytest.mark.parametrize("seed", [0, 7])
def test_per_seed_stages_use_the_code_paths(seed):
    assert _declared("burnin", "outs", seed=seed) == _as_posix(paths.burnin_path(seed))
    run = paths.run_name("burnin", seed)
    assert _declared("burnin", "plots", seed=seed) == _as_posix(paths.training_log_plots(run))
    assert _declared("burnin", "metrics", seed=seed) == _as_posix(paths.training_log_metrics(run))
    # training reads the validation split, never the test file (val holds the monitor's subset)
    assert _as_posix(paths.TRAIN_SET, paths.VAL_SET) <= _declared("burnin", "deps", seed=seed)
    assert paths.TEST_SET.as_posix() not in _declared("burnin", "deps", seed=seed)
    assert _declared("masks", "outs", seed=seed) == _as_posix(paths.masks_path(seed))
    assert _declared("masks", "plots", seed=seed) == _as_posix(paths.gallery_path(seed))
    assert _as_posix(paths.burnin_path(seed), paths.TRAIN_SET) <= _declared("masks", "deps",
                                                                             seed=seed)


@pytest.mark.parametrize("variant", VARIANTS)
def test_per_run_stages_use_the_code_paths(variant):
    item = {"variant": variant, "seed": 3}
    run = paths.run_name(variant, 3)
    control = variant in CONTROLS  # trained and evaluated by the stages that follow PART
    train, evaluate = ("train_control", "evaluate_control") if control else ("train", "evaluate")
    assert _declared(train, "outs", **item) == _as_posix(paths.model_path(variant, 3),
                                                         paths.best_model_path(variant, 3),
                                                         paths.trace_path(variant, 3))
    # a control depends on PART's trace, so DVC runs it after train@part-<seed>
    assert (paths.trace_path("part", 3).as_posix() in _declared(train, "deps", **item)) == control
    assert {paths.scored_model_path(variant, 3, which) for which in paths.CHECKPOINTS} == {
        paths.model_path(variant, 3), paths.best_model_path(variant, 3)}
    assert _declared(train, "plots", **item) == _as_posix(paths.training_log_plots(run))
    assert _declared(train, "metrics", **item) == _as_posix(paths.training_log_metrics(run))
    assert _as_posix(paths.TRAIN_SET, paths.VAL_SET, paths.burnin_path(3),
                     paths.budget_spec_path(variant)) <= _declared(train, "deps", **item)
    assert paths.TEST_SET.as_posix() not in _declared(train, "deps", **item)
    assert _declared(evaluate, "outs", **item) == _as_posix(paths.outcomes_path(variant, 3))
    assert _declared(evaluate, "metrics", **item) == _as_posix(paths.metrics_path(variant, 3))
    assert _as_posix(paths.model_path(variant, 3), paths.best_model_path(variant, 3),
                     paths.TEST_SET) <= _declared(evaluate, "deps", **item)


def test_budgets_and_report_use_the_code_paths():
    assert _declared("budgets", "outs") == _as_posix(
        *(paths.budget_spec_path(variant) for variant in VARIANTS))
    assert _declared("report", "outs") == _as_posix(paths.STUDY, paths.REPORT,
                                                    paths.TRADEOFF_PLOT)
    assert paths.METRICS_DIR.as_posix() in _declared("report", "deps")


def test_no_code_outside_part_paths_makes_a_pipeline_path():
    spelled = []
    for source in sorted((ROOT / "part").rglob("*.py")):
        if source.name == "paths.py":
            continue
        text = source.read_text()
        for directory in ("data", "models", "metrics", "masks", "budgets", "traces", "plots",
                          "reports", "runs", "timings"):
            fragment = f'Path("{directory}'
            if fragment in text:
                spelled.append(f"{source.relative_to(ROOT)}: {fragment}")
    assert not spelled, spelled


def test_the_overlaid_plots_draw_seed_0s_logged_runs():
    from part.training.log import LOGGED

    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    overlaid = [spec for plot in plots if isinstance(plot, dict) for spec in plot.values()]
    assert overlaid
    for spec in overlaid:
        (quantity,) = set(spec["y"].values())
        assert quantity in LOGGED
        assert set(spec["y"]) == _as_posix(*(
            paths.training_log_plots(paths.run_name(run, 0)) / f"{quantity}.tsv"
            for run in ("burnin", "baseline", "part")))


def test_the_control_stages_are_the_training_and_evaluation_stages_after_part():
    """train_control and evaluate_control run the same commands with the same deps, params and
    outputs as train and evaluate, and the controls' training also depends on PART's trace."""
    for group, control in (("train", "train_control"), ("evaluate", "evaluate_control")):
        ours, theirs = STAGES[group], STAGES[control]
        assert theirs["cmd"] == ours["cmd"]
        for field in ("outs", "params", "metrics", "plots"):
            assert theirs.get(field) == ours.get(field), field
        extra = set(map(str, theirs["deps"])) - set(map(str, ours["deps"]))
        assert extra == ({"traces/part-${item.seed}.safetensors"} if group == "train" else set())
        assert set(map(str, ours["deps"])) <= set(map(str, theirs["deps"]))
        assert theirs["matrix"]["variant"] == "${controls}"
        assert ours["matrix"]["variant"] == "${variants}"
