"""Readers of the published file formats: Fashion-MNIST's IDX files, CIFAR-10's binary release
and SVHN's MATLAB files. Each reader takes the directory that holds a split's files and returns a
`RawSplit` with the sha256 of every file it read."""

from __future__ import annotations

import gzip
import io
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from part.data import DataError, RawSplit
from part.data.reading import check_label_range, data_error_for, read_file

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_MNIST_STEMS = {  # split -> (images file, labels file), each <stem>.gz or plain <stem>
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
FASHION_MNIST_FIX = "the file is truncated or corrupt: delete it and download it again"


def idx_file(data_dir: Path, stem: str) -> Path | None:
    """The gzip file if present, else the plain one that torchvision extracts next to it."""
    for candidate in (data_dir / f"{stem}.gz", data_dir / stem):
        if candidate.is_file():
            return candidate
    return None


def _parse_idx(path: Path, data: bytes, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise data_error_for(
                path, f"not a complete gzip file ({exc})", FASHION_MNIST_FIX) from exc
    found_magic = int.from_bytes(data[:4], "big")
    if len(data) >= 4 and found_magic != magic:
        raise data_error_for(
            path, f"IDX magic number {found_magic:#010x}, expected {magic:#010x}",
            "it is not the expected Fashion-MNIST file; download it again")
    ndim = 1 + len(item_shape)
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise data_error_for(
            path, f"only {len(data)} bytes, shorter than the {header_size}-byte IDX header",
            FASHION_MNIST_FIX)
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if dims[1:] != item_shape:
        raise data_error_for(
            path, f"IDX dimensions {dims[1:]}, expected {item_shape}", "download it again")
    expected = header_size + math.prod(dims)
    if len(data) != expected:
        raise data_error_for(
            path, f"{len(data)} bytes after decompression, expected {expected} for {dims[0]} items",
            FASHION_MNIST_FIX)
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims)


def has_fashion_mnist(data_dir: Path, split: str) -> bool:
    return all(idx_file(data_dir, stem) is not None for stem in FASHION_MNIST_STEMS[split])


def read_fashion_mnist(data_dir: Path, split: str) -> RawSplit:
    images_stem, labels_stem = FASHION_MNIST_STEMS[split]
    source_files: dict[str, str] = {}
    images_path = idx_file(data_dir, images_stem)
    labels_path = idx_file(data_dir, labels_stem)
    assert images_path is not None and labels_path is not None  # checked by has_fashion_mnist
    images = _parse_idx(images_path, read_file(images_path, source_files, data_dir),
                        IDX_IMAGES_MAGIC, (28, 28))
    labels = _parse_idx(labels_path, read_file(labels_path, source_files, data_dir),
                        IDX_LABELS_MAGIC, ())
    if len(images) != len(labels):
        raise data_error_for(
            labels_path, f"{len(labels)} labels but {images_path.name} holds {len(images)} images",
            "the two files come from different releases: download both again")
    check_label_range(labels_path, labels, low=0, high=len(FASHION_MNIST_CLASSES) - 1)
    return RawSplit(
        images=torch.from_numpy(images.copy()).unsqueeze(1).contiguous(),
        labels=torch.from_numpy(labels.astype(np.int64)),
        class_names=list(FASHION_MNIST_CLASSES),
        source_files=source_files,
    )





# --------------------------------------------------------------------------------------------
# CIFAR-10 (binary version)

CIFAR10_DIR = "cifar-10-batches-bin"
CIFAR10_BATCHES = {
    "train": [f"data_batch_{i}.bin" for i in range(1, 6)],
    "test": ["test_batch.bin"],
}
CIFAR10_META = "batches.meta.txt"
CIFAR10_RECORD = 1 + 3 * 32 * 32
CIFAR10_FIX = "the file is truncated or corrupt: extract cifar-10-binary.tar.gz again"


def cifar10_files(split: str) -> list[str]:
    return [*CIFAR10_BATCHES[split], CIFAR10_META]


def read_cifar10(data_dir: Path, split: str) -> RawSplit:
    source_files: dict[str, str] = {}
    meta_path = data_dir / CIFAR10_META
    text = read_file(meta_path, source_files, data_dir).decode("utf-8", errors="replace")
    class_names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(class_names) != 10:
        raise data_error_for(
            meta_path, f"{len(class_names)} class names, expected 10 (one per line)", CIFAR10_FIX)
    images, labels = [], []
    for batch in CIFAR10_BATCHES[split]:
        path = data_dir / batch
        records = np.frombuffer(read_file(path, source_files, data_dir), dtype=np.uint8)
        if records.size == 0 or records.size % CIFAR10_RECORD:
            raise data_error_for(
                path, f"{records.size} bytes is not a whole number of {CIFAR10_RECORD}-byte "
                f"records (1 label byte + 3072 pixel bytes)", CIFAR10_FIX)
        records = records.reshape(-1, CIFAR10_RECORD)
        check_label_range(path, records[:, 0], low=0, high=9)
        labels.append(records[:, 0].astype(np.int64))
        images.append(records[:, 1:].reshape(-1, 3, 32, 32))
    return RawSplit(
        images=torch.from_numpy(np.concatenate(images)),
        labels=torch.from_numpy(np.concatenate(labels)),
        class_names=class_names,
        source_files=source_files,
    )


# --------------------------------------------------------------------------------------------
# SVHN (MATLAB .mat files)

SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}  # as torchvision names them
SVHN_FIX = "the file is truncated or corrupt: delete it and download it again"


def read_svhn(data_dir: Path, split: str) -> RawSplit:
    try:
        import scipy.io
    except ImportError as exc:  # scipy is a dependency; this guards a broken install
        raise DataError("reading SVHN .mat files needs scipy: `pip install scipy`") from exc
    source_files: dict[str, str] = {}
    path = data_dir / SVHN_FILES[split]
    data = read_file(path, source_files, data_dir)
    try:
        mat = scipy.io.loadmat(io.BytesIO(data), variable_names=["X", "y"])
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError... on a bad file
        raise data_error_for(path, f"not a readable MATLAB file ({exc})", SVHN_FIX) from exc
    pixels, targets = mat.get("X"), mat.get("y")
    if pixels is None or targets is None:
        raise data_error_for(path, "has no 'X' and 'y' variables", "it is not an SVHN file")
    if pixels.ndim != 4 or pixels.shape[:3] != (32, 32, 3) or pixels.dtype != np.uint8:
        raise data_error_for(
            path, f"'X' is {pixels.dtype} {pixels.shape}, expected uint8 (32, 32, 3, N)", SVHN_FIX)
    targets = np.asarray(targets).reshape(-1)
    if targets.shape[0] != pixels.shape[3]:
        raise data_error_for(
            path, f"{targets.shape[0]} labels for {pixels.shape[3]} images", SVHN_FIX)
    check_label_range(path, targets, low=1, high=10)
    labels = targets.astype(np.int64) % 10  # SVHN stores digit 0 as label 10
    return RawSplit(
        images=torch.from_numpy(np.ascontiguousarray(pixels.transpose(3, 2, 0, 1))),
        labels=torch.from_numpy(labels),
        class_names=[str(digit) for digit in range(10)],
        source_files=source_files,
    )
