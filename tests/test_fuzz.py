"""Seeded fuzzing of the two inputs a person hands this project: checkpoints and params.yaml.

Every mutated file is either read correctly or refused with one line that names the file (and,
for params, the key); from the CLI or a stage that is exit code 2, never a traceback, and no
output file is left behind. The mutations are drawn from fixed seeds, so a failure reproduces.
"""

from __future__ import annotations

import json
import random
import struct
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from part.cli import app
from part.data.prepared import prepare_dataset
from part.io.tensorfile import write_safetensors
from part.models import build_model
from part.models.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from part.params import ParamsError, load_params
from part.pipeline import PREPARE_PARAMS

ROOT = Path(__file__).resolve().parents[1]
N_CHECKPOINTS = 1000
N_PARAMS = 1000
runner = CliRunner()


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def _assert_one_clean_line(output: str, *fragments: str) -> None:
    assert "Traceback" not in output, output
    lines = _error_lines(output)
    assert len(lines) == 1 and lines[0].startswith("error:"), output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, output)


# --------------------------------------------------------------------------- checkpoints


def _split(blob: bytes) -> tuple[dict[str, Any], bytes]:
    (length,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + length]), blob[8 + length:]


def _join(header: dict[str, Any], data: bytes, length_delta: int = 0) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", max(len(text) + length_delta, 0)) + text + data


GARBAGE = ["", "null", "[]", "{}", "-1", "1e999", "NaN", "\"\"", "\"x\"", "true", "3.5", "{\"a\":",
           "\u00ff\u0000", "0", "999999999999999999999", "[1, 2]", "\"resnet18\"", "\"wrn34_10\"",
           "\"cnn_small\"", "\"fashion-mnist\""]
DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "I8", "U8", "BOOL", "X9", "", "F8_E4M3"]


def _mutate_header(rng: random.Random, blob: bytes) -> bytes:
    header, data = _split(blob)
    metadata = header["__metadata__"]
    tensors = [name for name in header if name != "__metadata__"]
    kind = rng.randrange(8)
    if kind == 0:
        metadata[rng.choice(sorted(metadata))] = rng.choice(GARBAGE)
    elif kind == 1:
        del metadata[rng.choice(sorted(metadata))]
    elif kind == 2:
        header[rng.choice(tensors)]["dtype"] = rng.choice(DTYPES)
    elif kind == 3:
        entry = header[rng.choice(tensors)]
        entry["shape"] = [rng.randrange(0, 70) for _ in range(rng.randrange(0, 5))]
    elif kind == 4:
        entry = header[rng.choice(tensors)]
        begin, end = entry["data_offsets"]
        entry["data_offsets"] = [begin + rng.randrange(-8, 9), end + rng.randrange(-8, 9)]
    elif kind == 5:
        return _join(header, data, length_delta=rng.choice([-9, -1, 1, 7, 1 << 20, 1 << 40]))
    elif kind == 6:
        header["__metadata__"] = rng.choice([None, [], "x", {"format": 1}])
    else:
        header[rng.choice(tensors)] = rng.choice([None, [], {}, {"dtype": "F32"}])
    return _join(header, data)


def _retyped_with_a_valid_digest(rng: random.Random, path: Path, out: Path) -> None:
    """A well-formed checkpoint whose tensors no longer fit its model: wrong dtype or shape."""
    from safetensors import safe_open

    from part.io.hashing import tensors_digest
    from part.models.checkpoint import DIGEST_KEY

    with safe_open(path, framework="pt") as reader:
        metadata = dict(reader.metadata())
        tensors = {name: reader.get_tensor(name) for name in reader.keys()}
    # the model's tensors: `extra.*` are opaque to the loader, checked by whoever reads them
    name = rng.choice(sorted(name for name in tensors if name.startswith("model.")))
    tensor = tensors[name]
    if rng.random() < 0.5:
        tensors[name] = tensor.to(rng.choice([torch.float64, torch.int64, torch.uint8,
                                              torch.bool, torch.float16]))
    else:
        tensors[name] = torch.zeros([*tensor.shape[:-1], tensor.shape[-1] + 1]
                                    if tensor.dim() else [2])
    metadata[DIGEST_KEY] = tensors_digest(tensors)
    write_safetensors(out, tensors, metadata)


def _mutated_checkpoint(rng: random.Random, good: Path, out: Path) -> str:
    blob = good.read_bytes()
    kind = rng.choice(["bit flips", "truncation", "header edit", "dtype or shape"])
    if kind == "bit flips":
        mutated = bytearray(blob)
        for _ in range(rng.randint(1, 16)):
            position = rng.randrange(len(mutated))
            mutated[position] ^= 1 << rng.randrange(8)
        out.write_bytes(bytes(mutated))
    elif kind == "truncation":
        out.write_bytes(blob[:rng.randrange(len(blob))])
    elif kind == "header edit":
        out.write_bytes(_mutate_header(rng, blob))
    else:
        _retyped_with_a_valid_digest(rng, good, out)
    return kind


@pytest.fixture(scope="module")
def checkpoint_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz-checkpoints")
    prepare_dataset("synthetic", root / "data", train_subset=20, test_subset=20, seed=0)
    torch.manual_seed(0)
    model = build_model("cnn_small", 10, 3)
    meta = {"model": "cnn_small", "num_classes": 10, "in_channels": 3, "image_size": 32,
            "dataset": "synthetic", "method": "part-at", "eps": 8 / 255, "eps_low": 7 / 255,
            "epoch": 3, "params_hash": "0123456789abcdef"}
    extra = {"momentum.0": torch.randn(4, 3)}
    good = save_checkpoint(root / "good.safetensors", model, meta, extra_tensors=extra)
    return {"root": root, "good": good, "data": root / "data" / "test.safetensors"}


