"""The wheels a GPU machine without network needs to run this project: exactly what it lacks.

The GPU machine has python 3.12 with torch 2.11, torchvision 0.26, numpy, safetensors, typer,
rich, scipy, matplotlib and pytest; it lacks dvc, dvclive, pyautoattack, torchcam, torchattacks
(and pyyaml and hypothesis, which this project's code and tests import). The working tree that
travels to it is capped at 64 MiB including what it carries, so:

1. the closure of what it lacks is resolved by pip for python 3.12 in a throwaway venv in which
   the machine's own packages are *registered as installed* (metadata only, never downloaded):
   pip then leaves them, and everything below them (CUDA libraries, triton, pillow), out. Their
   versions are the stated ones (torch, torchvision, numpy, safetensors) or the lowest this
   project accepts (the rest): a dependency that needs a newer one gets it carried, as an
   upgrade. Small pure-python dependencies shared with the machine's packages (packaging, click)
   are carried the same way, so a version dvc needs is at hand whatever the machine has;
2. each resolved wheel is downloaded as a manylinux wheel for CPython 3.12 (pip download
   --only-binary=:all: --platform ...); the few releases published as sources only (nanotime)
   are built into wheels here, and must be pure python;
3. pyautoattack's wheel is repacked without `pyautoattack/examples/` (44 MB of example models
   no evaluation loads), its RECORD rewritten to match;
4. their total size must leave room for the working tree and a margin under the cap.

    python -m part.runtime.wheels [DIR]   # what scripts/device_wheels.sh runs; DIR: .device_wheels
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

CARRIED = ("dvc", "dvclive", "pyautoattack", "torchcam", "torchattacks", "pyyaml", "hypothesis")
# The GPU machine's packages, registered as installed at these versions: the stated ones, else
# the lowest that the machine's own packages guarantee (networkx: torch 2.11 requires
# >= 2.5.1; matplotlib: builds for numpy 2, which the machine has, start at 3.9; pillow:
# matplotlib 3.9 requires >= 8, and 10 is as old as any matplotlib release for numpy 2 was
# tested with), else the lowest this project accepts (typer, rich, scipy, pytest).
ON_THE_GPU_MACHINE = {"torch": "2.11.0", "torchvision": "0.26.0", "numpy": "2.5.0",
                      "safetensors": "0.8.0", "typer": "0.12.0", "rich": "13.0.0",
                      "scipy": "1.10.0", "matplotlib": "3.9.0", "pytest": "8.0.0",
                      "networkx": "2.5.1", "pillow": "10.0.0"}
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
PYTHON_VERSION = "3.12"
STRIPPED = {"pyautoattack": "pyautoattack/examples/"}
TRAVEL_CAP = 64 * 2**20
MARGIN = 8 * 2**20  # room for what the device check writes and for the tree to grow
ROOT = Path(__file__).resolve().parents[2]


class WheelsError(Exception):
    pass


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def register_as_installed(site_packages: Path, versions: dict[str, str]) -> None:
    """Dist-info directories that make pip see `versions` as installed, with no files."""
    for name, version in versions.items():
        info = site_packages / f"{name}-{version}.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\n"
                                       f"Version: {version}\n")
        (info / "INSTALLER").write_text("part.runtime.wheels\n")
        (info / "RECORD").write_text("")


def resolved(report: dict) -> list[tuple[str, str, bool]]:
    """(name, version, published as a wheel) for each package pip's report would install."""
    return [(item["metadata"]["name"], item["metadata"]["version"],
             item["download_info"]["url"].endswith(".whl")) for item in report["install"]]


