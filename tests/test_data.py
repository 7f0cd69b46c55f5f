"""Data sources in their real on-disk formats, the prepared format, subsets and augmentation."""

from __future__ import annotations

import gzip
import hashlib
import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _dataset_writers import (
    CIFAR10_NAMES,
    write_cifar10_binary,
    write_fashion_mnist,
    write_idx_gz,
    write_svhn,
    write_tiny_imagenet,
)
from safetensors.torch import save_file

import part.data.prepared as prepared
import part.data.sources as sources
from part.data import DataError
from part.data.augment import DEFAULT_AUGMENTATION, augment_batch, default_augmentation
from part.data.prepared import load_prepared, prepare_dataset
from part.data.sources import SOURCES, find_source_root, load_source
from part.data.subset import balanced_subset
from part.errors import PartError

REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_hashes_match(source_files: dict[str, str], data_dir: Path) -> None:
    assert source_files, "no source file hashes recorded"
    for relative, digest in source_files.items():
        assert digest == sha256_of(data_dir / relative), relative


# ------------------------------------------------------------------------------------------
# Fashion-MNIST


def test_fashion_mnist_round_trips_idx_files(tmp_path):
    written = write_fashion_mnist(tmp_path, n_train=30, n_test=12)
    for split in ("train", "test"):
        raw = load_source("fashion-mnist", split, root=tmp_path, download=False)
        images, labels = written[split]
        assert raw.images.dtype == torch.uint8 and raw.images.is_contiguous()
        assert raw.images.shape == (len(images), 1, 28, 28)
        assert torch.equal(raw.images[:, 0], torch.from_numpy(images))
        assert raw.labels.dtype == torch.int64
        assert torch.equal(raw.labels, torch.from_numpy(labels.astype(np.int64)))
        assert raw.class_names[0] == "T-shirt/top" and raw.class_names[9] == "Ankle boot"
        assert len(raw.source_files) == 2
        assert_hashes_match(raw.source_files, tmp_path)


def test_fashion_mnist_reads_torchvision_layout_with_plain_files(tmp_path):
    raw_dir = tmp_path / "FashionMNIST" / "raw"
    written = write_fashion_mnist(raw_dir, n_train=5, n_test=5)
    for gz in raw_dir.glob("*.gz"):  # torchvision keeps the extracted files; read those too
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    raw = load_source("fashion-mnist", "test", root=tmp_path, download=False)
    assert torch.equal(raw.images[:, 0], torch.from_numpy(written["test"][0]))
    assert set(raw.source_files) == {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}


@pytest.mark.skipif(
    not REAL_FASHION_MNIST.is_dir(),
    reason=f"{REAL_FASHION_MNIST} is absent (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_has_published_counts():
    train = load_source("fashion-mnist", "train", download=False)
    test = load_source("fashion-mnist", "test", download=False)
    assert train.images.shape == (60_000, 1, 28, 28)
    assert test.images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6_000] * 10
    assert torch.bincount(test.labels).tolist() == [1_000] * 10
    assert 0 < train.images.float().mean() < 255
    assert_hashes_match(train.source_files, REAL_FASHION_MNIST)
    assert find_source_root("fashion-mnist") == REAL_FASHION_MNIST


def test_truncated_gzip_names_the_file(tmp_path):
    write_fashion_mnist(tmp_path, n_train=20, n_test=5)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:-200])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz") as caught:
        load_source("fashion-mnist", "train", root=tmp_path, download=False)
    assert "gzip" in str(caught.value)


def test_idx_payload_shorter_than_header_claims_names_file_and_sizes(tmp_path):
    write_fashion_mnist(tmp_path, n_train=4, n_test=5)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    header = bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big")
    labels.write_bytes(gzip.compress(header + bytes(4)))  # claims 5 labels, holds 4
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz.*12 bytes.*expected 13"):
        load_source("fashion-mnist", "train", root=tmp_path, download=False)


