"""Safetensors checkpoints: exact round trips, typed metadata, atomic saves, one clear error."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import part.io.tensorfile as tensorfile
from part import __version__
from part.errors import PartError
from part.io.atomic import WriteError
from part.models import build_model
from part.models.checkpoint import (
    REQUIRED_META,
    CheckpointError,
    load_checkpoint,
    load_extra_tensors,
    params_hash,
    read_metadata,
    save_checkpoint,
)


def make_meta(**overrides: Any) -> dict[str, Any]:
    meta = {
        "model": "cnn_small", "num_classes": 10, "in_channels": 1, "image_size": 28,
        "dataset": "fashion-mnist", "method": "part-at", "eps": 8 / 255, "eps_low": 7 / 255,
        "epoch": 3, "params_hash": "0123456789abcdef", "part_version": __version__,
    }
    meta.update(overrides)
    return meta


@functools.cache
def trained_model(seed: int = 0, **build_kwargs: Any) -> nn.Module:
    """A cnn_small whose BN running stats moved away from their init, so buffers matter.

    Cached: tests only read these models (saving does not modify a model).
    """
    torch.manual_seed(seed)
    kwargs = {"in_channels": 1, **build_kwargs}
    model = build_model("cnn_small", **kwargs).train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(8, kwargs["in_channels"], 28, 28) * 3)
    return model.eval()


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[Path, nn.Module]:
    model = trained_model()
    path = save_checkpoint(tmp_path / "model.safetensors", model, make_meta())
    return path, model


def rewrite(path: Path, *, metadata_update: dict[str, str | None] | None = None,
            tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Rewrite a checkpoint with changed metadata (None deletes a key), keeping its digest."""
    with safe_open(path, framework="pt") as reader:
        metadata = dict(reader.metadata())
        stored = {name: reader.get_tensor(name) for name in reader.keys()}
    for key, value in (metadata_update or {}).items():
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = value
    save_file(tensors if tensors is not None else stored, path, metadata=metadata)


def assert_names_file(error: pytest.ExceptionInfo, path: Path, *fragments: str) -> None:
    message = str(error.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    assert isinstance(error.value, PartError)


# ----------------------------------------------------------------------------- round trip


def test_round_trip_gives_identical_outputs_and_typed_metadata(saved) -> None:
    path, model = saved
    x = torch.rand(5, 1, 28, 28)
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    assert torch.equal(loaded(x), model(x))
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert meta == make_meta()
    assert type(meta["eps"]) is float and type(meta["epoch"]) is int
    assert read_metadata(path) == meta


def test_metadata_is_json_with_a_format_marker_and_digest(saved) -> None:
    path, model = saved
    with safe_open(path, framework="pt") as reader:
        raw = reader.metadata()
        names = set(reader.keys())
    assert raw["format"] == "part-checkpoint/1"
    assert raw["dataset"] == '"fashion-mnist"' and raw["epoch"] == "3"
    assert len(raw["tensors_sha256"]) == 64
    assert names == {f"model.{name}" for name in model.state_dict()}


def test_budgets_may_be_none_or_ints_and_extra_keys_survive(tmp_path: Path) -> None:
    meta = make_meta(eps=0, eps_low=None, history=[{"epoch": 1, "natural": 0.5}], run="burnin")
    path = save_checkpoint(tmp_path / "m.safetensors", trained_model(), meta)
    decoded = read_metadata(path)
    assert decoded["eps"] == 0.0 and type(decoded["eps"]) is float
    assert decoded["eps_low"] is None
    assert decoded["history"] == [{"epoch": 1, "natural": 0.5}] and decoded["run"] == "burnin"


def test_extra_tensors_round_trip_including_views_of_one_buffer(tmp_path: Path) -> None:
    buffer = torch.arange(10, dtype=torch.float64)
    extra = {"momentum.0": buffer[:4], "momentum.1": buffer[4:], "rng": torch.get_rng_state(),
             "step": torch.tensor(7), "masks": torch.rand(3, 1, 28, 28) > 0.5}
    path = save_checkpoint(tmp_path / "m.safetensors", trained_model(), make_meta(),
                           extra_tensors=extra)
    loaded = load_extra_tensors(path)
    assert loaded.keys() == extra.keys()
    for name, tensor in extra.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name
    load_checkpoint(path)  # extras do not disturb the strict model load


@pytest.mark.slow
def test_resnet18_grey_round_trip_and_parent_dirs(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_model("resnet18", num_classes=3, in_channels=1).eval()
    meta = make_meta(model="resnet18", num_classes=3, image_size=32)
    path = save_checkpoint(tmp_path / "a" / "b" / "r.safetensors", model, meta)
    loaded, _ = load_checkpoint(str(path), expect={"in_channels": 1, "num_classes": 3})
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_wrapped_models_save_their_plain_state_dict(tmp_path: Path) -> None:
    model = trained_model()
    path = save_checkpoint(tmp_path / "m.safetensors", nn.DataParallel(model), make_meta())
    loaded, _ = load_checkpoint(path)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))