def test_fuzzed_checkpoints_are_read_or_refused_with_one_line(checkpoint_files):
    root, good, data = (checkpoint_files[key] for key in ("root", "good", "data"))
    rng = random.Random(20261123)
    outcomes: Counter[str] = Counter()
    for index in range(N_CHECKPOINTS):
        path = root / f"mutant-{index}.safetensors"
        kind = _mutated_checkpoint(rng, good, path)
        try:
            read_metadata(path)
            load_checkpoint(path)
            refused = False
        except CheckpointError as error:
            message = str(error)
            assert str(path) in message and "\n" not in message, (kind, message)
            refused = True
        # any other exception fails the test with its traceback: that is the bug to report
        json_out = root / f"mutant-{index}.json"
        result = runner.invoke(app, ["evaluate", str(path), "--data", str(data),
                                     "--attacks", "natural", "--n", "4", "--device", "cpu",
                                     "--json", str(json_out)])
        if refused:
            assert result.exit_code == 2, (kind, result.output)
            _assert_one_clean_line(result.output, str(path))
            assert not json_out.exists()
        else:
            assert result.exit_code in (0, 2), (kind, result.output)
            if result.exit_code == 2:  # e.g. metadata edited to another data set: refused
                _assert_one_clean_line(result.output)
        outcomes[f"{kind}: {'refused' if refused else 'read'}"] += 1
        path.unlink()
    print(dict(sorted(outcomes.items())))
    assert sum(outcomes.values()) == N_CHECKPOINTS
    assert sum(count for key, count in outcomes.items() if key.endswith("refused")) > 950


# --------------------------------------------------------------------------- params.yaml

VALUES = [None, -1, 0, 1, 2.5, 1e9, -0.0, "", "abc", "8/255", "8/0", "0/0", "1/255", "nan", "inf",
          ".inf", [], [1], {}, {"a": 1}, True, False, "x" * 300, "2020-01-01", 10**30, "-8/255"]
STRAY = ":-[]{}\t\"'&*!%@`|>#,?\\\n"


def _keys(tree: dict, prefix: tuple = ()) -> list[tuple]:
    found = []
    for key, value in tree.items():
        found.append((*prefix, key))
        if isinstance(value, dict):
            found.extend(_keys(value, (*prefix, key)))
    return found


def _set(tree: dict, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def _delete(tree: dict, path: tuple) -> None:
    for key in path[:-1]:
        tree = tree[key]
    del tree[path[-1]]


def _mutated_params(rng: random.Random, base_text: str, base: dict
                    ) -> tuple[str, bytes, str | None]:
    """(kind of mutation, file content, the key a refusal must name or None)."""
    kind = rng.choice(["value", "value", "delete", "unknown key", "text", "text"])
    tree = json.loads(json.dumps(base))
    key = None
    if kind == "value":
        path = rng.choice(_keys(tree))
        _set(tree, path, rng.choice(VALUES))
        key = path[-1]
    elif kind == "delete":
        _delete(tree, rng.choice(_keys(tree)))
    elif kind == "unknown key":
        parent = rng.choice([(), *[(key,) for key in tree if isinstance(tree[key], dict)]])
        key = rng.choice(["epoch", "lr", "eps_lo", "extra", "Seed"])
        _set(tree, (*parent, key), 1)
    else:
        text = bytearray(base_text.encode())
        for _ in range(rng.randint(1, 6)):
            action, position = rng.randrange(4), rng.randrange(len(text))
            if action == 0:
                del text[position]
            elif action == 1:
                text[position:position] = rng.choice(STRAY).encode()
            elif action == 2:
                text[position:position] = bytes([rng.randrange(256)])
            else:
                text = text[:position]
                if not text:
                    break
        return kind, bytes(text), None
    return kind, yaml.safe_dump(tree, sort_keys=False).encode(), key


@pytest.fixture(scope="module")
def stages():
    """(prepare, budgets): prepare checks only the params it reads; budgets, like every later
    stage, checks them all."""
    sys.path.insert(0, str(ROOT))
    try:
        from stages.budgets import app as budgets
        from stages.prepare import app as prepare
    finally:
        sys.path.remove(str(ROOT))
    return prepare, budgets


def _refused(stage, path: Path, tmp_path: Path, kind: str, content: bytes) -> None:
    result = runner.invoke(stage, ["--params", str(path)])
    assert result.exit_code == 2, (kind, content, result.output)
    _assert_one_clean_line(result.output, str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_fuzzed_params_are_read_or_refused_with_one_line(tmp_path, monkeypatch, stages):
    base_text = (ROOT / "params.yaml").read_text()
    base = yaml.safe_load(base_text)
    monkeypatch.chdir(tmp_path)  # a stage that wrongly ran would write here
    rng = random.Random(11)
    outcomes: Counter[str] = Counter()
    path = tmp_path / "params.yaml"
    for _ in range(N_PARAMS):
        kind, content, key = _mutated_params(rng, base_text, base)
        path.write_bytes(content)
        try:
            load_params(path)
        except ParamsError as error:
            message = str(error)
            assert message.startswith(f"{path}: ") and "\n" not in message, (kind, message)
            assert key is None or key in message, (kind, key, message)
            prepare, budgets = stages
            _refused(budgets, path, tmp_path, kind, content)
            try:
                load_params(path, only=PREPARE_PARAMS)
            except ParamsError:
                _refused(prepare, path, tmp_path, kind, content)
            outcomes[f"{kind}: refused"] += 1
        else:
            outcomes[f"{kind}: read"] += 1
    print(dict(sorted(outcomes.items())))
    assert sum(outcomes.values()) == N_PARAMS
    assert sum(count for key, count in outcomes.items() if key.endswith("refused")) > 600