def test_idx_wrong_magic_and_count_mismatch_are_reported(tmp_path):
    write_fashion_mnist(tmp_path, n_train=4, n_test=5)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    images.write_bytes((tmp_path / "train-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz.*magic number"):
        load_source("fashion-mnist", "train", root=tmp_path, download=False)
    write_idx_gz(images, np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(DataError, match="4 labels but train-images-idx3-ubyte.gz holds 3 images"):
        load_source("fashion-mnist", "train", root=tmp_path, download=False)


# ------------------------------------------------------------------------------------------
# CIFAR-10, SVHN, TinyImageNet


def test_cifar10_binary_round_trips_exactly(tmp_path):
    written = write_cifar10_binary(tmp_path, per_batch=7)
    for split, expected_n in (("train", 35), ("test", 7)):
        raw = load_source("cifar10", split, root=tmp_path, download=False)
        images, labels = written[split]
        assert raw.images.shape == (expected_n, 3, 32, 32)
        assert torch.equal(raw.images, torch.from_numpy(images))
        assert torch.equal(raw.labels, torch.from_numpy(labels.astype(np.int64)))
        assert raw.class_names == CIFAR10_NAMES
        assert_hashes_match(raw.source_files, tmp_path / "cifar-10-batches-bin")
    assert set(raw.source_files) == {"test_batch.bin", "batches.meta.txt"}


def test_truncated_cifar_batch_names_the_file(tmp_path):
    write_cifar10_binary(tmp_path, per_batch=3)
    batch = tmp_path / "cifar-10-batches-bin" / "data_batch_5.bin"
    batch.write_bytes(batch.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"data_batch_5\.bin.*3073-byte records"):
        load_source("cifar10", "train", root=tmp_path, download=False)


def test_svhn_mat_round_trips_and_maps_label_10_to_0(tmp_path):
    written = write_svhn(tmp_path, n_train=23, n_test=11)
    for split in ("train", "test"):
        raw = load_source("svhn", split, root=tmp_path, download=False)
        images, digits = written[split]
        assert raw.images.shape == (len(images), 3, 32, 32) and raw.images.is_contiguous()
        assert torch.equal(raw.images, torch.from_numpy(images))
        assert torch.equal(raw.labels, torch.from_numpy(digits.astype(np.int64)))
        assert raw.class_names == [str(d) for d in range(10)]
        assert_hashes_match(raw.source_files, tmp_path)
    assert (raw.labels == 0).any()


def test_corrupt_svhn_file_names_the_file(tmp_path):
    write_svhn(tmp_path, n_train=3, n_test=3)
    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file, but then garbage" * 4)
    with pytest.raises(DataError, match=r"test_32x32\.mat"):
        load_source("svhn", "test", root=tmp_path, download=False)


def test_tiny_imagenet_tree_decodes_to_rgb_64(tmp_path):
    wnids = ["n02000002", "n01000001", "n03000003"]
    written = write_tiny_imagenet(tmp_path, wnids, per_class=3, val_per_class=2)
    data_dir = tmp_path / "tiny-imagenet-200"
    sorted_wnids = sorted(wnids)
    for split in ("train", "test"):
        raw = load_source("tinyimagenet", split, root=tmp_path, download=False)
        colours, image_wnids = written[split]
        assert raw.images.shape == (len(colours), 3, 64, 64) and raw.images.dtype == torch.uint8
        assert raw.labels.tolist() == [sorted_wnids.index(w) for w in image_wnids]
        assert raw.class_names == [f"name of {w}, synonym" for w in sorted_wnids]
        # JPEG is lossy; flat colours survive within a few levels.
        error = (raw.images.float() - torch.from_numpy(colours).float()[:, :, None, None]).abs()
        assert error.max() <= 6, error.amax(dim=(1, 2, 3))
        assert_hashes_match(raw.source_files, data_dir)
        assert {"wnids.txt", "words.txt"} <= set(raw.source_files)
    train = load_source("tinyimagenet", "train", root=tmp_path, download=False)
    assert len(train.source_files) == 2 + 9  # class files + every JPEG
    assert torch.equal(train.images[0, 0], train.images[0, 1])  # the greyscale one, as RGB


def test_unreadable_jpeg_names_the_file(tmp_path):
    write_tiny_imagenet(tmp_path, ["n01000001"], per_class=2, val_per_class=1)
    broken = tmp_path / "tiny-imagenet-200" / "train" / "n01000001" / "images" / "n01000001_1.JPEG"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match="n01000001_1.JPEG"):
        load_source("tinyimagenet", "train", root=tmp_path, download=False)


# ------------------------------------------------------------------------------------------
# Locating, missing data, downloads

EXPECTED_FILES = {
    "fashion-mnist": ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"],
    "cifar10": ["data_batch_1.bin", "data_batch_5.bin", "batches.meta.txt",
                "cifar-10-binary.tar.gz"],
    "svhn": ["train_32x32.mat"],
    "tinyimagenet": ["wnids.txt", "words.txt", "train/<wnid>/images/*.JPEG",
                     "tiny-imagenet-200.zip"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED_FILES))
def test_missing_data_without_download_names_dir_files_and_fix(tmp_path, name):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as caught:
        load_source(name, "train", root=root, download=False)
    message = str(caught.value)
    assert str(root) in message and "download=False" in message and "data.root" in message
    for expected in EXPECTED_FILES[name]:
        assert expected in message, expected
    assert isinstance(caught.value, PartError)
    assert not root.exists()


def test_missing_data_default_locations_are_all_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "debian" / "fashion-mnist")
    with pytest.raises(DataError) as caught:
        load_source("fashion-mnist", "test", download=False)
    message = str(caught.value)
    assert str(tmp_path / "debian" / "fashion-mnist") in message
    assert "data/raw/fashion-mnist" in message and "t10k-images-idx3-ubyte.gz" in message
    assert find_source_root("fashion-mnist") is None