def test_loading_leaves_the_global_rng_alone(saved) -> None:
    path, _ = saved
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    load_checkpoint(path)
    assert torch.equal(torch.rand(3), expected)


def test_expect_accepts_matching_values(saved) -> None:
    path, _ = saved
    load_checkpoint(path, expect={"in_channels": 1, "num_classes": 10, "image_size": 28,
                                  "eps": 8 / 255, "model": "cnn_small"})


# ----------------------------------------------------------------------------- bad files


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.safetensors"
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert_names_file(error, path, "does not exist")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as error:
        read_metadata(tmp_path)
    assert_names_file(error, tmp_path, "not a file")


def test_truncated_file(saved) -> None:
    path, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for reader in (load_checkpoint, read_metadata, load_extra_tensors):
        with pytest.raises(CheckpointError) as error:
            reader(path)
        assert_names_file(error, path, "truncated or corrupt", "re-running")


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert_names_file(error, path, "not a readable safetensors file")


def test_flipped_tensor_bytes_fail_the_digest(saved) -> None:
    path, _ = saved
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # inside the tensor data, after the header
    path.write_bytes(bytes(data))
    read_metadata(path)  # the header is intact
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert_names_file(error, path, "tensors_sha256", "corrupt")


@pytest.mark.parametrize("metadata", [None, {"note": "someone else's"}])
def test_foreign_safetensors_file(tmp_path: Path, metadata: dict | None) -> None:
    path = tmp_path / "foreign.safetensors"
    save_file(build_model("cnn_small", in_channels=1).state_dict(), path, metadata=metadata)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert_names_file(error, path, "not a part checkpoint", "part-checkpoint/1")


def test_unknown_format_version(saved) -> None:
    path, _ = saved
    rewrite(path, metadata_update={"format": "part-checkpoint/2"})
    with pytest.raises(CheckpointError) as error:
        read_metadata(path)
    assert_names_file(error, path, "'part-checkpoint/2'")


def test_weights_that_do_not_fit_the_named_architecture(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, trained_model(num_classes=5), make_meta(num_classes=5))
    rewrite(path, metadata_update={"num_classes": "10"})  # tensors (and digest) untouched
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert_names_file(error, path, "do not fit 'cnn_small'", "num_classes=10", "size mismatch")


@pytest.mark.parametrize(("update", "fragment"), [
    ({"epoch": '"three"'}, "'epoch' must be an int"),
    ({"eps": '"8/255"'}, "'eps' must be a finite number"),
    ({"dataset": None}, "missing key 'dataset'"),
    ({"model": "resnet18"}, "not valid JSON"),
    ({"model": '"resnet19"'}, "unknown model 'resnet19'"),
])
def test_bad_metadata_in_file(saved, update: dict, fragment: str) -> None:
    path, _ = saved
    rewrite(path, metadata_update=update)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert_names_file(error, path, fragment)


def test_expect_mismatch_names_key_expected_and_found(saved) -> None:
    path, _ = saved
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path, expect={"in_channels": 3, "image_size": 28, "seed": 1})
    assert_names_file(error, path, "'in_channels' expected 3, found 1",
                      "'seed' expected 1 but the metadata has no such key")
    assert "image_size" not in str(error.value)


