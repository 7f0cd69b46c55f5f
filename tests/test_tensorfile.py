"""The one writer of safetensors artifacts: canonical bytes, readable by safetensors itself,
atomic, with the umask's file mode."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file

from part.data.prepared import prepare_dataset
from part.io.atomic import atomic_path
from part.io.tensorfile import write_safetensors

ROOT = Path(__file__).resolve().parents[1]

WRITE_IN_A_FRESH_PROCESS = """
import sys, torch
from part.io.tensorfile import write_safetensors
torch.manual_seed(0)
tensors = {f"t{i}": torch.randn(3, i + 1) for i in range(12)}
tensors["mask"] = torch.rand(2, 5) > 0.5
metadata = {f"key{i}": f"value {i}" for i in range(40)}
write_safetensors(sys.argv[1], tensors, metadata)
"""


def test_equal_content_gives_equal_bytes_across_processes(tmp_path: Path) -> None:
    # safetensors' own writer orders metadata from a per-process hash seed: two processes
    # writing the same content gave two md5s, and DVC reran everything downstream.
    digests = set()
    for index in range(3):
        path = tmp_path / f"{index}.safetensors"
        subprocess.run([sys.executable, "-c", WRITE_IN_A_FRESH_PROCESS, str(path)], check=True,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        digests.add(hashlib.md5(path.read_bytes()).hexdigest())
    assert len(digests) == 1


def test_prepared_data_is_byte_identical_across_processes(tmp_path: Path) -> None:
    script = ("import sys; from part.data.prepared import prepare_dataset; "
              "prepare_dataset('synthetic', sys.argv[1], train_subset=30, test_subset=20)")
    contents = []
    for index in range(2):
        out = tmp_path / str(index)
        subprocess.run([sys.executable, "-c", script, str(out)], check=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        contents.append({p.name: p.read_bytes() for p in out.iterdir()})
    assert contents[0] == contents[1] and set(contents[0]) == {"train.safetensors",
                                                              "val.safetensors",
                                                              "test.safetensors"}


DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
          torch.int16, torch.int8, torch.uint8, torch.bool]


@st.composite
def tensor_dicts(draw):
    names = draw(st.lists(st.text("abcdefgh._0123456789", min_size=1, max_size=12),
                          min_size=1, max_size=6, unique=True))
    out = {}
    for name in names:
        dtype = draw(st.sampled_from(DTYPES))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        seed = draw(st.integers(0, 2**16))
        generator = torch.Generator().manual_seed(seed)
        values = torch.randint(0, 2 if dtype == torch.bool else 100, shape,
                               generator=generator)
        out[name] = values.to(dtype)
    return out


@settings(max_examples=60, deadline=None)
@given(tensors=tensor_dicts(),
       metadata=st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=5))
def test_safetensors_reads_back_exactly_what_was_written(tmp_path_factory, tensors, metadata):
    path = tmp_path_factory.mktemp("rt") / "t.safetensors"
    write_safetensors(path, tensors, metadata)
    loaded = load_file(path)  # the library itself is the oracle for the format
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name
    with safe_open(path, framework="pt") as reader:
        assert (reader.metadata() or {}) == metadata


def test_views_of_one_storage_are_written_as_independent_tensors(tmp_path: Path) -> None:
    base = torch.arange(12.0)
    path = write_safetensors(tmp_path / "v.safetensors", {"a": base[:6], "b": base.view(3, 4)})
    loaded = load_file(path)
    assert torch.equal(loaded["a"], base[:6]) and torch.equal(loaded["b"], base.view(3, 4))


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_prepared_files_get_the_umask_mode_not_0600(tmp_path: Path) -> None:
    prepare_dataset("synthetic", tmp_path, train_subset=20, test_subset=10)
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ("train.safetensors", "test.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    finished = subprocess.Popen(["true"])  # a pid that has surely exited
    finished.wait()
    stale = tmp_path / f".model.safetensors.{finished.pid}.abcd1234.tmp"
    stale.write_bytes(b"half a file")
    live = tmp_path / f".model.safetensors.{os.getpid()}.beef0000.tmp"  # our own: kept
    live.write_bytes(b"in progress")
    write_safetensors(target, {"w": torch.ones(2)})
    assert not stale.exists() and live.exists() and target.is_file()


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as temp:
        temp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["out.txt"]
