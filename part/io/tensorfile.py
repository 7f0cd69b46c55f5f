"""Canonical safetensors files: the same tensors and metadata always give the same bytes.

`safetensors.save_file` serialises its metadata from a hash map whose order changes from one
process to the next, so equal content got a new md5 on every run and DVC reran everything
downstream. This writer emits the documented format itself (an 8-byte little-endian header
length, a JSON header, the raw tensor bytes) with sorted JSON keys and a fixed tensor order, and
streams the tensor bytes to disk through the project's one atomic writer. Files are read back
with `safetensors.safe_open`, never unpickled.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import torch

from part.io.atomic import atomic_path

_DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}
_HEADER_ALIGNMENT = 8  # the tensor data starts 8-byte aligned, as safetensors' own writer does


def _ordered(tensors: Mapping[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    # Wider elements first keeps every tensor aligned to its element size; names break ties.
    return sorted(tensors.items(), key=lambda item: (-item[1].element_size(), item[0]))


def _header(tensors: list[tuple[str, torch.Tensor]], metadata: Mapping[str, str]) -> bytes:
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, tensor in tensors:
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": _DTYPE_NAMES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    return text + b" " * (-len(text) % _HEADER_ALIGNMENT)


def _check(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    for name, tensor in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"tensor name {name!r} is not allowed in a safetensors file")
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} is a {type(tensor).__name__}, not a tensor")
        if tensor.dtype not in _DTYPE_NAMES:
            raise TypeError(f"{name} has dtype {tensor.dtype}, which safetensors cannot store; "
                            f"use one of {', '.join(sorted(map(str, _DTYPE_NAMES)))}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"safetensors metadata must map str to str; got {key!r}: {value!r}")


def write_safetensors_unguarded(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                                metadata: Mapping[str, str] | None = None) -> None:
    """Write the file in place, for a caller that already holds a temporary path of
    `part.io.atomic` (several files that must appear together)."""
    metadata = metadata or {}
    _check(tensors, metadata)
    ordered = [(name, tensor.detach().to("cpu").contiguous()) for name, tensor in
               _ordered(tensors)]
    header = _header(ordered, metadata)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(header)))
        handle.write(header)
        for _, tensor in ordered:
            if tensor.numel():
                handle.write(tensor.reshape(-1).view(torch.uint8).numpy().data)


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                      metadata: Mapping[str, str] | None = None) -> Path:
    """Atomically write `tensors` (any device; stored as CPU bytes) and str->str `metadata`.

    Tensors that share storage are written as independent copies. Raises TypeError/ValueError for
    content safetensors cannot hold and OSError for the file system.
    """
    with atomic_path(path) as temp:
        write_safetensors_unguarded(temp, tensors, metadata)
    return Path(path)