# ----------------------------------------------------------------------------- bad saves


@pytest.mark.parametrize(("meta", "fragment"), [
    ({k: v for k, v in make_meta().items() if k != "epoch"}, "missing key 'epoch'"),
    (make_meta(num_classes=5), "num_classes"),
    (make_meta(model="resnet18"), "model_name='cnn_small'"),
    (make_meta(epoch=True), "'epoch' must be an int"),
    (make_meta(eps=float("nan")), "'eps' must be a finite number"),
    (make_meta(format="mine"), "'format' is not allowed"),
    (make_meta(note=object()), "not JSON-encodable"),
])
def test_invalid_save_is_refused_and_writes_nothing(tmp_path: Path, meta: dict,
                                                    fragment: str) -> None:
    path = tmp_path / "m.safetensors"
    with pytest.raises(CheckpointError) as error:
        save_checkpoint(path, trained_model(), meta)
    assert_names_file(error, path, fragment)
    assert list(tmp_path.iterdir()) == []


def test_part_version_defaults_to_this_package(tmp_path: Path) -> None:
    meta = {k: v for k, v in make_meta().items() if k != "part_version"}
    path = save_checkpoint(tmp_path / "m.safetensors", trained_model(), meta)
    assert read_metadata(path)["part_version"] == __version__
    assert set(REQUIRED_META) <= set(read_metadata(path))


@pytest.mark.parametrize("failure", [OSError("No space left on device"), RuntimeError("boom")])
def test_interrupted_save_keeps_the_previous_checkpoint(saved, monkeypatch,
                                                        failure: Exception) -> None:
    path, old_model = saved
    real_write = tensorfile.write_safetensors_unguarded

    def half_written_then_fail(filename, tensors, metadata=None):
        real_write(filename, tensors, metadata)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) // 2])
        raise failure

    monkeypatch.setattr(tensorfile, "write_safetensors_unguarded", half_written_then_fail)
    # a file-system failure is one message naming the file (part.io.atomic.WriteError)
    expected_error = WriteError if isinstance(failure, OSError) else RuntimeError
    with pytest.raises(expected_error, match=str(path) if expected_error is WriteError else ""):
        save_checkpoint(path, trained_model(seed=1), make_meta(epoch=4))
    assert os.listdir(path.parent) == [path.name]  # no temp file left behind
    loaded, meta = load_checkpoint(path)
    x = torch.rand(2, 1, 28, 28)
    assert meta["epoch"] == 3 and torch.equal(loaded(x), old_model(x))


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_checkpoint_gets_the_umask_mode_not_0600(saved) -> None:
    path, _ = saved
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_overwrite_replaces_the_checkpoint(saved) -> None:
    path, _ = saved
    new_model = trained_model(seed=1)
    save_checkpoint(path, new_model, make_meta(epoch=4))
    loaded, meta = load_checkpoint(path)
    x = torch.rand(2, 1, 28, 28)
    assert meta["epoch"] == 4 and torch.equal(loaded(x), new_model(x))
    assert os.listdir(path.parent) == [path.name]


# ----------------------------------------------------------------------------- params_hash


def test_params_hash_is_sha256_of_canonical_json() -> None:
    params = {"eps": 8 / 255, "model": "resnet18", "train": {"lr": 0.01, "epochs": [80, 20]}}
    canonical = ('{"eps":0.03137254901960784,"model":"resnet18",'
                 '"train":{"epochs":[80,20],"lr":0.01}}')
    assert params_hash(params) == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    reordered = json.loads(json.dumps(dict(reversed(list(params.items())))))
    assert params_hash(reordered) == params_hash(params)
    assert params_hash({**params, "eps": 7 / 255}) != params_hash(params)


def test_params_hash_accepts_dataclasses_and_paths() -> None:
    @dataclass
    class Train:
        lr: float
        out: Path

    assert params_hash(Train(0.01, Path("models"))) == params_hash({"lr": 0.01, "out": "models"})


def test_params_hash_rejects_nan() -> None:
    with pytest.raises(CheckpointError, match="NaN"):
        params_hash({"eps": float("nan")})
