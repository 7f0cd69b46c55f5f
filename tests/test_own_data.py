"""Your own data: an image folder of real PNG and JPEG files and .npz arrays become the same
canonical prepared files as the published data sets, and every bad input is one message naming
the file, exit 2 (through the real `prepare` stage)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _project import ROOT, copy_pipeline, shipped_params_with
from PIL import Image

from part.data.prepared import load_prepared, prepare_dataset
from part.data.sources import load_source

CLASSES = ("cat", "ant", "bee")  # listed unsorted: the labels follow the sorted names


def _image(label: int, index: int, size: int = 12, channels: int = 3) -> torch.Tensor:
    """An image whose content says its class: a bright square whose place is the label."""
    image = torch.full((channels, size, size), 20 + index, dtype=torch.uint8)
    image[-1] += 9 * (channels > 1)  # colour, unless a grey image is asked for
    image[:, label * 4:label * 4 + 4, 2:6] = 230
    return image


def make_image_folder(root: Path, per_class: int = 4, sizes: tuple[int, ...] = (12,),
                      channels: int = 3) -> Path:
    """train/<class>/ and test/<class>/ of real PNG and JPEG files."""
    for split in ("train", "test"):
        for label, name in enumerate(sorted(CLASSES)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(per_class):
                image = _image(label, index, sizes[index % len(sizes)], channels)
                pixels = image.permute(1, 2, 0).numpy()
                picture = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
                if index % 2:
                    picture.save(folder / f"{index}.jpg", quality=95)
                else:
                    picture.save(folder / f"{index}.png")
    return root


def test_an_image_folder_reads_sorted_classes_with_labels_that_match_the_pixels(tmp_path):
    root = make_image_folder(tmp_path / "pets")
    raw = load_source("imagefolder", "train", root=root)
    assert raw.class_names == sorted(CLASSES)
    assert raw.images.dtype == torch.uint8 and raw.images.shape == (12, 3, 12, 12)
    # each image's bright square sits where its label puts it (PNG exactly, JPEG nearly)
    for image, label in zip(raw.images, raw.labels, strict=True):
        brightest_row = int(image[0, :, 3].float().argmax())
        assert brightest_row // 4 == int(label)
    assert len(raw.source_files) == 12 and all(len(d) == 64 for d in raw.source_files.values())


def test_grey_images_give_one_channel_and_other_sizes_are_resized(tmp_path):
    root = make_image_folder(tmp_path / "grey", sizes=(12, 16), channels=1)
    with pytest.raises(Exception, match="16x16 pixels.*set data.image_size"):
        load_source("imagefolder", "train", root=root)
    raw = load_source("imagefolder", "train", root=root, image_size=14)
    assert raw.images.shape == (12, 1, 14, 14)


def test_prepared_files_from_an_image_folder_are_canonical_and_record_the_class_names(tmp_path):
    root = make_image_folder(tmp_path / "pets")
    first = prepare_dataset("imagefolder", tmp_path / "a", root=root, val_subset=3)
    prepare_dataset("imagefolder", tmp_path / "b", root=root, val_subset=3)
    for split in ("train", "val", "test"):
        assert (tmp_path / "a" / f"{split}.safetensors").read_bytes() == \
            (tmp_path / "b" / f"{split}.safetensors").read_bytes()
    prepared = load_prepared(tmp_path / "a" / "test.safetensors")
    assert prepared.meta["class_names"] == sorted(CLASSES)
    assert first["train"]["shape"][1:] == [3, 12, 12]


def _arrays(path: Path, float_nchw: bool = False, **changes) -> Path:
    generator = np.random.default_rng(0)
    x = {split: generator.integers(0, 256, (n, 10, 10, 3), dtype=np.uint8)
         for split, n in (("train", 30), ("test", 12))}
    arrays = {"x_train": x["train"], "y_train": np.arange(30) % 3,
              "x_test": x["test"], "y_test": np.arange(12) % 3}
    if float_nchw:
        arrays = {key: (value.transpose(0, 3, 1, 2) / 255.0 if key.startswith("x") else value)
                  for key, value in arrays.items()}
    arrays.update(changes)
    np.savez(path, **arrays)
    return path


def test_uint8_nhwc_and_float_nchw_arrays_give_the_same_prepared_tensors(tmp_path):
    for name, float_nchw in (("uint8", False), ("float", True)):
        prepare_dataset("arrays", tmp_path / name, root=_arrays(tmp_path / f"{name}.npz",
                                                                float_nchw), val_subset=6)
    for split in ("train", "val", "test"):
        uint8, floats = (load_prepared(tmp_path / name / f"{split}.safetensors")
                         for name in ("uint8", "float"))
        assert torch.equal(uint8.images, floats.images)
        assert torch.equal(uint8.labels, floats.labels)
    # the metadata records each source file's sha256: the two .npz files differ
    assert uint8.meta["source_sha256"] != floats.meta["source_sha256"]
    test = load_prepared(tmp_path / "uint8" / "test.safetensors")
    assert tuple(test.images.shape) == (12, 3, 10, 10) and int(test.meta["num_classes"]) == 3


def _prepare_stage(project: Path, dataset: str, root: Path, **data) -> subprocess.CompletedProcess:
    params = shipped_params_with({"dataset": dataset,
                                  "data": {"root": str(root), "val_subset": 0,
                                           "train_subset": None, "test_subset": None, **data}})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": ""}
    return subprocess.run([sys.executable, "-m", "stages.prepare"], cwd=project,
                          capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("own_data") / "repo"
    copy_pipeline(repo)
    return repo


def _corrupt(root: Path) -> Path:
    bad = root / "train" / "bee" / "2.png"
    bad.write_bytes(bad.read_bytes()[:40])
    return bad


def _empty_class(root: Path) -> Path:
    empty = root / "train" / "dog"
    empty.mkdir()
    return empty


BAD_FOLDERS = {"a corrupt image": _corrupt, "an empty class folder": _empty_class}
BAD_ARRAYS = {
    "mismatched lengths": ({"y_train": np.arange(29) % 3}, "29 labels for 30 images"),
    "labels out of range": ({"y_test": np.arange(12) % 3 + 3}, "y_test ranges over"),
    "objects that need pickle": ({"x_test": np.array([{"a": 1}], dtype=object)}, "pickle"),
    "float pixels above 1": ({"x_test": np.full((12, 3, 10, 10), 2.0)}, "outside [0, 1]"),
}


@pytest.mark.slow  # the real prepare stage, a process each
@pytest.mark.parametrize("case", BAD_FOLDERS, ids=list(BAD_FOLDERS))
def test_a_bad_image_folder_is_one_message_naming_the_file(project, tmp_path, case):
    root = make_image_folder(tmp_path / "pets")
    named = BAD_FOLDERS[case](root)
    result = _prepare_stage(project, "imagefolder", root)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(named) in errors[0] and "Traceback" not in result.stderr
    assert not (project / "data" / "prepared").exists()


@pytest.mark.slow  # the real prepare stage, a process each
@pytest.mark.parametrize("case", BAD_ARRAYS, ids=list(BAD_ARRAYS))
def test_bad_arrays_are_one_message_naming_the_file(project, tmp_path, case):
    changes, says = BAD_ARRAYS[case]
    path = _arrays(tmp_path / "bad.npz", **changes)
    result = _prepare_stage(project, "arrays", path)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0] and says in errors[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # the real prepare stage, a process each
def test_the_prepare_stage_reads_an_image_folder(project, tmp_path):
    root = make_image_folder(tmp_path / "pets", sizes=(12, 14))
    result = _prepare_stage(project, "imagefolder", root, image_size=12)
    assert result.returncode == 0, result.stderr
    test = load_prepared(project / "data" / "prepared" / "test.safetensors")
    assert tuple(test.images.shape) == (12, 3, 12, 12) and test.meta["dataset"] == "imagefolder"
    assert ROOT.joinpath("data/own/README.md").is_file()  # the folder prepare depends on
