"""A disk that fills up while an output is written: each kind of output (prepared data, a
training's resume state and its DVCLive log, masks, metrics, the report, an export) gives one
message that names the file, exit 2, every file written before intact and no temporary left.

The disk is really full: in a mount namespace of its own (`unshare --mount`, or with
`--map-root-user` where the tests do not run as root) the output's directory is a small tmpfs
holding its files, the rest of it filled, so the command's write fails with ENOSPC
(tests/_full_disk.py). Where no mount namespace can be made, the tests are skipped and say why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _project import ROOT, TINY

pytestmark = pytest.mark.slow

TEMP_SUFFIX = ".tmp"


def _env() -> dict[str, str]:
    # Bytecode off: a .pyc written at import time is not the output under test.
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": "",
            "PYTHONUNBUFFERED": "1"}


def _command(repo: Path, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=repo, capture_output=True, text=True,
                          env=_env())


def _namespace() -> list[str] | None:
    """The unshare prefix that lets this process mount a tmpfs of its own, or None."""
    if shutil.which("unshare") is None:
        return None
    for prefix in (["unshare", "--mount"], ["unshare", "--mount", "--map-root-user"]):
        probe = subprocess.run([*prefix, "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                               capture_output=True)
        if probe.returncode == 0:
            return prefix
    return None


NAMESPACE = _namespace()


def _on_a_full_disk(repo: Path, directory: str, args: list[str]) -> dict:
    helper = Path(__file__).with_name("_full_disk.py")
    result = subprocess.run([*NAMESPACE, sys.executable, str(helper), str(repo), directory,
                             "--", sys.executable, *args], capture_output=True, text=True,
                            env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The tiny pipeline's stages run once by hand (no DVC needed): every output exists."""
    repo = tmp_path_factory.mktemp("full_disk")
    for name in ("part", "stages"):
        shutil.copytree(ROOT / name, repo / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in {**TINY, "variants": ["baseline"],
                       "eval": {**TINY["eval"], "attacks": ["natural", "pgd20"]}}.items():
        params[key] = {**params[key], **value} if isinstance(value, dict) else value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in (["prepare"], ["burnin"], ["masks"], ["budgets"], ["train", "baseline"],
                  ["evaluate", "baseline"], ["report"]):
        result = _command(repo, ["-m", f"stages.{stage[0]}", *stage[1:]])
        assert result.returncode == 0, result.stderr
    exported = _command(repo, ["-m", "part.cli", "export", "models/baseline-0.safetensors",
                               "export"])
    assert exported.returncode == 0, exported.stderr
    return repo


# (the command, the directory that is full, where the failing write must point)
CASES = {
    "prepared data": (["-m", "stages.prepare"], "data/prepared"),
    "a training's resume state": (["-m", "stages.burnin"], "runs"),
    "a training's DVCLive log": (["-m", "stages.burnin"], "dvclive/burnin-0"),
    "masks": (["-m", "stages.masks"], "masks"),
    "metrics": (["-m", "part.cli", "evaluate", "models/baseline-0.safetensors", "--attacks",
                 "natural", "--json", "metrics/baseline-0.json"], "metrics"),
    "the report": (["-m", "stages.report"], "reports"),
    "an export": (["-m", "part.cli", "export", "models/baseline-0.safetensors", "export"],
                  "export"),
}


@pytest.mark.skipif(NAMESPACE is None, reason="no mount namespace for a tmpfs here (unshare "
                    "--mount needs root or unprivileged user namespaces)")
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_full_disk_gives_one_message_and_keeps_every_file_written_before(project, case):
    args, directory = CASES[case]
    if directory == "runs":  # a resume state exists only while a run trains: make an old one
        (project / "runs").mkdir(exist_ok=True)
        (project / "runs" / "burnin-0.safetensors").write_bytes(b"an earlier state")
    report = _on_a_full_disk(project, directory, args)
    stderr = report["stderr"]
    assert report["returncode"] == 2, (report["returncode"], stderr[-2000:])
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert f"cannot write {directory}/" in errors[0], errors[0]
    assert "No space left on device" in errors[0], errors[0]
    assert report["before"], "the directory held no file to keep"
    kept = {name: report["after"].get(name) for name in report["before"]}
    assert kept == report["before"]  # every file written before, whole
    assert not report["temporaries"], report["temporaries"]
