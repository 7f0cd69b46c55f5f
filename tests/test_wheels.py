"""part/runtime/wheels.py, the carried wheels' preparation: what it can check without the
registry."""

from __future__ import annotations

import base64
import hashlib
import zipfile

import pytest

from part.runtime.wheels import (
    WheelsError,
    check_size,
    installs_on_the_gpu_machine,
    record_matches,
    register_as_installed,
    resolved,
    strip_wheel,
)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}\n"


def _wheel(path, members: dict[str, bytes]):
    record = "".join(_record_line(name, data) for name, data in members.items())
    record += "demo-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        archive.writestr("demo-1.0.dist-info/RECORD", record)
    return path


def test_stripping_drops_the_folder_and_its_record_lines_and_keeps_the_rest(tmp_path):
    wheel = _wheel(tmp_path / "demo-1.0-py3-none-any.whl", {
        "demo/__init__.py": b"x = 1\n", "demo/examples/model.pt": b"\0" * 10_000,
        "demo/examples/other.pt": b"\1" * 100, "demo/examplesque.py": b"kept\n"})
    assert record_matches(wheel)
    assert strip_wheel(wheel, "demo/examples/") == 2
    with zipfile.ZipFile(wheel) as archive:
        assert sorted(archive.namelist()) == ["demo-1.0.dist-info/RECORD", "demo/__init__.py",
                                              "demo/examplesque.py"]
        assert archive.read("demo/examplesque.py") == b"kept\n"
    assert record_matches(wheel)


def test_a_record_that_lists_a_missing_member_or_a_wrong_hash_does_not_match(tmp_path):
    wheel = _wheel(tmp_path / "demo-1.0-py3-none-any.whl", {"demo/a.py": b"a"})
    with zipfile.ZipFile(wheel, "a") as archive:
        archive.writestr("demo/b.py", b"not in the record")
    assert not record_matches(wheel)


@pytest.mark.parametrize(("filename", "fits"), [
    ("dvc-3.67.1-py3-none-any.whl", True),
    ("pyyaml-6.0.4-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", True),
    ("cryptography-50.0.2-cp311-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", True),
    ("dulwich-0.24.1-cp312-cp312-manylinux_2_28_x86_64.whl", True),
    ("x-1.0-cp312-cp312-manylinux_2_34_x86_64.whl", False),  # newer glibc than torch's 2.28
    ("x-1.0-cp311-cp311-manylinux2014_x86_64.whl", False),
    ("x-1.0-cp312-cp312-macosx_11_0_arm64.whl", False),
    ("x-1.0-cp312-cp312-manylinux2014_aarch64.whl", False),
])
def test_only_wheels_for_cpython_312_on_manylinux_x86_64_fit(filename, fits):
    assert installs_on_the_gpu_machine(filename) is fits


def test_the_size_check_leaves_room_for_the_tree_and_a_margin():
    check_size(40 * 2**20, 10 * 2**20)
    with pytest.raises(WheelsError, match=r"50.0 MiB but only 46.0 MiB is left"):
        check_size(50 * 2**20, 10 * 2**20)


def test_the_registered_packages_are_seen_as_installed(tmp_path):
    from importlib.metadata import distributions

    register_as_installed(tmp_path, {"torch": "2.11.0"})
    (found,) = distributions(path=[str(tmp_path)])
    assert (found.metadata["Name"], found.version) == ("torch", "2.11.0")


def test_the_report_gives_each_package_to_install_and_whether_it_is_a_wheel():
    report = {"install": [
        {"metadata": {"name": "dvc", "version": "3.67.1"},
         "download_info": {"url": "https://x/dvc-3.67.1-py3-none-any.whl"}},
        {"metadata": {"name": "nanotime", "version": "0.5.2"},
         "download_info": {"url": "https://x/nanotime-0.5.2.tar.gz"}}]}
    assert resolved(report) == [("dvc", "3.67.1", True), ("nanotime", "0.5.2", False)]