def test_failed_download_gives_one_message_and_leaves_nothing(tmp_path, monkeypatch):
    def no_network(url, directory, *args):
        (Path(directory) / "train_32x32.mat").write_bytes(b"half a download")
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(sources, "_download_file", no_network)
    root = tmp_path / "svhn"
    with pytest.raises(DataError) as caught:
        load_source("svhn", "train", root=root, download=True)
    message = str(caught.value)
    assert "download" in message and "name resolution" in message
    assert "train_32x32.mat" in message and str(root) in message
    assert not root.exists()  # neither the half file nor the directory made for it remain


def test_download_lands_in_root_and_is_then_found(tmp_path, monkeypatch):
    def fake_archive(url, directory, md5):
        assert url.endswith("cifar-10-binary.tar.gz") and md5 == "c32a1d4ab5d03f1284b67883e8d87530"
        write_cifar10_binary(Path(directory), per_batch=2)

    monkeypatch.setattr(sources, "_download_archive", fake_archive)
    root = tmp_path / "cifar"
    raw = load_source("cifar10", "test", root=root, download=True)
    assert raw.images.shape == (2, 3, 32, 32)
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-bin"]
    assert find_source_root("cifar10", root=root) == root / "cifar-10-batches-bin"


def test_default_raw_directory_is_searched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    written = write_svhn(Path("data/raw/svhn"), n_train=2, n_test=3)
    raw = load_source("svhn", "test", download=False)
    assert torch.equal(raw.images, torch.from_numpy(written["test"][0]))
    assert find_source_root("svhn") == Path("data/raw/svhn")
    assert find_source_root("synthetic") is None


def test_unknown_source_and_split_are_rejected():
    with pytest.raises(DataError, match="choose one of fashion-mnist, cifar10"):
        load_source("mnist", "train")
    with pytest.raises(DataError, match="unknown split 'val'"):
        load_source("synthetic", "val")


# ------------------------------------------------------------------------------------------
# Synthetic