def _run(args: list[str], what: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise WheelsError(f"{what} failed ({' '.join(args[:4])} ...):\n{tail}")


def resolve(python312: str, work: Path) -> list[tuple[str, str, bool]]:
    venv = work / "resolve"
    _run([python312, "-m", "venv", "--without-pip", str(venv)], "making a python 3.12 venv")
    site = next((venv / "lib").glob("python3.12/site-packages"), None)
    if site is None:
        raise WheelsError(f"{python312} made a venv without python3.12/site-packages: "
                          "give a python 3.12 (PY312=...)")
    register_as_installed(site, ON_THE_GPU_MACHINE)
    report = work / "report.json"
    _run([python312, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
          "--dry-run", "--quiet", "--report", str(report), *CARRIED],
         "resolving the packages the GPU machine lacks")
    return resolved(json.loads(report.read_text()))


def strip_wheel(wheel: Path, prefix: str) -> int:
    """Rewrite `wheel` without the members under `prefix` and their RECORD lines; returns the
    number of members dropped."""
    kept = wheel.with_suffix(".tmp")
    dropped = 0
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(kept, "w",
                                                           zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            if info.filename.startswith(prefix):
                dropped += 1
                continue
            data = source.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(line for line in lines
                               if not line.split(",", 1)[0].startswith(prefix)).encode()
            target.writestr(info, data)
    kept.replace(wheel)
    return dropped


def record_matches(wheel: Path) -> bool:
    """Every member of `wheel` is in its RECORD with its sha256, and nothing else is."""
    with zipfile.ZipFile(wheel) as archive:
        record_name = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
        listed = {}
        for line in archive.read(record_name).decode().splitlines():
            path, digest, _ = line.rsplit(",", 2)
            listed[path] = digest
        for name in archive.namelist():
            digest = listed.pop(name, None)
            if name == record_name:
                continue
            actual = hashlib.sha256(archive.read(name)).digest()
            expected = "sha256=" + base64.urlsafe_b64encode(actual).rstrip(b"=").decode()
            if digest != expected:
                return False
        return not listed


def installs_on_the_gpu_machine(filename: str) -> bool:
    """Whether a wheel's tags (name-version[-build]-python-abi-platform.whl) fit CPython 3.12
    on manylinux x86_64 (glibc 2.28 or newer, as torch 2.11's own wheels need)."""
    python, abi, platform = filename.removesuffix(".whl").split("-")[-3:]
    pythons_fit = any(tag in ("py3", "cp312") or (tag.startswith("cp3") and abi == "abi3")
                      for tag in python.split("."))
    abis_fit = any(tag in ("none", "cp312", "abi3") for tag in abi.split("."))
    platforms_fit = any(
        tag == "any" or tag in ("manylinux1_x86_64", "manylinux2010_x86_64", *PLATFORMS)
        or (re.fullmatch(r"manylinux_2_(\d+)_x86_64", tag) is not None
            and int(tag.split("_")[2]) <= 28) for tag in platform.split("."))
    return pythons_fit and abis_fit and platforms_fit


def travelling_tree_bytes(root: Path = ROOT) -> int:
    """The size of what travels of the working tree: tracked and untracked, not ignored."""
    names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                            "-z"], cwd=root, capture_output=True, check=True).stdout
    return sum((root / name).stat().st_size for name in names.decode().split("\0")
               if name and (root / name).is_file())


def check_size(wheels_bytes: int, tree_bytes: int) -> None:
    room = TRAVEL_CAP - MARGIN - tree_bytes
    if wheels_bytes > room:
        raise WheelsError(
            f"the wheels take {wheels_bytes / 2**20:.1f} MiB but only {room / 2**20:.1f} MiB "
            f"is left: 64 MiB minus the working tree ({tree_bytes / 2**20:.1f} MiB) minus an "
            f"{MARGIN // 2**20} MiB margin; carry less (part/runtime/wheels.py: CARRIED, STRIPPED)")


def build(out: Path, python312: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="device-wheels-") as temporary:
        work = Path(temporary)
        packages = resolve(python312, work)
        missing = {_normal(name) for name in CARRIED} - {_normal(p[0]) for p in packages}
        if missing:
            raise WheelsError(f"pip resolved no {', '.join(sorted(missing))}")
        binary = [f"{name}=={version}" for name, version, is_wheel in packages if is_wheel]
        sources = [f"{name}=={version}" for name, version, is_wheel in packages if not is_wheel]
        platforms = [flag for platform in PLATFORMS for flag in ("--platform", platform)]
        _run([python312, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
              "--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi",
              "cp312", "--abi", "abi3", "--abi", "none", *platforms, "-d", str(out), *binary],
             "downloading the manylinux wheels for python 3.12")
        if sources:
            _run([python312, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out),
                  *sources], f"building wheels of {', '.join(sources)}")
    for wheel in out.glob("*.whl"):
        if not installs_on_the_gpu_machine(wheel.name):
            raise WheelsError(f"{wheel.name} does not install on CPython 3.12 manylinux x86_64")
    stripped = {}
    for name, prefix in STRIPPED.items():
        for wheel in out.glob(f"{name}-*.whl"):
            stripped[wheel.name] = strip_wheel(wheel, prefix)
            if not record_matches(wheel):
                raise WheelsError(f"{wheel.name}: its RECORD does not match after stripping")
    sizes = {wheel.name: wheel.stat().st_size for wheel in sorted(out.glob("*.whl"))}
    total = sum(sizes.values())
    tree = travelling_tree_bytes()
    check_size(total, tree)
    summary = {"wheels": sizes, "total_bytes": total, "total_mib": round(total / 2**20, 2),
               "tree_bytes": tree, "cap_bytes": TRAVEL_CAP, "stripped_members": stripped,
               "registered_as_installed": ON_THE_GPU_MACHINE}
    (out / "wheels.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else ROOT / ".device_wheels"
    python312 = argv[1] if len(argv) > 1 else "python3.12"
    try:
        summary = build(out, python312)
    except WheelsError as error:
        print(f"device_wheels: {error}", file=sys.stderr)
        return 1
    print(f"device_wheels: {len(summary['wheels'])} wheels, {summary['total_mib']} MiB in {out} "
          f"(working tree {summary['tree_bytes'] / 2**20:.1f} MiB; cap 64 MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
