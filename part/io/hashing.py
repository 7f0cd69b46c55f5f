"""Every digest the package takes: of bytes, files, tensors, params and the package's own code.

A resume state may only continue the very computation that was interrupted; `code_digest` is its
key to the code, so a change to any module of the package (an attack, the data pipeline, the
training loop) makes the stage start over rather than finish the old code's run.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import torch

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # part/


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_sources(root: Path = PACKAGE_DIR) -> list[Path]:
    """The package's Python sources, in a fixed order; bytecode and caches are not sources."""
    return sorted(path for path in root.rglob("*.py") if "__pycache__" not in path.parts)


@cache
def code_digest() -> str:
    """sha256 over the relative path and bytes of every package source, and the torch version
    (another torch may compute another result from the same code)."""
    digest = hashlib.sha256(f"torch {torch.__version__}\n".encode())
    for path in package_sources():
        digest.update(f"{path.relative_to(PACKAGE_DIR).as_posix()}\n".encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def json_default(obj: Any) -> Any:
    """`json.dumps` default: dataclasses as dicts, paths as str, enums as values, sets sorted."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def json_sha256(obj: Any) -> str:
    """sha256 of a canonical JSON dump of `obj` (sorted keys, no spaces, ASCII): equal values give
    equal digests whatever their key order. Accepts mappings, lists, scalars, dataclasses, paths,
    enums and sets; raises TypeError or ValueError (NaN, inf) on anything else."""
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                           allow_nan=False, default=json_default)
    return sha256_hex(canonical.encode("ascii"))
