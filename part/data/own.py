"""A researcher's own data: an image folder, or arrays in an .npz file (`dataset: imagefolder` and
`dataset: arrays`, with `data.root` naming the folder or the file).

- imagefolder: torchvision's ImageFolder convention, `root/train/<class>/*` and
  `root/test/<class>/*`, class names sorted, PNG or JPEG; images of other sizes than
  `data.image_size` are resized to it (square), and without it all must share one size.
- arrays: `x_train`, `y_train`, `x_test`, `y_test` (and optionally `class_names`) in an .npz
  read without pickle; images uint8 NHWC or float NCHW in [0, 1].

Both give what every source gives (uint8 [N,C,H,W], int64 labels, class names, the sha256 of
every file read), so the prepared files are the same canonical files as for the published data
sets. Every bad input is one DataError naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from part.data import DataError, RawSplit
from part.data.reading import decode_rgb, read_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_KEYS = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}


def _class_dirs(root: Path, split: str) -> list[Path]:
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: no such folder; an image folder holds train/<class>/* and "
                        "test/<class>/* (set data.root to the folder that holds them)")
    classes = sorted(path for path in split_dir.iterdir() if path.is_dir())
    if not classes:
        raise DataError(f"{split_dir}: no class folders; put each class's images in "
                        f"{split_dir}/<class name>/")
    return classes


def _decode(path: Path, data: bytes, image_size: int | None) -> torch.Tensor:
    rgb = decode_rgb(path, data, image_size, "replace or remove the file")
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def _same_size(path: Path, image: torch.Tensor, first: tuple[Path, tuple[int, int]]) -> None:
    size = tuple(image.shape[1:])
    if size != first[1]:
        raise DataError(f"{path}: {size[0]}x{size[1]} pixels, but {first[0]} has "
                        f"{first[1][0]}x{first[1][1]}; set data.image_size to resize every "
                        "image to one square size")


def read_imagefolder(root: Path, split: str, image_size: int | None = None) -> RawSplit:
    """One split of an image folder: every image decoded as RGB, kept as one channel where every
    image of the split is grey (prepare then checks that both splits agree)."""
    classes = _class_dirs(root, split)
    images, labels, source_files = [], [], {}
    first = None
    for label, class_dir in enumerate(classes):
        files = sorted(path for path in class_dir.iterdir()
                       if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{class_dir}: no PNG or JPEG images; remove the empty class folder "
                            "or add its images")
        for path in files:
            image = _decode(path, read_file(path, source_files, root), image_size)
            first = first or (path, tuple(image.shape[1:]))
            _same_size(path, image, first)
            images.append(image)
            labels.append(label)
    stacked = torch.stack(images)
    if bool((stacked == stacked[:, :1]).all()):  # every image grey: R = G = B throughout
        stacked = stacked[:, :1].contiguous()
    return RawSplit(images=stacked, labels=torch.tensor(labels, dtype=torch.int64),
                    class_names=[path.name for path in classes], source_files=source_files)


def _as_uint8_nchw(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    if x.ndim != 4:
        raise DataError(f"{path}: {key} has shape {x.shape}; expected images, uint8 NHWC or "
                        "float NCHW")
    if x.dtype == np.uint8:
        if x.shape[3] not in (1, 3):
            raise DataError(f"{path}: {key} is uint8 of shape {x.shape}: uint8 images are read "
                            "as NHWC, with 1 or 3 channels last")
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if np.issubdtype(x.dtype, np.floating):
        if x.shape[1] not in (1, 3):
            raise DataError(f"{path}: {key} is {x.dtype} of shape {x.shape}: float images are "
                            "read as NCHW, with 1 or 3 channels second")
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise DataError(f"{path}: {key} holds floats outside [0, 1]; give pixels in [0, 1] "
                            "(or uint8 in [0, 255])")
        return np.rint(x * 255).astype(np.uint8)
    raise DataError(f"{path}: {key} is {x.dtype}; give uint8 NHWC or float NCHW images")


def _labels(path: Path, key: str, y: np.ndarray, n: int, num_classes: int | None) -> np.ndarray:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {key} is {y.dtype} of shape {y.shape}; give one whole-number "
                        "label per image")
    if y.shape[0] != n:
        raise DataError(f"{path}: {key} holds {y.shape[0]} labels for {n} images; give one "
                        "label per image")
    high = num_classes - 1 if num_classes is not None else None
    if y.size and (y.min() < 0 or (high is not None and y.max() > high)):
        raise DataError(f"{path}: {key} ranges over [{y.min()}, {y.max()}]; labels run from 0 "
                        f"to {high if high is not None else 'the number of classes - 1'}")
    return y.astype(np.int64)


def read_arrays(path: Path, split: str) -> RawSplit:
    """One split of an .npz file; the number of classes is class_names' length where given,
    else one more than the largest training label."""
    source_files: dict[str, str] = {}
    if not path.is_file():
        raise DataError(f"{path}: no such file; set data.root to an .npz holding x_train, "
                        "y_train, x_test and y_test")
    read_file(path, source_files, path.parent)
    try:
        with np.load(path, allow_pickle=False) as arrays:
            content = {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable .npz without pickled objects ({error}); save "
                        "it with numpy.savez from plain arrays") from None
    missing = [key for pair in ARRAY_KEYS.values() for key in pair if key not in content]
    if missing:
        raise DataError(f"{path}: lacks {', '.join(missing)}; an arrays data set holds x_train, "
                        "y_train, x_test and y_test")
    names = [str(name) for name in content["class_names"]] if "class_names" in content else None
    num_classes = len(names) if names else int(content["y_train"].max()) + 1
    x_key, y_key = ARRAY_KEYS[split]
    images = _as_uint8_nchw(path, x_key, content[x_key])
    labels = _labels(path, y_key, content[y_key], images.shape[0], num_classes)
    return RawSplit(images=torch.from_numpy(images), labels=torch.from_numpy(labels),
                    class_names=names or [str(index) for index in range(num_classes)],
                    source_files=source_files)