def test_synthetic_is_deterministic_balanced_and_learnable():
    train = load_source("synthetic", "train")
    again = load_source("synthetic", "train")
    test = load_source("synthetic", "test")
    assert torch.equal(train.images, again.images) and torch.equal(train.labels, again.labels)
    assert train.images.shape == (2000, 3, 32, 32) and test.images.shape == (500, 3, 32, 32)
    assert torch.bincount(train.labels).tolist() == [200] * 10
    assert torch.bincount(test.labels).tolist() == [50] * 10
    assert train.source_files == {} and len(train.class_names) == 10
    # The class signal is strong: even a nearest-centroid classifier on raw pixels gets it.
    features = train.images.flatten(1).float()
    centroids = torch.stack([features[train.labels == k].mean(0) for k in range(10)])
    predicted = torch.cdist(test.images.flatten(1).float(), centroids).argmin(1)
    assert (predicted == test.labels).float().mean() > 0.9


# ------------------------------------------------------------------------------------------
# balanced_subset


def test_balanced_subset_counts_sorted_and_seeded():
    sizes = {3: 50, 7: 30, 9: 20, 11: 40}
    labels = torch.cat([torch.full((n,), k) for k, n in sizes.items()])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    chosen = balanced_subset(labels, 22, seed=1)
    assert chosen.dtype == torch.int64 and len(chosen) == 22
    assert torch.equal(chosen, chosen.sort().values) and len(chosen.unique()) == 22
    counts = {k: int((labels[chosen] == k).sum()) for k in (3, 7, 9, 11)}
    assert counts == {3: 6, 7: 6, 9: 5, 11: 5}  # the remainder goes to the smallest labels
    assert torch.equal(chosen, balanced_subset(labels, 22, seed=1))
    assert not torch.equal(chosen, balanced_subset(labels, 22, seed=2))
    assert balanced_subset(labels, 22, seed=2).shape == (22,)


def test_balanced_subset_rejects_impossible_sizes():
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 10)
    with pytest.raises(DataError, match="exceeds the 23 samples"):
        balanced_subset(labels, 24, seed=0)
    with pytest.raises(DataError, match="smaller than the 3 classes"):
        balanced_subset(labels, 2, seed=0)
    with pytest.raises(DataError, match="class 1 has only 3 samples"):
        balanced_subset(labels, 15, seed=0)
    assert balanced_subset(labels, 9, seed=0).numel() == 9


# ------------------------------------------------------------------------------------------
# prepare_dataset and load_prepared


def test_prepare_writes_both_splits_with_metadata(tmp_path):
    out = tmp_path / "prepared"
    summary = prepare_dataset("synthetic", out, train_subset=100, test_subset=50, seed=3)
    assert sorted(p.name for p in out.iterdir()) == ["test.safetensors", "train.safetensors",
                                                     "val.safetensors"]
    raw = load_source("synthetic", "train")
    index = balanced_subset(raw.labels, 100, seed=3)
    train = load_prepared(out / "train.safetensors")
    assert torch.equal(train.images, raw.images[index])
    assert torch.equal(train.labels, raw.labels[index])
    meta = train.meta
    assert meta["dataset"] == "synthetic" and meta["split"] == "train"
    assert meta["class_names"] == raw.class_names and meta["num_classes"] == 10
    assert (meta["in_channels"], meta["image_size"], meta["n"]) == (3, 32, 100)
    assert meta["subset"] == {"n": 100, "seed": 3, "of": len(raw.labels)}
    assert meta["source_sha256"] == {} and meta["part_version"] == prepared.__version__
    test = load_prepared(out / "test.safetensors")
    # the size of the whole test split it was drawn from, which an export's footnote cites
    assert len(test) == 50
    assert prepared.full_split_size(test.meta) == len(load_source("synthetic", "test").labels)
    assert summary["train"]["class_counts"] == [10] * 10
    assert summary["test"]["shape"] == [50, 3, 32, 32] and summary["num_classes"] == 10


