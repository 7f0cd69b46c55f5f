"""bench/bench_gpu.py runs on the CPU (small sizes), through the pipeline's code, and prints the
figures the README and the GPU targets read; the projection follows the paper preset's
schedule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_gpu import (  # noqa: E402
    CIFAR_TRAIN,
    FIGURES,
    PAPER_PRESET,
    deterministic_cost,
    projection,
)


def test_the_cpu_run_prints_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "bench/bench_gpu.py", "--small", "--n", "64", "--n-eval", "16",
         "--repeats", "1", "--batch-size", "32", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})  # this checkout's part, not another's
    report = json.loads(result.stdout)
    assert report == json.loads(out.read_text())
    assert report["device_type"] == "cpu" and report["small"] is True and report["device"]
    assert report["images"] == {"cnn_small": 64} and report["eval_images"] == 16
    assert report["image_shape"] == [3, 32, 32] and report["classes"] == 10
    assert report["torch"] and report["commit"]
    (row,) = report["results"]
    assert "errors" not in row, row["errors"]
    assert row["model"] == "cnn_small" and row["precision"] == "fp32"
    assert all(row[figure] > 0 for figure in (*FIGURES, "part_over_at"))
    assert report["paper_run_projection"] is None  # no resnet18 row to project from


def _row(precision: str, at: float, part: float, masks: float = 10 * CIFAR_TRAIN,
         monitor: float = 1e9) -> dict:
    return {"model": "resnet18", "precision": precision, "channels_last": True,
            "compile": False, "at_images_per_s": at, "part_images_per_s": part,
            "masks_per_s": masks, "monitor_images_per_s": monitor, "pgd20_images_per_s": 1.0}


def test_the_projection_is_the_presets_schedule_at_the_fastest_resnet18_configuration():
    preset = yaml.safe_load(PAPER_PRESET.read_text())
    assert preset["mask"]["refresh_every"] == 1  # every PART epoch refreshes its masks
    burn_in, part_epochs = preset["burn_in_epochs"], preset["epochs"] - preset["burn_in_epochs"]
    rows = [_row("fp32", 1000.0, 900.0), _row("bf16", 5000.0, 4900.0)]
    projected = projection(rows)
    assert projected["configuration"]["precision"] == "bf16"
    assert projected["mask_refreshes"] == part_epochs
    # From outside the formula: every epoch at the fastest measured rate bounds it below, at
    # the slowest above; twice every rate is half the time.
    epochs = burn_in + part_epochs
    assert epochs * CIFAR_TRAIN / 5000 / 60 <= projected["minutes"]
    assert projected["minutes"] <= epochs * CIFAR_TRAIN / 4900 / 60 + 0.05  # + masks, monitor
    faster = projection([_row("bf16", 10000.0, 9800.0, masks=20 * CIFAR_TRAIN, monitor=2e9)])
    assert faster["minutes"] == pytest.approx(projected["minutes"] / 2, abs=0.1)  # 0.1: rounded


def test_the_projection_counts_the_monitor_and_skips_incomplete_or_other_rows():
    preset = yaml.safe_load(PAPER_PRESET.read_text())
    slow_monitor = _row("bf16", 5000.0, 5000.0, monitor=preset["train"]["monitor_subset"] / 6)
    free_monitor = projection([_row("bf16", 5000.0, 5000.0)])["minutes"]
    # a monitor of 6 s runs once per epoch, burn-in included: it adds 6 s times the epochs
    assert projection([slow_monitor])["minutes"] - free_monitor == pytest.approx(
        preset["epochs"] * 6 / 60, abs=0.1)  # minutes are rounded to 0.1
    failed = {key: value for key, value in _row("tf32", 9e9, 9e9).items()
              if key != "masks_per_s"}  # a figure that failed: not a candidate
    assert projection([slow_monitor, failed])["configuration"]["precision"] == "bf16"
    assert projection([{**slow_monitor, "model": "cnn_small"}]) is None


SMALL = ["--n", "32", "--n-eval", "8", "--repeats", "1", "--batch-size", "16"]  # 2 batches


def _bench(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "bench/bench_gpu.py", *args, *SMALL, "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    return result, json.loads(out.read_text())


def test_the_quick_profile_on_the_cpu_adds_the_deterministic_row_and_its_cost(tmp_path):
    result, report = _bench(tmp_path, "--quick")
    assert result.returncode == 0, result.stderr
    assert report["quick"] is True and report["failed"] == []
    plain, deterministic = report["results"]
    assert (plain["deterministic"], deterministic["deterministic"]) == (False, True)
    assert plain["status"] == deterministic["status"] == "ok"
    (cost,) = report["deterministic_cost"]["deterministic_over_default"]
    assert cost["model"] == "cnn_small" and cost["at_epoch_ratio"] > 0


@pytest.mark.slow
def test_a_configuration_that_fails_is_a_failure_in_the_report_and_the_exit_status(tmp_path):
    # No C++ compiler for inductor: the compiled row fails, the eager rows still run.
    result, report = _bench(tmp_path, "--quick", "--compile", CXX="/bin/false",
                            TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))
    assert result.returncode == 1
    statuses = [(row["compile"], row["deterministic"], row["status"])
                for row in report["results"]]
    assert statuses == [(False, False, "ok"), (True, False, "failed"), (False, True, "ok")]
    (failed,) = report["failed"]
    assert failed["compile"] is True and "epochs" in failed["errors"]
    assert "failed" in result.stderr and "InvalidCxxCompiler" in result.stderr
    assert json.loads(result.stdout) == report  # the whole report is still printed


def test_the_deterministic_cost_pairs_each_deterministic_row_with_its_default_twin():
    rows = [_row("bf16", 5000.0, 4000.0), {**_row("bf16", 4000.0, 2000.0), "deterministic": True},
            {**_row("tf32", 10.0, 10.0), "deterministic": True}]  # no twin: left out
    (cost,) = deterministic_cost(rows)["deterministic_over_default"]
    assert cost["precision"] == "bf16"
    assert cost["at_epoch_ratio"] == 1.25 and cost["part_epoch_ratio"] == 2.0
    assert deterministic_cost(rows[:1]) is None
