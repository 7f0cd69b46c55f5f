"""The data sets this project reads: each one's files, download URLs and checksums as data, and
the one way to find, download and read any of them (`load_source`).

A source is looked for in `data.root` if set, else (Fashion-MNIST only) the Debian package
directory, then data/raw/<name>; in each also the layout sub-directory its release unpacks to.
A missing source is downloaded (when allowed) into a staging directory and moved into place only
when complete; otherwise one DataError says where it looked, what it expected and how to get it.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from part.data import SPLITS, DataError, RawSplit, check_split
from part.data.formats import (
    CIFAR10_DIR,
    FASHION_MNIST_STEMS,
    SVHN_FILES,
    cifar10_files,
    has_fashion_mnist,
    read_cifar10,
    read_fashion_mnist,
    read_svhn,
)
from part.data.jpeg_tree import (
    TINYIMAGENET_DIR,
    has_tinyimagenet,
    read_tinyimagenet,
    tinyimagenet_files,
)
from part.data.own import read_arrays, read_imagefolder
from part.data.synthetic import make_synthetic
from part.io.paths import RAW_DIR

DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
SYNTHETIC = "synthetic"  # generated in memory: no files, nothing to find or download


@dataclass(frozen=True)
class Download:
    """One published file: where it is, its md5, and (archives) the directory it unpacks to."""

    url: str
    md5: str
    unpacks_to: str | None = None  # None: a plain file, kept as it is

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Source:
    name: str
    files: Callable[[str], list[str]]  # what a split's data directory holds (shown when missing)
    reader: Callable[[Path, str], RawSplit]
    downloads: Mapping[str, tuple[Download, ...]] = field(default_factory=dict)  # split -> files
    inner_dirs: tuple[str, ...] = ()  # layouts under a root that hold the files, besides the root
    has_split: Callable[[Path, str], bool] | None = None  # default: every file in `files` exists
    note: str = ""  # said after how to download it

    def holds(self, directory: Path, split: str) -> bool:
        if self.has_split is not None:
            return self.has_split(directory, split)
        return all((directory / name).is_file() for name in self.files(split))


_FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}
_CIFAR10 = Download("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                    "c32a1d4ab5d03f1284b67883e8d87530", unpacks_to=CIFAR10_DIR)
_SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
_SVHN_MD5 = {"train": "e26dedcc434d2e4c54c9b2d4a06d8373",
             "test": "eb5a983be6a315427106f1b164d9cef3"}
_TINYIMAGENET = Download("http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                         "90528d7ca1a48142e341f4ef8d21d0de", unpacks_to=TINYIMAGENET_DIR)

_CATALOGUE: dict[str, Source] = {source.name: source for source in (
    Source("fashion-mnist", lambda split: [f"{stem}.gz" for stem in FASHION_MNIST_STEMS[split]],
           read_fashion_mnist, has_split=has_fashion_mnist,
           downloads={split: tuple(Download(f"{_FASHION_MNIST_URL}{stem}.gz",
                                            _FASHION_MNIST_MD5[stem]) for stem in stems)
                      for split, stems in FASHION_MNIST_STEMS.items()},
           inner_dirs=("FashionMNIST/raw",),  # torchvision's layout
           note=(f"on Debian/Ubuntu `apt-get install dataset-fashion-mnist` installs them into "
                 f"{DEBIAN_FASHION_MNIST_DIR}")),
    Source("cifar10", cifar10_files, read_cifar10,
           downloads={"train": (_CIFAR10,), "test": (_CIFAR10,)}, inner_dirs=(CIFAR10_DIR,),
           note=("this is the binary version; the Python-pickle version is not read, because "
                 "unpickling can run arbitrary code")),
    Source("svhn", lambda split: [SVHN_FILES[split]], read_svhn,
           downloads={split: (Download(_SVHN_URL + name, _SVHN_MD5[split]),)
                      for split, name in SVHN_FILES.items()}),
    Source("tinyimagenet", tinyimagenet_files, read_tinyimagenet, has_split=has_tinyimagenet,
           downloads={"train": (_TINYIMAGENET,), "test": (_TINYIMAGENET,)},
           inner_dirs=(TINYIMAGENET_DIR,)),
)}
# A researcher's own data (part/data/own.py): data.root names the folder or the .npz file.
IMAGEFOLDER, ARRAYS = "imagefolder", "arrays"
OWN_SOURCES = (IMAGEFOLDER, ARRAYS)
SOURCES: tuple[str, ...] = (*_CATALOGUE, SYNTHETIC, *OWN_SOURCES)

# What a failed download may raise: network (URLError is an OSError), checksum mismatch
# (RuntimeError from torchvision), or a broken archive.
_DOWNLOAD_ERRORS = (OSError, RuntimeError, ValueError, tarfile.TarError, zipfile.BadZipFile)


def check_source(name: str) -> str:
    if name not in SOURCES:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(SOURCES)}")
    return name


def _search_bases(name: str, root: str | Path | None) -> list[Path]:
    if root is not None:
        return [Path(root).expanduser()]
    bases = [DEBIAN_FASHION_MNIST_DIR] if name == "fashion-mnist" else []
    return [*bases, RAW_DIR / name]


def _candidate_dirs(source: Source, bases: list[Path]) -> list[Path]:
    return [d for base in bases for d in (base, *(base / inner for inner in source.inner_dirs))]


def _find_split_dir(source: Source, split: str, bases: list[Path]) -> Path | None:
    for directory in _candidate_dirs(source, bases):
        if directory.is_dir() and source.holds(directory, split):
            return directory
    return None


def find_source_root(name: str, root: str | Path | None = None) -> Path | None:
    """The local directory that holds both splits of data set `name`, or None (also for
    `synthetic`, which has no directory)."""
    check_source(name)
    if name == SYNTHETIC or name in OWN_SOURCES:
        return None
    source = _CATALOGUE[name]
    for directory in _candidate_dirs(source, _search_bases(name, root)):
        if directory.is_dir() and all(source.holds(directory, split) for split in SPLITS):
            return directory
    return None


@contextmanager
def _staging_dir(target: Path) -> Iterator[Path]:
    """A temporary directory inside `target`, removed afterwards, so nothing half-downloaded is
    ever visible under a final name; `target` itself is removed again if it was created empty."""
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".part-download-", dir=target))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(target.iterdir()):
            target.rmdir()


def _merge_tree(source: Path, destination: Path) -> None:
    """Move every file of `source` into `destination`, keeping files that already exist there."""
    for path in sorted(source.rglob("*")):
        final = destination / path.relative_to(source)
        if path.is_file() and not final.exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, final)


def _download_file(url: str, directory: Path, filename: str, md5: str) -> None:
    from torchvision.datasets.utils import download_url

    download_url(url, str(directory), filename=filename, md5=md5)


def _download_archive(url: str, directory: Path, md5: str) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(url, str(directory), md5=md5, remove_finished=True)


def _download(source: Source, target: Path, split: str) -> None:
    """Download a split's published files into a staging directory inside `target`, unpack the
    archives, then move what they hold into `target` (files already there are kept)."""
    with _staging_dir(target) as staging:
        for download in source.downloads[split]:
            if download.unpacks_to is None:
                _download_file(download.url, staging, download.filename, download.md5)
            else:
                _download_archive(download.url, staging, download.md5)
        _merge_tree(staging, target)


def _how_to_get(source: Source, target: Path, split: str) -> str:
    steps = []
    for download in source.downloads[split]:
        if download.unpacks_to is None:
            steps.append(f"download {download.url} (md5 {download.md5}) into {target}")
        else:
            steps.append(f"download {download.url} (md5 {download.md5}) and unpack it into "
                         f"{target}, which gives {target / download.unpacks_to}")
    return "; ".join(steps) + (f" ({source.note})" if source.note else "")


def _missing_message(source: Source, split: str, bases: list[Path], target: Path, why: str) -> str:
    searched = ", ".join(str(d) for d in _candidate_dirs(source, bases))
    return (
        f"{source.name} {split} split not found ({why}). Searched: {searched}. "
        f"Expected there: {', '.join(source.files(split))}. "
        f"To get it: {_how_to_get(source, target, split)}; "
        "or set data.root in params.yaml to the directory that holds these files."
    )


def _fetch(source: Source, split: str, root: str | Path | None, download: bool) -> Path:
    bases = _search_bases(source.name, root)
    target = Path(root).expanduser() if root is not None else RAW_DIR / source.name
    why = "download=False"
    if download:
        try:
            _download(source, target, split)
        except _DOWNLOAD_ERRORS as exc:
            why = f"automatic download into {target} failed: {type(exc).__name__}: {exc}"
        else:
            found = _find_split_dir(source, split, [target])
            if found is not None:
                return found
            why = f"a download into {target} finished but the expected files are still missing"
    raise DataError(_missing_message(source, split, bases, target, why))


def _load_own(name: str, split: str, root: str | Path | None,
              image_size: int | None) -> RawSplit:
    if root is None:
        what = ("the folder that holds train/<class>/* and test/<class>/*" if name == IMAGEFOLDER
                else "the .npz file that holds x_train, y_train, x_test and y_test")
        raise DataError(f"dataset {name} reads your own data: set data.root to {what}")
    root = Path(root).expanduser()
    if name == IMAGEFOLDER:
        return read_imagefolder(root, split, image_size)
    return read_arrays(root, split)


def load_source(
    name: str, split: str, root: str | Path | None = None, download: bool = True,
    image_size: int | None = None,
) -> RawSplit:
    """Read one split of a data set from its published on-disk format.

    Returns uint8 images [N,C,H,W] (contiguous), int64 labels [N], the class names and the sha256
    of every file read (keyed by path relative to the data directory). A data set that is not
    found locally is downloaded into `root` (or data/raw/<name>) when `download` is true; if that
    is impossible one DataError says where it looked, what it expected and how to get it.
    `imagefolder` and `arrays` read `root` itself (an image folder, resized to `image_size`
    where given, or an .npz file).
    """
    check_source(name)
    check_split(split)
    if name == SYNTHETIC:
        return make_synthetic(split)
    if name in OWN_SOURCES:
        return _load_own(name, split, root, image_size)
    source = _CATALOGUE[name]
    data_dir = _find_split_dir(source, split, _search_bases(name, root))
    if data_dir is None:
        data_dir = _fetch(source, split, root, download)
    return source.reader(data_dir, split)