def test_prepare_records_source_hashes(tmp_path):
    written = write_fashion_mnist(tmp_path / "raw", n_train=12, n_test=6)
    prepare_dataset("fashion-mnist", tmp_path / "out", root=tmp_path / "raw", download=False)
    test = load_prepared(tmp_path / "out" / "test.safetensors")
    assert test.meta["source_sha256"] == {
        name: sha256_of(tmp_path / "raw" / name)
        for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
    assert test.meta["subset"] is None
    assert torch.equal(test.images[:, 0], torch.from_numpy(written["test"][0]))


def test_prepare_summarises_hashes_of_many_files_per_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(prepared, "MAX_HASHES_IN_METADATA", 3)
    write_tiny_imagenet(tmp_path / "raw", ["n01000001", "n02000002"], per_class=2, val_per_class=1)
    prepare_dataset("tinyimagenet", tmp_path / "out", root=tmp_path / "raw", download=False)
    hashes = load_prepared(tmp_path / "out" / "train.safetensors").meta["source_sha256"]
    data_dir = tmp_path / "raw" / "tiny-imagenet-200"
    manifest = "".join(f"{sha256_of(data_dir / p)}  {p}\n"
                       for p in ("train/n01000001/images/n01000001_0.JPEG",
                                 "train/n01000001/images/n01000001_1.JPEG"))
    assert hashes["train/n01000001/images/* (2 files)"] == hashlib.sha256(
        manifest.encode()).hexdigest()
    assert len(hashes) == 3  # ./ (wnids, words) and one per class directory


def test_the_validation_split_is_held_out_balanced_and_never_trained_on(tmp_path):
    out = tmp_path / "prepared"
    prepare_dataset("synthetic", out, train_subset=100, val_subset=40, test_subset=20, seed=5)
    train, val = load_prepared(out / "train.safetensors"), load_prepared(out / "val.safetensors")
    assert (len(train), len(val)) == (100, 40)
    assert torch.bincount(val.labels, minlength=10).tolist() == [4] * 10
    # no validation image is among the training images (the synthetic images are distinct)
    flat = lambda split: {bytes(image.flatten().tolist()) for image in split.images}  # noqa: E731
    assert len(flat(val)) == 40 and not flat(val) & flat(train)
    again = tmp_path / "again"
    prepare_dataset("synthetic", again, train_subset=100, val_subset=40, test_subset=20, seed=5)
    assert (again / "val.safetensors").read_bytes() == (out / "val.safetensors").read_bytes()
    none = tmp_path / "none"
    prepare_dataset("synthetic", none, train_subset=100, val_subset=0, test_subset=20, seed=5)
    # without a validation split the monitor runs on the test subset: the val file holds it
    monitor = load_prepared(none / "val.safetensors")
    test = load_prepared(none / "test.safetensors")
    assert monitor.meta["split"] == "test" and torch.equal(monitor.images, test.images)
    assert torch.equal(monitor.labels, test.labels)


def test_failed_write_leaves_no_partial_file_and_keeps_old_ones(tmp_path, monkeypatch):
    out = tmp_path / "prepared"
    prepare_dataset("synthetic", out, train_subset=20, test_subset=10)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_save = prepared.write_safetensors_unguarded

    def disk_full_on_test(path, tensors, metadata):
        if not Path(path).name.startswith(".test.safetensors."):  # the test file's temporary
            return real_save(path, tensors, metadata)
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(prepared, "write_safetensors_unguarded", disk_full_on_test)
    with pytest.raises(DataError, match="cannot write .*test.safetensors.*No space left"):
        prepare_dataset("synthetic", out, train_subset=40, test_subset=20)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert len(load_prepared(out / "train.safetensors")) == 20


def test_failed_load_writes_nothing(tmp_path):
    write_fashion_mnist(tmp_path / "raw", n_train=5, n_test=5)
    (tmp_path / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        prepare_dataset("fashion-mnist", tmp_path / "out", root=tmp_path / "raw", download=False)
    assert not (tmp_path / "out").exists()


def test_subset_larger_than_split_names_the_param(tmp_path):
    with pytest.raises(DataError, match=r"data\.test_subset=501: .*exceeds the 500 samples"):
        prepare_dataset("synthetic", tmp_path / "out", train_subset=100, test_subset=501)
    assert not (tmp_path / "out").exists()


def test_load_prepared_rejects_missing_corrupt_and_foreign_files(tmp_path):
    missing = tmp_path / "train.safetensors"
    with pytest.raises(DataError, match=r"train\.safetensors not found.*dvc repro prepare"):
        load_prepared(missing)
    prepare_dataset("synthetic", tmp_path, train_subset=20, test_subset=10)
    whole = missing.read_bytes()
    missing.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"train\.safetensors.*dvc repro prepare"):
        load_prepared(missing)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(foreign))
    with pytest.raises(DataError, match=r"foreign\.safetensors is not a prepared data file"):
        load_prepared(foreign)
    inconsistent = tmp_path / "inconsistent.safetensors"
    test = load_prepared(tmp_path / "test.safetensors")
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in test.meta.items()}
    meta["n"] = "11"
    save_file({"images": test.images, "labels": test.labels}, str(inconsistent), metadata=meta)
    with pytest.raises(DataError, match="the metadata says uint8"):
        load_prepared(inconsistent)


