"""The prepared format: train.safetensors and test.safetensors, uint8 images [N,C,H,W], int64
labels [N] and string metadata (data set, class names, the sha256 of every source file read, the
subset taken). `prepare_dataset` writes both files together; `load_prepared` validates one and
loads it onto a device."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from part import __version__
from part.data import SPLITS, DataError, RawSplit
from part.data.sources import check_source, load_source
from part.data.subset import balanced_subset
from part.io.atomic import WriteError, atomic_paths
from part.io.hashing import sha256_hex
from part.io.tensorfile import write_safetensors_unguarded

PREPARE_FIX = "run `dvc repro prepare` to (re)create it"
REQUIRED_METADATA = (
    "dataset", "split", "class_names", "num_classes", "in_channels", "image_size", "n",
    "source_sha256", "subset", "part_version",
)
# Above this many source files (TinyImageNet reads ~110k JPEGs) the metadata keeps one digest per
# directory instead of one per file, so the safetensors header stays small.
MAX_HASHES_IN_METADATA = 1000


@dataclass
class PreparedSplit:
    """A prepared split on a device, with its decoded metadata."""

    images: Tensor
    labels: Tensor
    meta: dict[str, Any]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def in_channels(self) -> int:
        return int(self.meta["in_channels"])

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])




def _summarise_hashes(source_files: dict[str, str]) -> dict[str, str]:
    """Per-file hashes, or above MAX_HASHES_IN_METADATA one digest per directory: the sha256 of
    the manifest lines '<sha256>  <relative path>\\n' of its files, sorted by path."""
    if len(source_files) <= MAX_HASHES_IN_METADATA:
        return dict(sorted(source_files.items()))
    manifests: dict[str, list[str]] = {}
    for path, digest in sorted(source_files.items()):
        directory = path.rpartition("/")[0] or "."
        manifests.setdefault(directory, []).append(f"{digest}  {path}\n")
    return {f"{d}/* ({len(lines)} files)": sha256_hex("".join(lines).encode())
            for d, lines in manifests.items()}


def _metadata(dataset: str, split: str, raw: RawSplit, subset: dict | None) -> dict[str, str]:
    _, channels, height, width = raw.images.shape
    if height != width:
        raise DataError(f"{dataset} {split} images are {height}x{width}; only square images are "
                        "supported")
    return {
        "dataset": dataset,
        "split": split,
        "class_names": json.dumps(raw.class_names),
        "num_classes": str(len(raw.class_names)),
        "in_channels": str(channels),
        "image_size": str(height),
        "n": str(raw.labels.numel()),
        "source_sha256": json.dumps(_summarise_hashes(raw.source_files)),
        "subset": json.dumps(subset),
        "part_version": __version__,
    }


def _take_subset(
    raw: RawSplit, split: str, n: int | None, seed: int
) -> tuple[RawSplit, dict | None]:
    if n is None:
        return raw, None
    try:
        index = balanced_subset(raw.labels, n, seed)
    except DataError as exc:
        raise DataError(f"data.{split}_subset={n!r}: {exc}") from exc
    subset = RawSplit(raw.images[index].contiguous(), raw.labels[index].contiguous(),
                      raw.class_names, raw.source_files)
    return subset, {"n": n, "seed": seed, "of": int(raw.labels.numel())}


def full_split_size(meta: Mapping[str, Any]) -> int | None:
    """How many examples the source split of a prepared file holds (a subset's `of`, else the
    file's own count), from its metadata as load_prepared reads it; None for a file prepared
    without that record."""
    subset = meta.get("subset")
    if subset is None:
        return int(meta["n"])
    return int(subset["of"]) if "of" in subset else None


def _hold_out(raw: RawSplit, n: int, seed: int) -> tuple[RawSplit, RawSplit, dict]:
    """(validation, rest): a seeded, class-balanced validation split of `n` examples taken out
    of the training split, and the examples left to train on."""
    held = torch.zeros(raw.labels.numel(), dtype=torch.bool)
    if n:
        try:
            held[balanced_subset(raw.labels, n, seed)] = True
        except DataError as exc:
            raise DataError(f"data.val_subset={n!r}: {exc}") from exc

    def part(index: Tensor) -> RawSplit:
        return RawSplit(raw.images[index].contiguous(), raw.labels[index].contiguous(),
                        raw.class_names, raw.source_files)

    return (part(held.nonzero().flatten()), part((~held).nonzero().flatten()),
            {"n": n, "seed": seed, "held_out_of": "train"})


def _split_summary(raw: RawSplit, path: Path, subset: dict | None) -> dict[str, Any]:
    counts = torch.bincount(raw.labels, minlength=len(raw.class_names))
    return {
        "path": str(path),
        "n": int(raw.labels.numel()),
        "shape": list(raw.images.shape),
        "class_counts": counts.tolist(),
        "subset": subset,
    }


def prepare_dataset(
    dataset: str,
    out_dir: str | Path,
    *,
    root: str | Path | None = None,
    train_subset: int | None = None,
    val_subset: int = 0,
    test_subset: int | None = None,
    seed: int = 0,
    download: bool = True,
    image_size: int | None = None,
) -> dict[str, Any]:
    """Read both splits, hold a validation split out of the training one, optionally take seeded
    class-balanced subsets, and write out_dir/train.safetensors, out_dir/val.safetensors and
    out_dir/test.safetensors.

    out_dir/val.safetensors holds what the training monitor runs on: the `val_subset`
    validation examples (class-balanced, seeded by `seed`), taken out of the training split
    first, or with `val_subset` 0 a copy of the test subset (its `split` metadata then reads
    `test`), so that training depends on the test file only where it reads it. `train_subset`
    is drawn from what the validation split leaves, so no validation example is ever trained
    on. The files are written under temporary names
    first and renamed into place only when all are complete, so a failure leaves the previous
    files (if any) untouched and no partial file. Returns a summary: per split its path, size,
    shape [N,C,H,W], per-class counts and subset.
    """
    check_source(dataset)
    out = Path(out_dir)
    subsets = {"train": train_subset, "test": test_subset}
    splits: dict[str, tuple[RawSplit, dict | None]] = {}
    for split in SPLITS:
        raw = load_source(dataset, split, root=root, download=download, image_size=image_size)
        if split == "train":
            validation, raw, held_out = _hold_out(raw, val_subset, seed)
            splits["val"] = (validation, held_out)
        splits[split] = _take_subset(raw, split, subsets[split], seed)
    if not val_subset:  # the monitor runs on the test subset: the val file holds it
        splits["val"] = (splits["test"][0], {**(splits["test"][1] or {}), "copy_of": "test"})
    splits = {name: splits[name] for name in ("train", "val", "test")}
    labels = {"train": "train", "val": "val" if val_subset else "test", "test": "test"}
    class_names = splits["train"][0].class_names
    if splits["test"][0].class_names != class_names:
        raise DataError(f"{dataset}: the train and test splits list different classes "
                        f"({class_names} and {splits['test'][0].class_names}); give both "
                        "splits the same classes")
    shapes = [tuple(splits[name][0].images.shape[1:]) for name in ("train", "test")]
    if shapes[0] != shapes[1]:
        raise DataError(f"{dataset}: train images are {shapes[0]} (channels, height, width), "
                        f"test images {shapes[1]}; give both splits one format")
    finals = [out / f"{split}.safetensors" for split in splits]
    try:
        # The files replace the old ones together, or none does.
        with atomic_paths(finals) as temporaries:
            for temporary, final, (split, (raw, subset)) in zip(temporaries, finals,
                                                                 splits.items(), strict=True):
                try:
                    write_safetensors_unguarded(
                        temporary, {"images": raw.images, "labels": raw.labels},
                        _metadata(dataset, labels[split], raw, subset))
                except WriteError:  # already names the file and the fix
                    raise
                except OSError as exc:
                    raise DataError(f"cannot write {final}: {exc}; check free disk space and "
                                    "permissions") from exc
    except WriteError:  # already names the file and the fix
        raise
    except OSError as exc:
        raise DataError(f"cannot write the prepared files in {out}: {exc}; check free disk "
                        "space and permissions") from exc
    _, channels, size, _ = splits["train"][0].images.shape
    return {
        "dataset": dataset,
        "class_names": class_names,
        "num_classes": len(class_names),
        "in_channels": int(channels),
        "image_size": int(size),
        **{split: _split_summary(raw, out / f"{split}.safetensors", subset)
           for split, (raw, subset) in splits.items()},
    }


def _decode_metadata(path: Path, raw: dict[str, str]) -> dict[str, Any]:
    missing = [key for key in REQUIRED_METADATA if key not in raw]
    if missing:
        raise DataError(f"{path} is not a prepared data file (metadata lacks "
                        f"{', '.join(missing)}); {PREPARE_FIX}")
    meta: dict[str, Any] = dict(raw)
    try:
        for key in ("num_classes", "in_channels", "image_size", "n"):
            meta[key] = int(raw[key])
        for key in ("class_names", "source_sha256", "subset"):
            meta[key] = json.loads(raw[key])
    except ValueError as exc:
        raise DataError(f"{path} has malformed metadata ({exc}); {PREPARE_FIX}") from exc
    if not isinstance(meta["class_names"], list) or len(meta["class_names"]) != meta["num_classes"]:
        raise DataError(f"{path}: class_names does not list num_classes={meta['num_classes']} "
                        f"names; {PREPARE_FIX}")
    return meta


def _check_prepared_tensors(path: Path, images: Tensor, labels: Tensor, meta: dict) -> None:
    expected = (meta["n"], meta["in_channels"], meta["image_size"], meta["image_size"])
    if images.dtype != torch.uint8 or tuple(images.shape) != expected:
        raise DataError(f"{path}: images are {images.dtype} {tuple(images.shape)}, the metadata "
                        f"says uint8 {expected}; {PREPARE_FIX}")
    if labels.dtype != torch.int64 or tuple(labels.shape) != (meta["n"],):
        raise DataError(f"{path}: labels are {labels.dtype} {tuple(labels.shape)}, expected int64 "
                        f"({meta['n']},); {PREPARE_FIX}")
    if labels.numel() and not bool(((labels >= 0) & (labels < meta["num_classes"])).all()):
        raise DataError(f"{path}: labels fall outside [0, {meta['num_classes']}); {PREPARE_FIX}")


def load_prepared(path: str | Path, device: str | torch.device = "cpu") -> PreparedSplit:
    """Load and validate a prepared split onto `device`.

    A missing, unreadable, or foreign file raises DataError naming the file, the problem and the
    fix (`dvc repro prepare`).
    """
    from safetensors import safe_open

    path = Path(path)
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DataError(f"invalid device {device!r} for loading {path}: {exc}") from exc
    if not path.is_file():
        raise DataError(f"prepared data file {path} not found; {PREPARE_FIX}")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            names = set(handle.keys())
            if not {"images", "labels"} <= names:
                raise DataError(f"{path} is not a prepared data file (tensors {sorted(names)}, "
                                f"expected 'images' and 'labels'); {PREPARE_FIX}")
            raw_meta = handle.metadata() or {}
            images, labels = handle.get_tensor("images"), handle.get_tensor("labels")
    except DataError:
        raise
    except Exception as exc:  # safetensors raises its own error types on a damaged file
        raise DataError(
            f"{path} is not a readable safetensors file ({exc}); {PREPARE_FIX}") from exc
    meta = _decode_metadata(path, raw_meta)
    _check_prepared_tensors(path, images, labels, meta)
    return PreparedSplit(images=images, labels=labels, meta=meta)


