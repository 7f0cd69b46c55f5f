"""TinyImageNet-200's JPEG tree: class ids and names from wnids.txt / words.txt, training images
under train/<wnid>/images/, the labelled validation set (used as the test split, as papers do) from
val/val_annotations.txt. JPEGs are decoded with PIL on a thread pool."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from part.data import RawSplit
from part.data.reading import data_error_for, decode_rgb, read_bytes, read_file
from part.io.hashing import sha256_hex

TINYIMAGENET_DIR = "tiny-imagenet-200"
TINYIMAGENET_SIZE = 64
TINYIMAGENET_FIX = "unzip tiny-imagenet-200.zip again"


def tinyimagenet_files(split: str) -> list[str]:
    if split == "train":
        return ["wnids.txt", "words.txt", "train/<wnid>/images/*.JPEG"]
    return ["wnids.txt", "words.txt", "val/val_annotations.txt", "val/images/*.JPEG"]


def has_tinyimagenet(data_dir: Path, split: str) -> bool:
    marker = "train" if split == "train" else "val/val_annotations.txt"
    return all((data_dir / name).exists() for name in ("wnids.txt", "words.txt", marker))


def _read_tinyimagenet_classes(
    data_dir: Path, source_files: dict[str, str]
) -> tuple[list[str], list[str]]:
    """Sorted wnids (class index = position, as torchvision's ImageFolder on train/) and names."""
    wnids_path = data_dir / "wnids.txt"
    wnids_text = read_file(wnids_path, source_files, data_dir).decode("utf-8", errors="replace")
    wnids = sorted({line.strip() for line in wnids_text.splitlines() if line.strip()})
    if not wnids:
        raise data_error_for(wnids_path, "lists no class ids", TINYIMAGENET_FIX)
    words_path = data_dir / "words.txt"
    words: dict[str, str] = {}
    words_text = read_file(words_path, source_files, data_dir).decode("utf-8", errors="replace")
    for line in words_text.splitlines():
        wnid, _, name = line.partition("\t")
        words[wnid.strip()] = name.strip()
    return wnids, [words.get(wnid) or wnid for wnid in wnids]


def _tinyimagenet_train_files(data_dir: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    paths: list[Path] = []
    labels: list[int] = []
    for label, wnid in enumerate(wnids):
        image_dir = data_dir / "train" / wnid / "images"
        class_files = sorted(image_dir.glob("*.JPEG"))
        if not class_files:
            raise data_error_for(image_dir, "holds no .JPEG images", TINYIMAGENET_FIX)
        paths += class_files
        labels += [label] * len(class_files)
    return paths, labels


def _tinyimagenet_val_files(
    data_dir: Path, wnids: list[str], source_files: dict[str, str]
) -> tuple[list[Path], list[int]]:
    annotations = data_dir / "val" / "val_annotations.txt"
    text = read_file(annotations, source_files, data_dir).decode("utf-8", errors="replace")
    index = {wnid: i for i, wnid in enumerate(wnids)}
    paths: list[Path] = []
    labels: list[int] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1].strip() not in index:
            raise data_error_for(
                annotations, f"line {line_number} ({line[:80]!r}) is not '<file>\\t<wnid>...' "
                "with a wnid from wnids.txt", TINYIMAGENET_FIX)
        paths.append(data_dir / "val" / "images" / fields[0].strip())
        labels.append(index[fields[1].strip()])
    if not paths:
        raise data_error_for(annotations, "lists no images", TINYIMAGENET_FIX)
    return paths, labels


def _decode_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _decode_chunk(paths: Sequence[Path], size: int, out: np.ndarray) -> list[str]:
    """Decode `paths` into `out` [n,size,size,3] with PIL; returns their sha256 digests.

    (torchvision.io's decoder is faster but deprecated since torchvision 0.29.)
    """
    digests = []
    for i, path in enumerate(paths):
        blob = read_bytes(path)
        out[i] = decode_rgb(path, blob, size, TINYIMAGENET_FIX)
        digests.append(sha256_hex(blob))
    return digests


def _decode_jpegs(
    paths: Sequence[Path], data_dir: Path, size: int, source_files: dict[str, str]
) -> np.ndarray:
    """Decode to RGB uint8 [N,size,size,3], in chunks on a thread pool (decoders drop the GIL)."""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    chunk = 256
    with ThreadPoolExecutor(max_workers=_decode_workers()) as pool:
        futures = [pool.submit(_decode_chunk, paths[start:start + chunk], size,
                               out[start:start + chunk])
                   for start in range(0, len(paths), chunk)]
        digests = [digest for future in futures for digest in future.result()]
    for path, digest in zip(paths, digests, strict=True):
        source_files[path.relative_to(data_dir).as_posix()] = digest
    return out


def read_tinyimagenet(data_dir: Path, split: str) -> RawSplit:
    source_files: dict[str, str] = {}
    wnids, class_names = _read_tinyimagenet_classes(data_dir, source_files)
    if split == "train":
        paths, labels = _tinyimagenet_train_files(data_dir, wnids)
    else:
        paths, labels = _tinyimagenet_val_files(data_dir, wnids, source_files)
    pixels = _decode_jpegs(paths, data_dir, TINYIMAGENET_SIZE, source_files)
    return RawSplit(
        images=torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(),
        labels=torch.tensor(labels, dtype=torch.int64),
        class_names=class_names,
        source_files=source_files,
    )

