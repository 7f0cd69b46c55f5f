"""Write small data sets in each source's real on-disk format, for the loader tests."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"]


def write_idx_gz(path: Path, array: np.ndarray) -> None:
    """IDX: magic (0, 0, 0x08 = unsigned byte, ndim), big-endian int32 dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + np.ascontiguousarray(array, np.uint8).tobytes()))


def write_fashion_mnist(directory: Path, n_train: int, n_test: int, seed: int = 0) -> dict:
    """The four .gz files of the release; returns {split: (images [N,28,28], labels [N])}."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx_gz(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx_gz(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)
        written[split] = (images, labels)
    return written


def write_cifar10_binary(root: Path, per_batch: int, seed: int = 0) -> dict:
    """cifar-10-batches-bin/ under `root`: records of 1 label byte + 1024 R + 1024 G + 1024 B
    bytes (row-major planes). Returns {split: (images [N,3,32,32], labels [N])}."""
    rng = np.random.default_rng(seed)
    directory = root / "cifar-10-batches-bin"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n\n")
    written = {}
    batches = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
    for split, files in batches.items():
        images, labels = [], []
        for name in files:
            batch_images = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
            batch_labels = rng.integers(0, 10, per_batch, dtype=np.uint8)
            records = np.concatenate([batch_labels[:, None], batch_images.reshape(per_batch, -1)],
                                     axis=1)
            (directory / name).write_bytes(records.tobytes())
            images.append(batch_images)
            labels.append(batch_labels)
        written[split] = (np.concatenate(images), np.concatenate(labels))
    return written


def write_svhn(directory: Path, n_train: int, n_test: int, seed: int = 0) -> dict:
    """{train,test}_32x32.mat with torchvision's keys: 'X' uint8 [32,32,3,N] and 'y' [N,1] in
    1..10 (10 is the digit 0). Returns {split: (images [N,3,32,32], digit labels [N])}."""
    import scipy.io

    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        digits = np.arange(n) % 10
        stored = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)
        scipy.io.savemat(directory / f"{split}_32x32.mat",
                         {"X": images.transpose(2, 3, 1, 0), "y": stored})
        written[split] = (images, digits)
    return written


def write_tiny_imagenet(root: Path, wnids: list[str], per_class: int, val_per_class: int) -> dict:
    """tiny-imagenet-200/ under `root` with flat-colour JPEGs (so lossy coding barely moves them).

    wnids.txt lists the ids unsorted, words.txt has extra unrelated lines, one training image is
    greyscale and one validation image is 48x48 (to check RGB conversion and resizing). Returns
    {split: (colours [N,3] uint8, wnid per image)} in the loader's order.
    """
    from PIL import Image

    directory = root / "tiny-imagenet-200"
    directory.mkdir(parents=True)
    (directory / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")
    words = [f"{wnid}\tname of {wnid}, synonym" for wnid in wnids] + ["n99999999\tunused"]
    (directory / "words.txt").write_text("\n".join(words) + "\n")
    rng = np.random.default_rng(0)
    train_colours, train_wnids = [], []
    for wnid in sorted(wnids):
        image_dir = directory / "train" / wnid / "images"
        image_dir.mkdir(parents=True)
        (directory / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(per_class):
            colour = rng.integers(16, 240, 3, dtype=np.uint8)
            if wnid == sorted(wnids)[0] and i == 0:
                colour[:] = colour[0]
                Image.new("L", (64, 64), int(colour[0])).save(image_dir / f"{wnid}_{i}.JPEG")
            else:
                Image.new("RGB", (64, 64), tuple(int(c) for c in colour)).save(
                    image_dir / f"{wnid}_{i}.JPEG", quality=95)
            train_colours.append(colour)
            train_wnids.append(wnid)
    val_dir = directory / "val" / "images"
    val_dir.mkdir(parents=True)
    annotations, val_colours, val_wnids = [], [], []
    for i in range(val_per_class * len(wnids)):
        wnid = wnids[i % len(wnids)]
        colour = rng.integers(16, 240, 3, dtype=np.uint8)
        size = (48, 48) if i == 0 else (64, 64)
        Image.new("RGB", size, tuple(int(c) for c in colour)).save(val_dir / f"val_{i}.JPEG",
                                                                   quality=95)
        annotations.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
        val_colours.append(colour)
        val_wnids.append(wnid)
    (directory / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    return {"train": (np.stack(train_colours), train_wnids),
            "test": (np.stack(val_colours), val_wnids)}
