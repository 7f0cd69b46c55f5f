"""Safetensors checkpoints that record how they were made, written atomically, read validated.

File layout (format ``part-checkpoint/1``):

- tensors ``model.<name>``: the model's ``state_dict`` (CPU, contiguous);
- tensors ``extra.<name>``: anything else a trainer needs to resume (optimizer buffers, RNG state);
- safetensors metadata: every key of the caller's ``meta`` JSON-encoded (``"8"``, ``"0.031..."``,
  ``"\\"cifar10\\""``, ``"null"``), plus two plain-string keys of our own: ``format`` and
  ``tensors_sha256`` (a digest of every tensor's name, dtype, shape and bytes).

Nothing is ever unpickled: tensors come back through ``safetensors`` only.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from part import __version__
from part.errors import PartError
from part.io.atomic import WriteError
from part.io.hashing import json_default, json_sha256, tensors_digest
from part.io.tensorfile import write_safetensors
from part.models.registry import ModelError, build_model

FORMAT = "part-checkpoint/1"
FORMAT_KEY = "format"
DIGEST_KEY = "tensors_sha256"
MODEL_PREFIX = "model."
EXTRA_PREFIX = "extra."

REQUIRED_META = (
    "model", "num_classes", "in_channels", "image_size", "dataset", "method",
    "eps", "eps_low", "epoch", "params_hash", "part_version",
)
_STR_KEYS = ("model", "dataset", "method", "params_hash", "part_version")
_COUNT_KEYS = {"num_classes": 1, "in_channels": 1, "image_size": 1, "epoch": 0}  # key -> minimum
_BUDGET_KEYS = ("eps", "eps_low")  # a number, or None where a method has no such budget

_REBUILD_HINT = "re-create it by re-running the stage that writes it (e.g. `dvc repro`)"

PathLike = str | os.PathLike


class CheckpointError(PartError):
    """A checkpoint that is missing, unreadable, foreign, inconsistent or not the one expected."""


def params_hash(obj: Any) -> str:
    """First 16 hex digits of `hashing.json_sha256(obj)`: equal params give equal hashes whatever
    the key order."""
    try:
        return json_sha256(obj)[:16]
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"cannot hash params: {err}; use only str keys and JSON values (no NaN/inf)"
        ) from err


# ----------------------------------------------------------------------------- metadata


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _validate_meta(meta: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check every required key and its type; return a copy with budgets as floats."""
    problems = [f"missing key {key!r}" for key in REQUIRED_META if key not in meta]
    typed = dict(meta)
    for key in _STR_KEYS:
        if key in meta and not isinstance(meta[key], str):
            problems.append(f"{key!r} must be a str, got {meta[key]!r}")
    for key, minimum in _COUNT_KEYS.items():
        value = meta.get(key, minimum)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            problems.append(f"{key!r} must be an int >= {minimum}, got {value!r}")
    for key in _BUDGET_KEYS:
        value = meta.get(key)
        if value is None:
            continue
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            problems.append(f"{key!r} must be a finite number >= 0 or None, got {value!r}")
        else:
            typed[key] = float(value)
    if problems:
        raise CheckpointError(
            f"{where}: invalid metadata: {'; '.join(problems)}; "
            f"required keys are {', '.join(REQUIRED_META)}"
        )
    return typed


def _encode_meta(meta: Mapping[str, Any], where: str) -> dict[str, str]:
    encoded = {}
    for key, value in meta.items():
        if not isinstance(key, str) or key in (FORMAT_KEY, DIGEST_KEY):
            raise CheckpointError(
                f"{where}: metadata key {key!r} is not allowed; use str keys other than "
                f"{FORMAT_KEY!r} and {DIGEST_KEY!r}"
            )
        try:
            encoded[key] = json.dumps(value, allow_nan=False, sort_keys=True,
                                      default=json_default)
        except (TypeError, ValueError) as err:
            raise CheckpointError(
                f"{where}: metadata {key!r}={value!r} is not JSON-encodable ({err}); "
                "use ints, floats, str, None, lists or dicts"
            ) from err
    return encoded


