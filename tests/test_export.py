"""`part-cli export --format robustbench`: weights that a fresh model reads with
torch.load(weights_only=True) and that give the checkpoint's logits, and a model_info JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from part.cli import app
from part.io.hashing import file_sha256
from part.models import build_model
from part.models.checkpoint import load_checkpoint, save_checkpoint

EPS = 8 / 255
runner = CliRunner()


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=10, in_channels=3)
    with torch.no_grad():  # batch-norm statistics that differ from a fresh model's
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(7)
    meta = {"model": "resnet18", "num_classes": 10, "in_channels": 3, "image_size": 32,
            "dataset": "cifar10", "method": "part-at", "eps": EPS, "eps_low": 6 / 255,
            "epoch": 80, "params_hash": "test", "variant": "part"}
    return save_checkpoint(tmp_path / "part-0.safetensors", model, meta)


def _export(*args: object):
    return runner.invoke(app, ["export", *map(str, args)])


def test_exported_weights_in_a_fresh_model_give_the_checkpoints_logits(checkpoint, tmp_path):
    result = _export(checkpoint, "--format", "robustbench", tmp_path / "out")
    assert result.exit_code == 0, result.output
    state = torch.load(tmp_path / "out" / "part-0.pt", weights_only=True)
    fresh = build_model("resnet18", num_classes=10, in_channels=3)
    fresh.load_state_dict(state, strict=True)
    original, _ = load_checkpoint(checkpoint)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), original(x))


def _metrics_of(checkpoint: Path, path: Path, **fields) -> Path:
    """A metrics file as the evaluation writes it for `checkpoint` (its sha256 recorded)."""
    path.write_text(json.dumps({"model": "resnet18", "dataset": "cifar10", "epoch": 80,
                                "natural": 0.8234, "n_natural": 10000, "autoattack": 0.4812,
                                "n_autoattack": 10000, "n_test": 10000, "eps": EPS,
                                "autoattack_package": "autoattack 0.1",
                                "autoattack_version": "standard", "n_test_set": 10000,
                                "train_eps": EPS, "checkpoint_sha256": file_sha256(checkpoint),
                                **fields}))
    return path


def test_model_info_is_filled_from_the_metadata_and_metrics(checkpoint, tmp_path):
    metrics = _metrics_of(checkpoint, tmp_path / "part-0.json")
    result = _export(checkpoint, tmp_path / "out", "--metrics", metrics, "--name",
                     "Zhang2024Pixel")
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "out" / "Zhang2024Pixel.json").read_text())
    assert info["threat_model"] == "Linf" and info["eps"] == "8/255"
    assert info["dataset"] == "cifar10" and info["architecture"] == "resnet18"
    assert (info["clean_acc"], info["autoattack_acc"]) == ("82.34", "48.12")
    assert (info["n_clean"], info["n_autoattack"]) == (10000, 10000)
    assert info["method"] == "part-at" and info["variant"] == "part"
    assert info["footnote"] is None  # AutoAttack on the whole test set: nothing to say
    assert (tmp_path / "out" / "Zhang2024Pixel.pt").is_file()


def test_the_eps_is_the_one_measured_at_and_a_subset_autoattack_is_footnoted(checkpoint,
                                                                            tmp_path):
    metrics = _metrics_of(checkpoint, tmp_path / "part-0.json", eps=4 / 255, n_autoattack=1000)
    result = _export(checkpoint, tmp_path / "out", "--metrics", metrics)
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "out" / "part-0.json").read_text())
    assert info["eps"] == "4/255" and info["train_eps"] == "8/255"
    assert "first 1000 of the 10000 test examples" in info["footnote"]
    assert "evaluated at eps 4/255, trained at 8/255" in info["footnote"]


def test_the_entry_says_what_it_was_measured_on_against_the_whole_test_set(checkpoint,
                                                                             tmp_path):
    """All 1,000 examples of a prepared subset of a 10,000-image test set: partial, and said."""
    metrics = _metrics_of(checkpoint, tmp_path / "part-0.json", n_natural=1000,
                          n_autoattack=1000, n_test=1000, autoattack_version="plus")
    result = _export(checkpoint, tmp_path / "out", "--metrics", metrics)
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "out" / "part-0.json").read_text())
    assert "clean accuracy on 1000 of the 10000 test examples" in info["footnote"]
    assert "AutoAttack accuracy on the first 1000 of the 10000 test examples" in info["footnote"]
    assert "AutoAttack version 'plus'" in info["footnote"]
    assert (info["autoattack_version"], info["n_test_set"]) == ("plus", 10000)


@pytest.mark.parametrize("fields, expected", [
    ({"n_test_set": None}, "records no n_test_set"),
    ({"autoattack_version": None}, "records no autoattack_version"),
    ({"train_eps": 4 / 255}, "trained at eps"),
])
def test_metrics_that_cannot_say_what_was_measured_are_refused(checkpoint, tmp_path, fields,
                                                               expected):
    metrics = _metrics_of(checkpoint, tmp_path / "part-0.json", **fields)
    result = _export(checkpoint, tmp_path / "out", "--metrics", metrics)
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


def test_the_metrics_of_another_checkpoint_are_refused(checkpoint, tmp_path):
    """Same model, data set, method and epoch (another seed or variant): still refused."""
    other = save_checkpoint(tmp_path / "random_mask-0.safetensors",
                            build_model("resnet18", num_classes=10, in_channels=3),
                            {**load_checkpoint(checkpoint)[1], "variant": "random_mask"})
    metrics = _metrics_of(other, tmp_path / "random_mask-0.json")
    result = _export(checkpoint, tmp_path / "out", "--metrics", metrics)
    assert result.exit_code == 2, result.output
    assert "scored another checkpoint" in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, expected", [
    (["--format", "onnx"], "--format 'onnx' is not one of robustbench"),
    (["--name", "../escape"], "--name '../escape'"),
    (["--metrics", "{other}"], "records no checkpoint_sha256"),
    (["--metrics", "{missing}"], "not a readable metrics file"),
])
def test_bad_input_gives_one_message_exit_2_and_writes_nothing(checkpoint, tmp_path, args,
                                                                expected):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"dataset": "svhn", "natural": 0.9}))
    args = [arg.format(other=other, missing=tmp_path / "missing.json") for arg in args]
    result = _export(checkpoint, tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()
