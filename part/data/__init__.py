"""Data: the published sources, the prepared-tensor format, subsets and training augmentation.

- `sources`: each data set's files, URLs and checksums as data; finding, downloading and reading
  them (`load_source`). The readers of the published formats are `formats` (Fashion-MNIST IDX,
  CIFAR-10 binary, SVHN .mat), `jpeg_tree` (TinyImageNet-200) and `synthetic` (no files);
  `reading` holds what they share: whole-file reads that record each sha256.
- `prepared`: `prepare_dataset` writes train/test.safetensors; `load_prepared` validates and loads.
- `own`: a researcher's own data, an image folder (`imagefolder`) or an .npz of arrays
  (`arrays`), read into the same canonical prepared files.
- `subset`: seeded, class-balanced subsets.
- `augment`: device-side random crop and flip, for the training stages only (prepare does not
  import it, so a change to it does not rerun prepare).

Nothing is ever unpickled: CIFAR-10 is read from its binary release, SVHN from MATLAB files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from part.errors import PartError

SPLITS = ("train", "test")


class DataError(PartError):
    """A data set is missing, malformed, or asked for with invalid arguments."""


@dataclass
class RawSplit:
    """One split as read from its source: uint8 images [N,C,H,W], int64 labels [N]."""

    images: Tensor
    labels: Tensor
    class_names: list[str]
    # path relative to the data directory -> sha256 of the file's bytes
    source_files: dict[str, str] = field(default_factory=dict)


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return split