def _decode_meta(raw: Mapping[str, str], where: str) -> dict[str, Any]:
    decoded = {}
    for key, text in raw.items():
        if key in (FORMAT_KEY, DIGEST_KEY):
            continue
        try:
            decoded[key] = json.loads(text)
        except json.JSONDecodeError as err:
            raise CheckpointError(
                f"{where}: metadata {key!r} is not valid JSON ({text!r}); the file is corrupt, "
                f"{_REBUILD_HINT}"
            ) from err
    return _validate_meta(decoded, where)


# ----------------------------------------------------------------------------- saving


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile / DataParallel / DDP wrappers (their keys differ)."""
    while True:
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def _check_model_matches_meta(model: nn.Module, meta: Mapping[str, Any], where: str) -> None:
    # A mismatch here would produce a file that load_checkpoint cannot rebuild.
    for attribute, key in (("model_name", "model"), ("num_classes", "num_classes"),
                           ("in_channels", "in_channels")):
        if hasattr(model, attribute) and getattr(model, attribute) != meta[key]:
            raise CheckpointError(
                f"{where}: meta[{key!r}]={meta[key]!r} but the model has "
                f"{attribute}={getattr(model, attribute)!r}; pass the model's own values"
            )


def _prefixed_cpu_tensors(prefix: str, tensors: Mapping[str, Any], where: str,
                          ) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(
                f"{where}: {prefix}{name} is a {type(tensor).__name__}, not a tensor; "
                "store only tensors (put scalars in meta)"
            )
        out[prefix + name] = tensor.detach().to("cpu").contiguous()
    return out


def save_checkpoint(path: PathLike, model: nn.Module, meta: Mapping[str, Any],
                    extra_tensors: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Atomically write `model`'s state_dict, `extra_tensors` and `meta` to a safetensors file.

    `meta` must hold every key of REQUIRED_META (`part_version` defaults to this package's);
    further JSON-encodable keys are kept. Parent directories are created. Returns the path.
    """
    path = Path(path)
    where = f"cannot save checkpoint {path}"
    meta = _validate_meta({"part_version": __version__, **meta}, where)
    model = _unwrap(model)
    _check_model_matches_meta(model, meta, where)
    tensors = _prefixed_cpu_tensors(MODEL_PREFIX, model.state_dict(), where)
    tensors.update(_prefixed_cpu_tensors(EXTRA_PREFIX, extra_tensors or {}, where))
    metadata = _encode_meta(meta, where)
    metadata[FORMAT_KEY] = FORMAT
    metadata[DIGEST_KEY] = tensors_digest(tensors)
    try:
        write_safetensors(path, tensors, metadata)
    except WriteError:  # already names the file and the fix
        raise
    except OSError as err:
        raise CheckpointError(f"{where}: {err}; check free disk space and permissions") from err
    return path


# ----------------------------------------------------------------------------- loading


def _read_raw_metadata(path: Path) -> dict[str, str]:
    where = f"checkpoint {path}"
    if not path.exists():
        raise CheckpointError(
            f"{where} does not exist; check the path, or create it by running the stage that "
            "writes it (e.g. `dvc repro`)"
        )
    if not path.is_file():
        raise CheckpointError(f"{where} is not a file; pass the path of a .safetensors checkpoint")
    try:
        with safe_open(path, framework="pt", device="cpu") as reader:
            raw = reader.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(
            f"{where} is not a readable safetensors file (truncated or corrupt: {err}); "
            f"{_REBUILD_HINT}"
        ) from err
    fmt = raw.get(FORMAT_KEY)
    if fmt is None:
        raise CheckpointError(
            f"{where} is a safetensors file but not a part checkpoint (no "
            f"{FORMAT_KEY!r}={FORMAT!r} metadata); for plain weights give their architecture "
            "(part-cli evaluate ... --arch NAME), or write a checkpoint with "
            "part.models.checkpoint.save_checkpoint"
        )
    if fmt != FORMAT:
        raise CheckpointError(
            f"{where} has format {fmt!r}, this part reads {FORMAT!r}; use the part version "
            f"that wrote it or {_REBUILD_HINT}"
        )
    return raw


