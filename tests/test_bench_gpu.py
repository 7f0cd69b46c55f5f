"""bench/bench_gpu.py runs on the CPU (small sizes), through the pipeline's code, and prints the
figures the README and the GPU targets read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_gpu import CIFAR_TRAIN, projection  # noqa: E402

FIGURES = ("at_images_per_s", "part_images_per_s", "part_over_at", "masks_per_s",
           "pgd20_images_per_s")


def test_the_cpu_run_prints_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "bench/bench_gpu.py", "--small", "--n", "64", "--n-eval", "16",
         "--repeats", "1", "--batch-size", "32", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})  # this checkout's part, not another's
    report = json.loads(result.stdout)
    assert report == json.loads(out.read_text())
    assert report["device_type"] == "cpu" and report["small"] is True
    assert (report["images"], report["eval_images"]) == (64, 16)
    assert report["torch"] and report["commit"]
    (row,) = report["results"]
    assert row["model"] == "cnn_small" and row["precision"] == "fp32"
    assert all(row[key] > 0 for key in FIGURES)


def test_the_projection_is_the_papers_schedule_at_the_fastest_resnet18_configuration():
    rows = [{"model": "resnet18", "precision": p, "channels_last": False, "compile": False,
             "at_images_per_s": at, "part_images_per_s": part}
            for p, at, part in (("fp32", 1000.0, 900.0), ("bf16", 5000.0, 4900.0))]
    projected = projection(rows)
    assert projected["configuration"]["precision"] == "bf16"
    expected = (20 * CIFAR_TRAIN / 5000 + 60 * CIFAR_TRAIN / 4900) / 60
    assert projected["minutes"] == pytest.approx(expected, abs=0.05)
    assert projection([{**rows[0], "model": "cnn_small"}]) is None
