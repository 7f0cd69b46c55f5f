"""Reading source files: whole-file reads that record each file's sha256, and error messages
that name the file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from part.data import DataError
from part.io.hashing import sha256_hex


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}; check that it exists and is readable") from exc


def read_file(path: Path, source_files: dict[str, str], data_dir: Path) -> bytes:
    """Read a whole source file and record its sha256 under its path relative to `data_dir`."""
    data = read_bytes(path)
    source_files[path.relative_to(data_dir).as_posix()] = sha256_hex(data)
    return data


def data_error_for(path: Path, problem: str, fix: str) -> DataError:
    return DataError(f"{path}: {problem}; {fix}")


def check_label_range(path: Path, labels: np.ndarray, low: int, high: int) -> None:
    if labels.size and (labels.min() < low or labels.max() > high):
        raise data_error_for(
            path, f"labels range over [{labels.min()}, {labels.max()}], expected [{low}, {high}]",
            "the file is corrupt or from another data set: download it again")


def decode_rgb(path: Path, data: bytes, size: int | None, fix: str) -> np.ndarray:
    """An image file's bytes (any format and mode PIL reads) as RGB uint8 [H,W,3], resized to
    size x size (bilinear) where given and different; an unreadable file is a DataError naming
    it, with `fix`. (PIL, not torchvision.io: its decoders are deprecated since 0.29.)"""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB")
            if size is not None and rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise data_error_for(path, f"not a readable image ({exc})", fix) from exc
