"""`part-cli evaluate`: the table on success, one message and exit code 2 on every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from part.attacks.suite import ATTACKS
from part.cli import DEFAULT_TEST_SET, app
from part.data.prepared import prepare_dataset
from part.models import build_model
from part.models.checkpoint import save_checkpoint

EPS = 8 / 255
runner = CliRunner()


def _meta(**overrides) -> dict:
    meta = {"model": "cnn_small", "num_classes": 10, "in_channels": 3, "image_size": 32,
            "dataset": "synthetic", "method": "at", "eps": EPS, "eps_low": EPS, "epoch": 1,
            "params_hash": "test"}
    meta.update(overrides)
    return meta


def _checkpoint(path: Path, **overrides) -> Path:
    meta = _meta(**overrides)
    torch.manual_seed(0)
    model = build_model(meta["model"], meta["num_classes"], meta["in_channels"])
    return save_checkpoint(path, model, meta)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    prepare_dataset("synthetic", root / "data", train_subset=20, test_subset=40, seed=0)
    good = _checkpoint(root / "good.safetensors")
    truncated = root / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    foreign = root / "foreign.safetensors"
    save_file({"weight": torch.zeros(4, 4)}, foreign)
    not_safetensors = root / "notes.safetensors"
    not_safetensors.write_text("these are not tensors\n")
    return {
        "data": root / "data" / "test.safetensors",
        "good": good,
        "truncated": truncated,
        "foreign": foreign,
        "not_safetensors": not_safetensors,
        "one_channel": _checkpoint(root / "gray.safetensors", in_channels=1),
        "five_classes": _checkpoint(root / "five.safetensors", num_classes=5),
        "size_28": _checkpoint(root / "size28.safetensors", image_size=28),
        "other_dataset": _checkpoint(root / "fmnist.safetensors", dataset="cifar10"),
        "missing": root / "absent.safetensors",
        "root": root,
    }


@pytest.fixture(autouse=True)
def _outside_a_project(tmp_path, monkeypatch):
    """Run where there is no params.yaml: the built-in defaults apply."""
    monkeypatch.chdir(tmp_path)


def _evaluate(*args: object):
    return runner.invoke(app, ["evaluate", *map(str, args)])


def test_evaluate_prints_the_table_and_writes_the_metrics(files):
    out = files["root"] / "metrics" / "good.json"
    result = _evaluate(files["good"], "--data", files["data"], "--attacks", "natural,fgsm,pgd20",
                       "--n", 16, "--steps", 3, "--json", out)
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["eps"] == pytest.approx(EPS)  # the checkpoint's eps by default
    assert metrics["step_size"] == pytest.approx(EPS / 4)  # eps/4 by default
    assert metrics["attacks"] == ["natural", "fgsm", "pgd20"]
    assert [metrics[f"n_{key}"] for key in ("natural", "fgsm", "pgd20", "worst_case")] == [16] * 4
    table = result.stdout
    for label in ("natural", "FGSM", "PGD-3", "worst case", "accuracy", "seconds"):
        assert label in table
    for key in ("natural", "fgsm", "pgd20", "worst_case"):
        assert f"{100 * metrics[key]:.2f}%" in table
    assert "8/255" in table


def test_eps_and_step_size_accept_fractions(files):
    out = files["root"] / "fractions.json"
    result = _evaluate(files["good"], "--data", files["data"], "--attacks", "fgsm", "--n", 8,
                       "--eps", "4/255", "--step-size", "1/255", "--json", out)
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["eps"] == pytest.approx(4 / 255)
    assert metrics["step_size"] == pytest.approx(1 / 255)
    assert metrics["train_eps"] == pytest.approx(EPS)


BAD_INPUTS = {
    "missing checkpoint": ("missing", [], "does not exist"),
    "truncated checkpoint": ("truncated", [], "truncated or corrupt"),
    "foreign safetensors": ("foreign", [], "not a part checkpoint"),
    "not safetensors": ("not_safetensors", [], "not a readable safetensors file"),
    "wrong channels": ("one_channel", [], "in_channels"),
    "wrong classes": ("five_classes", [], "num_classes"),
    "wrong image size": ("size_28", [], "image_size"),
    "other data set": ("other_dataset", [], "trained on 'cifar10'"),
    "unknown attack": ("good", ["--attacks", "natural,pgd7"],
                       f"unknown attack 'pgd7'; allowed: {', '.join(ATTACKS)}"),
    "bad eps": ("good", ["--eps", "8/0"], "--eps: cannot read '8/0'"),
    "eps above 1": ("good", ["--eps", "2"], "--eps: a budget is a fraction"),
    "missing data": ("good", ["--data", "nowhere/test.safetensors"],
                     "prepared data file nowhere/test.safetensors not found"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_gives_one_message_and_exit_code_2(files, case):
    name, extra, message = BAD_INPUTS[case]
    args = [files[name]]
    if "--data" not in extra:
        args += ["--data", files["data"]]
    result = _evaluate(*args, "--attacks", "natural", "--n", 4, *extra)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # not an escaped exception
    assert message in result.stderr
    assert result.stderr.count("error:") == 1
    assert "Traceback" not in result.output
    assert result.stdout == ""  # no table


def test_mismatch_message_names_both_sides(files):
    result = _evaluate(files["one_channel"], "--data", files["data"], "--attacks", "natural")
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert "trained on 1-channel 32x32 images in 10 classes" in message
    assert "holds 3-channel 32x32 images in 10 classes" in message


@pytest.mark.slow  # a fresh interpreter imports torch: a few seconds
def test_real_process_exits_2_without_traceback(files):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    completed = subprocess.run(
        [sys.executable, "-m", "part.cli", "evaluate", str(files["truncated"]), "--data",
         str(files["data"]), "--attacks", "natural"],
        capture_output=True, text=True, timeout=120, env=env)
    assert completed.returncode == 2
    assert "truncated or corrupt" in completed.stderr
    assert "Traceback" not in completed.stderr + completed.stdout


def test_default_data_is_the_pipeline_test_set():
    from part.io.paths import TEST_SET

    assert Path(DEFAULT_TEST_SET) == TEST_SET


def test_info_names_the_versions_and_where_each_data_set_is_found():
    import torchvision

    result = runner.invoke(app, ["info"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert torch.__version__ in result.output and torchvision.__version__ in result.output
    for source in ("fashion-mnist", "cifar10", "svhn", "tinyimagenet", "synthetic"):
        assert f"data: {source}" in result.output
    if Path("/usr/share/datasets/fashion-mnist").is_dir():
        assert "/usr/share/datasets/fashion-mnist" in result.output


def test_inside_a_project_the_defaults_are_its_eval_settings(files, tmp_path):
    (tmp_path / "params.yaml").write_text(
        "dataset: synthetic\neps: 6/255\neps_low: 4/255\ntrain:\n  step_size: 1/255\n"
        "eval:\n  attacks: [natural, pgd20]\n  n: 12\n  steps: 2\n  seed: 3\n")
    out = tmp_path / "defaults.json"
    result = _evaluate(files["good"], "--data", files["data"], "--json", out)
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["attacks"] == ["natural", "pgd20"] and metrics["n_pgd20"] == 12
    assert (metrics["steps"], metrics["seed"]) == (2, 3)
    assert metrics["eps"] == pytest.approx(6 / 255)  # params' eps, not the checkpoint's 8/255
    assert metrics["step_size"] == pytest.approx(1 / 255)  # the training step, as the pipeline
    assert "params.yaml" in " ".join(result.stdout.split())
    given = _evaluate(files["good"], "--data", files["data"], "--steps", "1", "--n", "8",
                      "--json", out)
    assert given.exit_code == 0, given.output
    assert (json.loads(out.read_text())["steps"], json.loads(out.read_text())["n_natural"]) == (
        1, 8)  # an option given wins over params.yaml


def test_the_table_gives_each_accuracy_its_n_and_wilson_interval(files):
    from part.evaluation.statistics import wilson_interval

    out = files["root"] / "table.json"
    result = runner.invoke(app, ["evaluate", str(files["good"]), "--data", str(files["data"]),
                                 "--attacks", "natural", "--n", "40", "--json", str(out)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    low, high = wilson_interval(round(metrics["natural"] * 40), 40)
    assert f"[{100 * low:.2f}, {100 * high:.2f}]" in result.stdout
    assert "95% interval" in result.stdout and " 40 " in result.stdout
