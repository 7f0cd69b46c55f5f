"""Your model: plain weights of any registered or own architecture evaluated through the real
`part-cli evaluate` (safetensors or a weights-only .pt, normalised inputs wrapped so attacks stay
in pixel space, mismatches named, nothing unpickled), and an own architecture trained by a real
tiny `dvc repro` on an image folder, its module and its data declared as deps."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _project import ran, run
from conftest import copy_project
from safetensors.torch import load_file, save_file
from test_own_data import make_image_folder

from part.data.sources import find_source_root, load_source
from part.evaluation.weights import load_weights
from part.models import build_model
from part.models.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow
EVAL = ["--eps", "8/255", "--attacks", "natural,pgd20", "--n", "48", "--batch-size", "48",
        "--params", "none.yaml"]


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{cwd}"}
    return subprocess.run([sys.executable, "-m", "part.cli", "evaluate", *args], cwd=cwd,
                          capture_output=True, text=True, env=env)


def _one_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return errors[0]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A cnn_small state_dict saved plainly, as a release would ship it."""
    where = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    model = build_model("cnn_small", num_classes=10, in_channels=3)
    save_file(model.state_dict(), str(where / "plain.safetensors"))
    return where


def test_plain_safetensors_and_a_weights_only_pt_give_the_same_figures(weights):
    state = load_file(str(weights / "plain.safetensors"))
    # a common release layout: {"state_dict": ...} with DataParallel's "module." prefix
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 7},
               weights / "release.pt")
    figures = {}
    for name in ("plain.safetensors", "release.pt"):
        result = _cli(weights, name, "--arch", "cnn_small", "--dataset", "synthetic", *EVAL,
                      "--json", f"{name}.json")
        assert result.returncode == 0, result.stderr[-2000:]
        metrics = json.loads((weights / f"{name}.json").read_text())
        assert metrics["architecture_from"] == "command line" and metrics["model"] == "cnn_small"
        assert metrics["weights_sha256"] == hashlib.sha256(
            (weights / name).read_bytes()).hexdigest()
        assert metrics["n_test_set"] == 500 and metrics["dataset"] == "synthetic"
        figures[name] = [metrics[key] for key in ("natural", "pgd20", "n_natural", "n_pgd20")]
    assert figures["plain.safetensors"] == figures["release.pt"]


def test_normalised_inputs_are_inside_the_model_and_the_attack_stays_in_pixel_space(weights):
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    result = _cli(weights, "plain.safetensors", "--arch", "cnn_small", "--dataset", "synthetic",
                  "--mean", ",".join(map(str, mean)), "--std", ",".join(map(str, std)), *EVAL,
                  "--json", "normalised.json", "--save-adv", "adv.safetensors")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((weights / "normalised.json").read_text())
    assert metrics["normalization"] == {"mean": mean, "std": std}
    # the model sees (x - mean) / std, computed here independently; the attack works on x
    test = load_source("synthetic", "test")
    x, y = test.images[:48].float() / 255, test.labels[:48]
    model = build_model("cnn_small", 10, 3)
    model.load_state_dict(load_file(str(weights / "plain.safetensors")))
    shift, scale = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    wrapped, _ = load_weights(weights / "plain.safetensors", "cnn_small", 10, 3, mean=mean,
                              std=std)
    with torch.no_grad():
        logits = model.eval()((x - shift) / scale)
        assert torch.equal(wrapped(x), logits) and not torch.allclose(model(x), logits)
    saved = load_file(str(weights / "adv.safetensors"))
    assert torch.equal(saved["natural.correct"], logits.argmax(1) == y)
    assert torch.equal(saved["natural"], x)  # the clean inputs, in pixel space
    pgd = saved["pgd20"]
    assert pgd.min() >= 0 and pgd.max() <= 1  # pixel space, not the normalised one
    assert (pgd - x).abs().max() <= 8 / 255 + 1e-6


@pytest.mark.parametrize("change, says", [
    (lambda state: state.pop("fc.weight"), "missing: fc.weight"),
    (lambda state: state.update({"extra.weight": torch.zeros(1)}), "unexpected: extra.weight"),
    (lambda state: state.update({"fc.bias": torch.zeros(3)}), "wrong shape: fc.bias (3,)"),
])
def test_weights_that_do_not_fit_the_architecture_are_one_message(weights, tmp_path, change,
                                                                   says):
    state = load_file(str(weights / "plain.safetensors"))
    change(state)
    save_file(state, str(tmp_path / "bad.safetensors"))
    error = _one_error(_cli(tmp_path, "bad.safetensors", "--arch", "cnn_small", "--dataset",
                            "synthetic", *EVAL))
    assert says in error and "bad.safetensors" in error and "--arch" in error