@pytest.mark.parametrize("device", DEVICES)
def test_load_prepared_puts_tensors_on_device(tmp_path, device):
    prepare_dataset("synthetic", tmp_path, train_subset=20, test_subset=10)
    split = load_prepared(tmp_path / "test.safetensors", device=device)
    assert split.images.device.type == device and split.labels.device.type == device
    assert (split.num_classes, split.in_channels, split.image_size) == (10, 3, 32)


# ------------------------------------------------------------------------------------------
# Augmentation


def test_default_augmentation_follows_the_paper():
    assert default_augmentation("cifar10") == {"crop_padding": 4, "flip": True}
    assert default_augmentation("tinyimagenet") == {"crop_padding": 4, "flip": True}
    assert default_augmentation("svhn") == {"crop_padding": 0, "flip": False}
    assert all(set(default_augmentation(s)) == {"crop_padding", "flip"} for s in SOURCES)
    assert set(DEFAULT_AUGMENTATION) == set(SOURCES)  # every data set says how it augments
    default_augmentation("cifar10")["flip"] = False
    assert default_augmentation("cifar10")["flip"] is True
    with pytest.raises(DataError, match="unknown data set"):
        default_augmentation("imagenet")


def reference_crop_flip(x: torch.Tensor, shift_y: int, shift_x: int, flipped: bool,
                        padding: int) -> torch.Tensor:
    """One sample the torchvision way: zero-pad, cut the window, then maybe flip."""
    height, width = x.shape[-2:]
    padded = F.pad(x.float(), (padding,) * 4)
    window = padded[:, padding + shift_y: padding + shift_y + height,
                    padding + shift_x: padding + shift_x + width]
    return (window.flip(-1) if flipped else window).to(x.dtype)


def recover_transform(coded: torch.Tensor, width: int) -> tuple[int, int, bool]:
    """Shift and flip of an augmented position-coded plane (value = 1 + row * width + col)."""
    row, col = coded.shape[0] // 2, coded.shape[1] // 2
    source = int(coded[row, col]) - 1
    flipped = int(coded[row, col + 1]) - int(coded[row, col]) == -1
    source_row, source_col = divmod(source, width)
    shift_x = source_col - (width - 1 - col if flipped else col)
    return source_row - row, shift_x, flipped


