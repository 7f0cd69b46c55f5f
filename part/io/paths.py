"""Every file the pipeline reads or writes, relative to the repository root (where DVC runs the
stages): the one place the code names them. dvc.yaml declares the same paths; a test
(tests/test_paths.py) checks that the two agree.

Every file of a seed carries it in its name, <variant>-<seed> (docs/training.md, "Seeds and
variants"), whether one seed is run or many.
"""

from __future__ import annotations

from pathlib import Path

RAW_DIR = Path("data/raw")  # where a data set is looked for, and downloaded to, by default
PREPARED_DIR = Path("data/prepared")
TRAIN_SET = PREPARED_DIR / "train.safetensors"
VAL_SET = PREPARED_DIR / "val.safetensors"  # held out of the training split (data.val_subset)
TEST_SET = PREPARED_DIR / "test.safetensors"
MODELS_DIR = Path("models")
MASKS_DIR = Path("masks")
BUDGETS_DIR = Path("budgets")
TRACES_DIR = Path("traces")  # each training run's budget trace; the controls follow PART's
METRICS_DIR = Path("metrics")
TRAINING_LOG_DIR = Path("dvclive")  # one DVCLive directory per training run
REPORTS_DIR = Path("reports")
REPORT = REPORTS_DIR / "results.md"
STUDY = REPORTS_DIR / "study.json"
TRADEOFF_PLOT = REPORTS_DIR / "accuracy_robustness.png"
FRONTIER_PLOT = REPORTS_DIR / "frontier.png"  # `part-cli frontier`, not a stage
FRONTIER_TABLE = REPORTS_DIR / "frontier.md"
STATE_DIR = Path("runs")  # resume states: not outputs, git-ignored
TIMINGS_DIR = Path("timings")  # wall times: not results, not declared in dvc.yaml, not in git
OWN_MODELS_DIR = Path("user_models")  # your architectures: a dep of every model-building stage
OWN_DATA_DIR = Path("data/own")  # your data sets: a dep of prepare
# What a working copy of the pipeline holds besides params.yaml (the device check's study, the
# tests' tiny projects copy exactly this).
PIPELINE_FILES = (Path("part"), Path("stages"), OWN_MODELS_DIR, OWN_DATA_DIR, Path("dvc.yaml"),
                  Path(".dvcignore"))


def run_name(variant: str, seed: int) -> str:
    return f"{variant}-{seed}"


def model_path(variant: str, seed: int) -> Path:
    """A trained model; the burn-in is the run named burnin-<seed>."""
    return MODELS_DIR / f"{run_name(variant, seed)}.safetensors"


# Which of a run's checkpoints the evaluate stages score (the `eval.checkpoint` param): the last
# epoch's, or the best epoch's by PGD accuracy on the monitor subset (robust overfitting).
CHECKPOINTS = ("last", "best")


def best_model_path(variant: str, seed: int) -> Path:
    """The best epoch of a training run (burn-ins have none: training continues from their
    last)."""
    return MODELS_DIR / f"{run_name(variant, seed)}.best.safetensors"


def scored_model_path(variant: str, seed: int, checkpoint: str) -> Path:
    """The checkpoint of a run that `eval.checkpoint` (one of CHECKPOINTS) picks."""
    return best_model_path(variant, seed) if checkpoint == "best" else model_path(variant, seed)


def burnin_path(seed: int) -> Path:
    return model_path("burnin", seed)


def masks_path(seed: int) -> Path:
    """The burn-in's masks, named after the model they come from."""
    return MASKS_DIR / burnin_path(seed).name


def gallery_path(seed: int) -> Path:
    return MASKS_DIR / f"gallery-{seed}.png"


def metrics_path(variant: str, seed: int) -> Path:
    return METRICS_DIR / f"{run_name(variant, seed)}.json"


def outcomes_path(variant: str, seed: int) -> Path:
    """The per-example outcomes beside the metrics they were counted from."""
    return metrics_path(variant, seed).with_suffix(".outcomes.safetensors")


def training_log_dir(name: str) -> Path:
    """A run's DVCLive log: metrics.json (its last epoch) and plots/metrics/<quantity>.tsv."""
    return TRAINING_LOG_DIR / name


def training_log_metrics(name: str) -> Path:
    return training_log_dir(name) / "metrics.json"  # DVCLive's layout


def training_log_plots(name: str) -> Path:
    return training_log_dir(name) / "plots" / "metrics"


def trace_path(variant: str, seed: int) -> Path:
    """A training run's budget trace (part/importance/budget_trace.py)."""
    return TRACES_DIR / f"{run_name(variant, seed)}.safetensors"


def budget_spec_path(variant: str) -> Path:
    return BUDGETS_DIR / f"{variant}.json"


def timings_path(stage: str, name: str) -> Path:
    return TIMINGS_DIR / f"{stage}-{name}.json"