def _read_verified(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every tensor and the typed metadata, after checking the tensors against their digest."""
    where = f"checkpoint {path}"
    raw = _read_raw_metadata(path)
    meta = _decode_meta(raw, where)
    try:
        with safe_open(path, framework="pt", device="cpu") as reader:
            tensors = {name: reader.get_tensor(name) for name in reader.keys()}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{where}: cannot read tensors ({err}); {_REBUILD_HINT}") from err
    if raw.get(DIGEST_KEY) != tensors_digest(tensors):
        raise CheckpointError(
            f"{where}: tensor data does not match its {DIGEST_KEY} (the file is corrupt); "
            f"{_REBUILD_HINT}"
        )
    return tensors, meta


def _values_equal(expected: Any, found: Any) -> bool:
    if _is_number(expected) and _is_number(found):
        return math.isclose(expected, found, rel_tol=1e-9, abs_tol=1e-12)
    return expected == found


def _check_expected(path: Path, meta: Mapping[str, Any], expect: Mapping[str, Any]) -> None:
    problems = []
    for key, expected in expect.items():
        if key not in meta:
            problems.append(f"{key!r} expected {expected!r} but the metadata has no such key")
        elif not _values_equal(expected, meta[key]):
            problems.append(f"{key!r} expected {expected!r}, found {meta[key]!r}")
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not fit this run: {'; '.join(problems)}; use a checkpoint "
            "made with these settings, or change the settings to match it"
        )


def _build_from_meta(path: Path, meta: Mapping[str, Any]) -> nn.Module:
    # fork_rng: loading a checkpoint must not move the global RNG that training relies on.
    with torch.random.fork_rng(devices=[]):
        try:
            return build_model(meta["model"], meta["num_classes"], meta["in_channels"],
                               cam_layer=meta.get("cam_layer"))
        except ModelError as err:
            raise CheckpointError(f"checkpoint {path}: {err}") from err


def load_checkpoint(path: PathLike, device: str | torch.device = "cpu", *,
                    expect: Mapping[str, Any] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint names, load its weights strictly; (model in eval mode, meta).

    `expect` maps metadata keys to required values (e.g. ``{"in_channels": 1}``); any mismatch
    raises CheckpointError naming the file, key, expected and found values.
    """
    path = Path(path)
    tensors, meta = _read_verified(path)
    _check_expected(path, meta, expect or {})
    model = _build_from_meta(path, meta)
    state = {name[len(MODEL_PREFIX):]: tensor for name, tensor in tensors.items()
             if name.startswith(MODEL_PREFIX)}
    expected = model.state_dict()
    retyped = [f"{name} is {tensor.dtype}, the model's is {expected[name].dtype}"
               for name, tensor in sorted(state.items())
               if name in expected and tensor.dtype != expected[name].dtype]
    if retyped:  # load_state_dict would cast silently: int or bool weights are not weights
        raise CheckpointError(
            f"checkpoint {path}: tensors of the wrong dtype for {meta['model']!r} "
            f"({'; '.join(retyped[:3])}{'; ...' if len(retyped) > 3 else ''}); "
            f"{_REBUILD_HINT}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint {path}: its tensors do not fit {meta['model']!r} with "
            f"num_classes={meta['num_classes']}, in_channels={meta['in_channels']} ({err}); "
            f"the metadata and weights disagree, {_REBUILD_HINT}"
        ) from err
    return model.to(device).eval(), meta


def load_extra_tensors(path: PathLike) -> dict[str, torch.Tensor]:
    """The `extra_tensors` given to save_checkpoint (CPU), after the same validation as loading."""
    tensors, _ = _read_verified(Path(path))
    return {name[len(EXTRA_PREFIX):]: tensor for name, tensor in tensors.items()
            if name.startswith(EXTRA_PREFIX)}


def read_metadata(path: PathLike) -> dict[str, Any]:
    """The typed, validated metadata, without building the model or reading tensor data."""
    path = Path(path)
    return _decode_meta(_read_raw_metadata(path), f"checkpoint {path}")