@pytest.mark.parametrize("device", DEVICES)
def test_augment_matches_pad_crop_flip_per_sample_for_every_aligned_tensor(device):
    batch, height, width, padding = 64, 9, 11, 3
    positions = 1 + torch.arange(height * width, dtype=torch.float32).view(height, width)
    coded = positions.expand(batch, 3, height, width).clone().to(device)
    noise = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(0))
    images = (coded + noise.to(device)).contiguous()
    bool_mask = (noise > 0.5).to(device)
    float_mask = noise[:, :1].to(device)
    generator = torch.Generator(device=device).manual_seed(123)
    out_images, out_bool, out_float = augment_batch(
        images, bool_mask, float_mask, crop_padding=padding, flip=True, generator=generator)
    assert out_bool.dtype == torch.bool and out_float.shape == (batch, 1, height, width)
    transforms = []
    for b in range(batch):  # a per-sample reference, in the test only
        shift_y, shift_x, flipped = recover_transform(out_images[b, 0].floor().cpu(), width)
        transforms.append((shift_y, shift_x, flipped))
        for original, augmented in ((images, out_images), (bool_mask, out_bool),
                                    (float_mask, out_float)):
            expected = reference_crop_flip(original[b].cpu(), shift_y, shift_x, flipped, padding)
            assert torch.equal(augmented[b].cpu(), expected), (b, shift_y, shift_x, flipped)
    shifts = {(y, x) for y, x, _ in transforms}
    assert {y for y, _ in shifts} == set(range(-padding, padding + 1))
    assert {x for _, x in shifts} == set(range(-padding, padding + 1))
    assert {f for *_, f in transforms} == {False, True} and len(set(transforms)) > 20
    # Positions are coded >= 1, so exact zeros are padding, and padding is all that is zero.
    outside = torch.tensor([(abs(y) * width + abs(x) * height - abs(x * y)) * 3
                            for y, x, _ in transforms])
    assert torch.equal((out_images == 0).sum(dim=(1, 2, 3)).cpu(), outside)


@pytest.mark.parametrize("device", DEVICES)
def test_mask_derived_from_image_still_matches_after_augmentation(device):
    generator = torch.Generator(device=device).manual_seed(7)
    images = torch.rand(32, 3, 32, 32, generator=generator, device=device)
    per_channel = images > 0.6
    per_pixel = (images.mean(1, keepdim=True) > 0.5).float()
    out, out_channel, out_pixel = augment_batch(images, per_channel, per_pixel, crop_padding=4,
                                                flip=True, generator=generator)
    assert not torch.equal(out, images)
    assert torch.equal(out_channel, out > 0.6)  # padded zeros are below the threshold in both
    assert torch.equal(out_pixel, (out.mean(1, keepdim=True) > 0.5).float())


def test_augment_identity_flip_only_and_determinism():
    images = torch.rand(16, 3, 8, 8)
    mask = images > 0.5
    same_images, same_mask = augment_batch(images, mask, crop_padding=0, flip=False)
    assert torch.equal(same_images, images) and torch.equal(same_mask, mask)
    (flipped,) = augment_batch(images, crop_padding=0, flip=True,
                               generator=torch.Generator().manual_seed(0))
    is_same = (flipped == images).flatten(1).all(1)
    is_mirrored = (flipped == images.flip(-1)).flatten(1).all(1)
    assert bool((is_same ^ is_mirrored).all()) and is_same.any() and is_mirrored.any()

    def run(seed: int) -> tuple[torch.Tensor, ...]:
        return augment_batch(images, mask, crop_padding=2, flip=True,
                             generator=torch.Generator().manual_seed(seed))

    first, again, other = run(5), run(5), run(6)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])


def test_augment_keeps_dtype_of_uint8_images():
    images = torch.randint(1, 256, (8, 1, 28, 28), dtype=torch.uint8)
    (out,) = augment_batch(images, crop_padding=2, flip=True,
                           generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == images.shape


def test_augment_rejects_misaligned_inputs():
    images = torch.rand(4, 3, 8, 8)
    with pytest.raises(DataError, match=r"aligned tensor 0 has shape \(4, 1, 8, 7\)"):
        augment_batch(images, torch.zeros(4, 1, 8, 7), crop_padding=2, flip=True)
    with pytest.raises(DataError, match="aligned tensor 1"):
        augment_batch(images, torch.zeros(4, 1, 8, 8), torch.zeros(3, 3, 8, 8),
                      crop_padding=2, flip=True)
    with pytest.raises(DataError, match="crop_padding must be an int >= 0"):
        augment_batch(images, crop_padding=-1, flip=True)
    with pytest.raises(DataError, match="flip must be True or False"):
        augment_batch(images, crop_padding=1, flip="yes")