class _Payload:
    """An object whose unpickling would leave a file behind."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pt_file_is_never_unpickled_beyond_tensors(tmp_path):
    marker = tmp_path / "unpickled"
    torch.save({"fc.weight": torch.zeros(10, 128), "payload": _Payload(marker)},
               tmp_path / "payload.pt")
    error = _one_error(_cli(tmp_path, "payload.pt", "--arch", "cnn_small", "--dataset",
                            "synthetic", *EVAL))
    assert "payload.pt" in error and not marker.exists()


def test_a_pt_file_without_arch_and_a_missing_eps_are_one_message_each(weights):
    assert "--arch" in _one_error(_cli(weights, "release.pt", "--dataset", "synthetic"))
    without_eps = [arg for arg in EVAL if arg not in ("--eps", "8/255")]
    assert "--eps" in _one_error(_cli(weights, "plain.safetensors", "--arch", "cnn_small",
                                      "--dataset", "synthetic", *without_eps))


@pytest.mark.skipif(find_source_root("fashion-mnist") is None,
                    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
def test_dataset_reads_the_whole_published_test_split(tmp_path):
    torch.manual_seed(0)
    save_file(build_model("cnn_small", 10, 1).state_dict(), str(tmp_path / "w.safetensors"))
    result = _cli(tmp_path, "w.safetensors", "--arch", "cnn_small", "--dataset",
                  "fashion-mnist", *EVAL, "--json", "m.json")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n_test_set"] == 10000 and metrics["n_natural"] == 48


OWN_MODEL = "user_models.example:tiny_net"
OWN_RUN = {"dataset": "imagefolder", "model": OWN_MODEL,
           "data": {"root": "data/own/pets", "val_subset": 0, "train_subset": None,
                    "test_subset": None, "image_size": 16},
           "train": {"batch_size": 24, "steps": 2, "step_size": "2/255", "monitor_subset": 12,
                     "monitor_steps": 2},
           "eval": {"attacks": ["natural", "pgd20", "pgd_unimportant"], "n_autoattack": 6,
                    "batch_size": 24}}
MODEL_STAGES = {"burnin@0", "masks@0", "train@baseline-0", "train@part-0",
                "evaluate@baseline-0", "evaluate@part-0"}


@pytest.fixture(scope="module")
def own_repro(tmp_path_factory) -> Path:
    """A tiny project whose data is an image folder under data/own and whose model is
    user_models/example.py's, after its first `dvc repro`."""
    from _project import commit, make_project

    repo = make_project(tmp_path_factory.mktemp("own") / "repo", **OWN_RUN)
    make_image_folder(repo / "data" / "own" / "pets", per_class=8, sizes=(16, 20))
    commit(repo, "an image folder")
    first = run(["dvc", "repro"], repo)
    assert MODEL_STAGES | {"prepare", "budgets", "report"} == ran(first), first.stdout
    commit(repo, "first repro")
    return repo


def test_an_own_architecture_trains_on_an_image_folder_through_dvc_repro(own_repro):
    metrics = json.loads((own_repro / "metrics/part-0.json").read_text())
    assert metrics["model"] == OWN_MODEL and metrics["dataset"] == "imagefolder"
    assert metrics["n_natural"] == 24 and 0 <= metrics["pgd_unimportant"] <= 1
    result = _cli(own_repro, "models/part-0.safetensors", "--attacks", "natural", "--json",
                  "again.json")
    assert result.returncode == 0, result.stderr[-2000:]
    again = json.loads((own_repro / "again.json").read_text())
    assert again["natural"] == metrics["natural"]
    # the same weights as a plain state_dict, the architecture given, on the prepared --data
    model, _ = load_checkpoint(own_repro / "models/part-0.safetensors")
    save_file(model.state_dict(), str(own_repro / "plain.safetensors"))
    result = _cli(own_repro, "plain.safetensors", "--arch", OWN_MODEL, "--data",
                  "data/prepared/test.safetensors", "--eps", "8/255", "--attacks", "natural",
                  "--json", "plain.json")
    assert result.returncode == 0, result.stderr[-2000:]
    plain = json.loads((own_repro / "plain.json").read_text())
    assert plain["natural"] == metrics["natural"] and plain["n_test_set"] == 24


def _changed(repo: Path) -> set[str]:
    status = run(["dvc", "status"], repo).stdout
    return {line.rstrip(":") for line in status.splitlines()
            if line and not line[0].isspace() and line.endswith(":")}


def test_editing_the_own_model_or_adding_an_image_reruns_what_depends_on_it(own_repro,
                                                                            tmp_path):
    repo = copy_project(own_repro, tmp_path / "repo")
    with open(repo / "user_models" / "example.py", "a") as module:
        module.write("\n# an edit\n")
    assert _changed(repo) == MODEL_STAGES
    run(["git", "checkout", "--", "."], repo)
    picture = repo / "data/own/pets/train/ant/0.png"
    (picture.parent / "new.png").write_bytes(picture.read_bytes())
    assert _changed(repo) == {"prepare"}


def test_a_cam_layer_the_model_lacks_is_one_message(weights):
    error = _one_error(_cli(weights, "plain.safetensors", "--arch", "cnn_small", "--dataset",
                            "synthetic", "--cam-layer", "nowhere", *EVAL))
    assert "'nowhere'" in error
