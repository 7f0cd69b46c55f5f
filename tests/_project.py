"""A tiny copy of this project in a temporary git + DVC repository, run as a user runs it.

The copy is what a fresh clone holds (the package, the stage scripts, dvc.yaml, .dvcignore), and
commands run with bytecode writing ON, as on a normal machine (this image sets
PYTHONDONTWRITEBYTECODE; a user's Debian does not). Stages run `python -m stages.<name>` from the
copy, so they import the copy's own code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ALL_STAGES = {"prepare", "burnin@0", "masks@0", "budgets", "train@baseline-0", "train@part-0",
              "evaluate@baseline-0", "evaluate@part-0", "report"}
TINY = {
    "dataset": "synthetic", "model": "cnn_small", "method": "at", "cam": "gradcam",
    "mask_rule": "official", "eps": "8/255", "eps_low": "7/255", "epochs": 2,
    "burn_in_epochs": 1, "seeds": [0], "device": "cpu",
    "data": {"train_subset": 200, "val_subset": 40, "test_subset": 60},
    "train": {"batch_size": 50, "steps": 2, "step_size": "2/255", "monitor_subset": 30,
              "monitor_steps": 2},
    "eval": {"n_autoattack": 6, "batch_size": 60, "steps": 3},
}


RECORDER_SITE = ROOT / "tests" / "import_recorder"


def user_env(record_imports: Path | None = None, root: Path | None = None) -> dict[str, str]:
    """The environment of a user's shell. With `record_imports`, every stage process the
    command starts leaves there the files of the project at `root` that it executed
    (tests/import_recorder): `python` on PATH becomes a wrapper that adds the recorder, whatever
    PYTHONPATH a stage's command sets."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if record_imports is not None:
        wrappers = record_imports / "bin"
        wrappers.mkdir(parents=True, exist_ok=True)
        real = shutil.which("python", path=env["PATH"])
        (wrappers / "python").write_text(
            "#!/bin/sh\n"
            f'PYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{RECORDER_SITE}" exec {real} "$@"\n')
        (wrappers / "python").chmod(0o755)
        env["PATH"] = f"{wrappers}{os.pathsep}{env['PATH']}"
        env["PART_RECORD_IMPORTS"] = str(record_imports)
        env["RECORD_ROOT"] = str(root)
    return env


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=user_env())
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@dataclass
class Repro:
    """A `dvc repro` as it ran: its output, each stage's wall time (from DVC's own lines, read
    as they came), DVC's start-up before the first stage and, where recorded, the project files
    each stage process executed."""

    result: subprocess.CompletedProcess
    seconds: dict[str, float]
    startup: float
    executed: list[dict] = field(default_factory=list)


def repro(repo: Path, args: list[str] | None = None, record_imports: Path | None = None,
          root: Path | None = None) -> Repro:
    """`dvc repro ARGS` in `repo`, timing each stage from its "Running stage" line to DVC's
    "Updating lock file" after it; with `record_imports`, what each stage executed of the
    project at `root` (default: `repo`)."""
    command = ["dvc", "repro", *(args or [])]
    began = time.monotonic()
    process = subprocess.Popen(command, cwd=repo, env=user_env(record_imports, root or repo),
                               text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines, seconds, startup = [], {}, 0.0
    running: tuple[str, float] | None = None
    for line in process.stdout:
        now = time.monotonic()
        lines.append(line)
        started = re.search(r"Running stage '([^']+)'", line)
        if started and not seconds and running is None:
            startup = now - began
        if started or "Updating lock file" in line:
            if running is not None:
                seconds[running[0]] = now - running[1]
            running = (started.group(1), now) if started else None
    process.wait()
    output = "".join(lines)
    result = subprocess.CompletedProcess(command, process.returncode, output, "")
    if process.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{output}")
    executed = ([json.loads(path.read_text()) for path in sorted(record_imports.glob("*.json"))]
                if record_imports is not None else [])
    return Repro(result, seconds, startup, executed)


def ran(result: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", result.stdout + result.stderr))


def shipped_params_with(overrides: dict) -> dict:
    """The shipped params.yaml (DVC insists that every declared param is present) with
    `overrides`; a dict value updates that section."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in overrides.items():
        if isinstance(value, dict):
            params[key].update(value)
        else:
            params[key] = value
    return params


def copy_pipeline(repo: Path) -> None:
    """What a fresh clone holds of the pipeline (part.io.paths.PIPELINE_FILES), bytecode aside."""
    from part.io.paths import PIPELINE_FILES

    for name in PIPELINE_FILES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, repo / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            repo.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, repo / name)


def make_project(repo: Path, **overrides) -> Path:
    copy_pipeline(repo)
    (repo / "params.yaml").write_text(yaml.safe_dump(shipped_params_with({**TINY, **overrides}),
                                                     sort_keys=False))
    (repo / ".gitignore").write_text("/runs/\n/timings/\n__pycache__/\n")
    run(["git", "init", "-q"], repo)
    run(["git", "config", "user.email", "ci@example.com"], repo)
    run(["git", "config", "user.name", "ci"], repo)
    run(["dvc", "init", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "tiny pipeline"], repo)
    return repo


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", message], repo)


def locked_outs(repo: Path) -> dict[str, str]:
    """path -> md5 of every cached output recorded in dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values()
            for out in stage.get("outs", []) if "md5" in out}


def is_up_to_date(repo: Path) -> bool:
    status = run(["dvc", "status"], repo).stdout.strip()
    return status.endswith("up to date.") or status == ""


def start(repo: Path, args: list[str]) -> subprocess.Popen:
    """A command in its own process group, so that a kill takes DVC and the stage with it."""
    return subprocess.Popen(args, cwd=repo, env=user_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def kill(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def kill_once_written(repo: Path, args: list[str], path: Path, timeout: float = 120) -> None:
    """Run `args` and SIGKILL it as soon as `path` exists (e.g. the first epoch's state)."""
    process = start(repo, args)
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert path.exists(), f"{' '.join(args)} never wrote {path}"
    kill(process)
