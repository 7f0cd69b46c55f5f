"""A disk that fills up while an output is written: each kind of output gives one message that
names the file, exit 2, the previous version of that file intact and no temporary left.

A full disk is simulated with a file-size limit (RLIMIT_FSIZE) in the child process that runs
the real command: past the limit a write fails (EFBIG), as it fails on a full disk (ENOSPC),
and no root is needed. Past such a limit the kernel also sends SIGXFSZ, which kills a process
that does not ignore it: the commands ignore it, and the test leaves that to them.
"""

from __future__ import annotations

import os
import resource
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


def _command(repo: Path, args: list[str], limit: int | None = None
             ) -> subprocess.CompletedProcess:
    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, *args], cwd=repo, capture_output=True, text=True,
                          env=_env(), preexec_fn=limit_file_size if limit else None)


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


# (the command, the file-size limit in bytes, the file whose write fails and must survive)
CASES = {
    "prepared data": (["-m", "stages.prepare"], 65536, "data/prepared/train.safetensors"),
    "a checkpoint (the resume state)": (["-m", "stages.burnin"], 65536,
                                        "runs/burnin-0.safetensors"),
    "masks": (["-m", "stages.masks"], 65536, "masks/burnin-0.safetensors"),
    "metrics": (["-m", "part.cli", "evaluate", "models/baseline-0.safetensors", "--attacks",
                 "natural", "--json", "metrics/baseline-0.json"], 256, "metrics/baseline-0.json"),
    "the report": (["-m", "stages.report"], 256, "reports/study.json"),
    "an export": (["-m", "part.cli", "export", "models/baseline-0.safetensors", "export"], 65536,
                  "export/baseline-0.pt"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_full_disk_gives_one_message_and_keeps_the_previous_file(project, case):
    args, limit, target = CASES[case]
    path = project / target
    if not path.exists():  # the resume state exists only while a run trains: make an old one
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"an earlier state")
    before = {file: file.read_bytes() for file in path.parent.iterdir() if file.is_file()}
    result = _command(project, args, limit)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert f"cannot write {target}" in errors[0] and "Traceback" not in result.stderr
    assert path.read_bytes() == before[path]  # the previous version, whole
    left = [file.name for file in path.parent.iterdir() if file.name.endswith(TEMP_SUFFIX)]
    assert not left, left
    for file, content in before.items():  # nothing else of the directory was touched
        assert file.read_bytes() == content, file


def test_the_limit_is_below_every_file_it_guards(project):
    """The simulation means something only if each guarded file is larger than its limit."""
    for args, limit, target in CASES.values():
        path = project / target
        if target.startswith("runs/"):
            continue  # the state is as large as the model and its momentum: above 64 KiB
        assert path.stat().st_size > limit, (target, path.stat().st_size)
        assert resource.RLIM_INFINITY != limit and args
