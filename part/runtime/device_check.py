"""The device check: one run on a bare GPU machine, within a fixed wall time, that installs the
carried wheels and then checks and measures what only a GPU can (scripts/device_check.sh).

Its parts, each under its own time limit, in this order:

- install: the wheels of .device_wheels/ (scripts/device_wheels.sh), offline; skipped for the
  packages that already import;
- versions: python, torch, CUDA, cuDNN, the device and its driver (nvidia-smi where present);
- cuda_tests: the tests marked `cuda` (pytest -m cuda);
- repro: a real `dvc repro evaluate@part-0` of a tiny study in a temporary copy of this
  project: resnet18 on synthetic 3x32x32 images, one burn-in epoch and one PART epoch,
  evaluated with natural, PGD-20 and a small AutoAttack;
- rerun: `dvc repro -f -s train@part-0` there, and whether its checkpoint has the same bytes;
- compiled: the same training with `train.compile: true` (CUDA only), its epoch's wall time
  (compilation included) beside the eager one, and its checkpoint's md5;
- bench: bench/bench_gpu.py's quick profile.

Every part's result goes into OUTDIR/device_check.json as soon as it is known (so a run cut
short keeps what it found), its output into OUTDIR/<part>.log. A part that would start with
too little of the total time left is not run. Without CUDA the CUDA parts are `skipped` and
the sizes are CPU-sized: the check itself runs in CI (tests/test_device_check.py).

    python -m part.runtime.device_check OUTDIR [--budget SECONDS]
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from part.io.paths import PIPELINE_FILES, model_path, timings_path

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ROOT / ".device_wheels"
TOTAL_BUDGET_S = 300.0  # the GPU machine's 5 minutes of wall time for the whole check
REPORT = "device_check.json"
# The packages the device check installs, by their import names.
CARRIED = {"dvc": "dvc", "dvclive": "dvclive", "pyautoattack": "pyautoattack",
           "torchcam": "torchcam", "torchattacks": "torchattacks", "pyyaml": "yaml",
           "hypothesis": "hypothesis"}
# Seconds per part on a GPU; the bench, last, gets whatever is left (at least 45 s when every
# other part takes its whole limit). Its quick profile writes each configuration as it ends, so
# a cut keeps the configurations before it.
PART_BUDGETS_S = {"install": 45, "versions": 15, "cuda_tests": 50, "repro": 75, "rerun": 25,
                  "compiled": 45, "bench": TOTAL_BUDGET_S}
# On a (shared, 2-core) CPU, with the CUDA parts skipped: the stages' start-up dominates there.
CPU_PART_BUDGETS_S = {**PART_BUDGETS_S, "repro": 120, "rerun": 40, "bench": 90}
# The tiny study: on a GPU resnet18 (the paper's model) on a few hundred images; on the CPU
# cnn_small on fewer, so that the CI run stays within about two minutes.
# A part that runs out of time is interrupted this long (at most) before its limit
INTERRUPT_GRACE_S = 10.0
STUDY = {
    "cuda": {"model": "resnet18", "data": {"train_subset": 1024, "val_subset": 128,
                                           "test_subset": 256},
             "train": {"batch_size": 128, "steps": 10, "monitor_subset": 128,
                       "monitor_steps": 10},
             "eval": {"n": 256, "n_autoattack": 32, "batch_size": 256}},
    "cpu": {"model": "cnn_small", "data": {"train_subset": 120, "val_subset": 20,
                                         "test_subset": 40},
            "train": {"batch_size": 40, "steps": 2, "monitor_subset": 20, "monitor_steps": 2},
            "eval": {"n": 40, "n_autoattack": 4, "batch_size": 40}},
}
STUDY_COMMON = {"dataset": "synthetic", "eps": "8/255", "eps_low": "7/255", "epochs": 2,
                "burn_in_epochs": 1, "seeds": [0], "variants": ["baseline", "part"],
                "device": "auto", "eval": {"attacks": ["natural", "pgd20", "autoattack"]}}
STUDY_FILES = (*map(str, PIPELINE_FILES), "params.yaml")
BENCH_CPU_SIZES = ["--n", "32", "--n-eval", "8", "--repeats", "1", "--batch-size", "16"]


@dataclass
class Outcome:
    status: str  # ok | failed | timed_out | skipped | not_run
    detail: dict


class DeviceCheck:
    def __init__(self, out: Path, budget_s: float) -> None:
        self.out = out
        self.started = time.monotonic()
        self.deadline = self.started + budget_s
        self.report: dict = {"check": "device_check", "budget_s": budget_s,
                             "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                             "commit": _commit(), "cuda": None, "parts": {}}
        # `python` and `torchrun` as this interpreter's, first on PATH for dvc.yaml's commands
        # (a machine may have only python3, or torch's scripts off PATH)
        self.bin = out / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        for name, command in (("python", f'exec "{sys.executable}" "$@"'),
                              ("torchrun",
                               f'exec "{sys.executable}" -m torch.distributed.run "$@"')):
            shim = self.bin / name
            shim.write_text(f"#!/bin/sh\n{command}\n")
            shim.chmod(0o755)
        self.env = {**os.environ, "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
                    "PYTHONUNBUFFERED": "1", "DVC_NO_ANALYTICS": "1"}

    def write(self) -> None:
        self.report["wall_s"] = round(time.monotonic() - self.started, 1)
        (self.out / REPORT).write_text(json.dumps(self.report, indent=2) + "\n")

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def part(self, name: str, run: Callable[[float], Outcome], needs_cuda: bool = False) -> str:
        budgets = PART_BUDGETS_S if self.report["cuda"] is not False else CPU_PART_BUDGETS_S
        budget = min(budgets[name], self.left() - 2)
        started = time.monotonic()
        if needs_cuda and not self.report["cuda"]:
            outcome = Outcome("skipped", {"why": "no CUDA device"})
        elif budget < 5:
            outcome = Outcome("not_run", {"why": f"{self.left():.0f} s of the budget left"})
        else:
            try:
                outcome = run(budget)
            except Exception as error:  # noqa: BLE001 (recorded; the next part still runs)
                outcome = Outcome("failed", {"error": f"{type(error).__name__}: {error}"})
        self.report["parts"][name] = {"status": outcome.status, "budget_s": round(budget, 1),
                                      "seconds": round(time.monotonic() - started, 1),
                                      **outcome.detail}
        self.write()
        return outcome.status

    def command(self, name: str, args: list[str], budget: float, cwd: Path = ROOT) -> Outcome:
        """`args` in its own process group under `budget` seconds, output into <name>.log.
        Near the limit the whole group (dvc, torchrun, the stage) is interrupted, so that what
        it has done is written (pytest's junit file of the tests run so far), and killed when
        the limit comes."""
        log = self.out / f"{name}.log"
        with log.open("a") as sink:
            sink.write(f"$ {' '.join(args)}  (in {cwd}, {budget:.0f} s)\n")
            sink.flush()
            process = subprocess.Popen(args, cwd=cwd, env=self.env, stdout=sink,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            grace = min(INTERRUPT_GRACE_S, budget / 4)
            try:
                code = process.wait(timeout=budget - grace)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGINT)
                try:
                    process.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                return Outcome("timed_out", {"log": log.name, "command": " ".join(args)})
        status = "ok" if code == 0 else "failed"
        return Outcome(status, {"log": log.name, "command": " ".join(args), "exit_status": code})


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def missing_packages() -> list[str]:
    return [name for name, module in CARRIED.items() if importlib.util.find_spec(module) is None]


def install(check: DeviceCheck, budget: float) -> Outcome:
    missing = missing_packages()
    if not missing:
        return Outcome("skipped", {"why": "every carried package already imports"})
    if not any(WHEELS.glob("*.whl")):
        return Outcome("failed", {"missing": missing, "error": f"no wheels in {WHEELS}; run "
                                  "scripts/device_wheels.sh on a machine with the registry"})
    base = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(WHEELS),
            "--disable-pip-version-check", "--quiet", *missing]
    started = time.monotonic()
    outcome = check.command("install", base, budget)
    log = (check.out / "install.log").read_text()
    if outcome.status == "failed" and "externally-managed-environment" in log:
        # A distribution's python (PEP 668) on a machine that is thrown away afterwards; the
        # retry has what is left of the install's own budget.
        outcome = check.command("install", [*base, "--break-system-packages"],
                                max(budget - (time.monotonic() - started), 1.0))
    importlib.invalidate_caches()
    still = missing_packages()
    outcome.detail.update({"installed": [name for name in missing if name not in still],
                           "missing": still})
    if still and outcome.status == "ok":
        outcome.status = "failed"
    return outcome


def versions(check: DeviceCheck, budget: float) -> Outcome:
    import torch

    found: dict = {"python": platform.python_version(), "torch": torch.__version__,
                   "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
                   "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
                   "platform": platform.platform()}
    if torch.cuda.is_available():
        found["device_count"] = torch.cuda.device_count()
        found["devices"] = [{"name": torch.cuda.get_device_name(i),
                             "capability": list(torch.cuda.get_device_capability(i)),
                             "memory_gib": round(torch.cuda.get_device_properties(i).total_memory
                                                 / 2**30, 1)}
                            for i in range(torch.cuda.device_count())]
    if shutil.which("nvidia-smi"):
        query = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                "--format=csv,noheader"], capture_output=True, text=True,
                               timeout=budget)
        found["nvidia_smi"] = query.stdout.strip().splitlines() or query.stderr.strip()
    check.report["cuda"] = found["cuda_available"]
    return Outcome("ok", found)


def cuda_tests(check: DeviceCheck, budget: float) -> Outcome:
    junit = check.out / "cuda_tests.xml"
    outcome = check.command("cuda_tests", [sys.executable, "-m", "pytest", "-q", "-m", "cuda",
                                           "-p", "no:cacheprovider", f"--junitxml={junit}",
                                           "tests"], budget)
    if junit.is_file():
        import xml.etree.ElementTree as ElementTree

        suite = ElementTree.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        outcome.detail["tests"] = {key: int(suite.get(key, 0))
                                   for key in ("tests", "failures", "errors", "skipped")}
    return outcome


def study_params(kind: str) -> dict:
    import yaml  # carried: not importable before the install part

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for overrides in (STUDY_COMMON, STUDY[kind]):
        for key, value in overrides.items():
            if isinstance(value, dict):
                params[key] = {**params.get(key, {}), **value}
            else:
                params[key] = value
    return params


def make_study(where: Path, kind: str) -> Path:
    """A copy of this project that `dvc repro` runs: its code, stages and dvc.yaml, the tiny
    study's params, a git repository (without git, DVC alone)."""
    repo = where / "study"
    repo.mkdir()
    for name in STUDY_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, repo / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(source, repo / name)
    import yaml

    (repo / "params.yaml").write_text(yaml.safe_dump(study_params(kind), sort_keys=False))
    (repo / ".gitignore").write_text("/runs/\n/timings/\n__pycache__/\n")
    return repo


def _init(check: DeviceCheck, repo: Path, budget: float) -> Outcome:
    if not shutil.which("git"):
        return check.command("repro", [sys.executable, "-m", "dvc", "init", "-q", "--no-scm"],
                             budget, repo)
    for args in (["git", "init", "-q"], ["git", "config", "user.email", "check@localhost"],
                 ["git", "config", "user.name", "device check"]):
        subprocess.run(args, cwd=repo, check=True, capture_output=True)
    outcome = check.command("repro", [sys.executable, "-m", "dvc", "init", "-q"], budget, repo)
    if outcome.status != "ok":
        return outcome
    # DVCLive logs against a commit: the study is one
    for args in (["git", "add", "-A"], ["git", "commit", "-qm", "device check study"]):
        subprocess.run(args, cwd=repo, check=True, capture_output=True)
    return outcome


def _md5(path: Path) -> str | None:
    return hashlib.md5(path.read_bytes()).hexdigest() if path.is_file() else None


RERUN_OUTPUT = model_path("part", 0)
# The PART run's evaluation and what it needs (prepare, burn-in, training): the baseline's
# stages, the masks gallery and the report would add little but minutes.
REPRO_TARGET = "evaluate@part-0"


def repro(check: DeviceCheck, budget: float, repo: Path) -> Outcome:
    started = time.monotonic()
    outcome = _init(check, repo, budget)
    if outcome.status != "ok":
        return outcome
    outcome = check.command("repro", [sys.executable, "-m", "dvc", "repro", REPRO_TARGET],
                            budget - (time.monotonic() - started), repo)
    metrics = {}
    for path in sorted((repo / "metrics").glob("*.json")) if (repo / "metrics").is_dir() else ():
        metrics[path.name] = json.loads(path.read_text())
    outcome.detail.update({"params": study_params("cuda" if check.report["cuda"] else "cpu"),
                           "metrics": metrics, "md5": _md5(repo / RERUN_OUTPUT)})
    return outcome


def rerun(check: DeviceCheck, budget: float, repo: Path) -> Outcome:
    first = _md5(repo / RERUN_OUTPUT)
    if first is None:
        return Outcome("not_run", {"why": f"the repro wrote no {RERUN_OUTPUT}"})
    outcome = check.command("rerun", [sys.executable, "-m", "dvc", "repro", "-f", "-s",
                                      "train@part-0"], budget, repo)
    second = _md5(repo / RERUN_OUTPUT)
    outcome.detail.update({"output": str(RERUN_OUTPUT), "md5_first": first,
                           "md5_rerun": second, "same_bytes": first == second})
    if outcome.status == "ok" and first != second:
        outcome.status = "failed"
    return outcome


def _epoch_seconds(repo: Path) -> dict | None:
    path = repo / timings_path("train", "part-0")
    return json.loads(path.read_text())["epoch_seconds"] if path.is_file() else None


def compiled(check: DeviceCheck, budget: float, repo: Path) -> Outcome:
    """The PART training again through torch.compile (train.compile), as the pipeline runs it."""
    import yaml  # carried: not importable before the install part

    eager = _epoch_seconds(repo)
    if eager is None:
        return Outcome("not_run", {"why": "the repro trained no part-0"})
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["compile"] = True
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    outcome = check.command("compiled", [sys.executable, "-m", "dvc", "repro", "-s",
                                         "train@part-0"], budget, repo)
    outcome.detail.update({"eager_epoch_s": eager, "compiled_epoch_s": _epoch_seconds(repo),
                           "includes": "the compilation of the first epoch's graphs",
                           "md5": _md5(repo / RERUN_OUTPUT)})
    return outcome


def bench(check: DeviceCheck, budget: float) -> Outcome:
    out = check.out / "bench_quick.json"
    sizes = [] if check.report["cuda"] else BENCH_CPU_SIZES
    outcome = check.command("bench", [sys.executable, "bench/bench_gpu.py", "--quick", *sizes,
                                      "--out", str(out)], budget)
    if out.is_file():
        result = json.loads(out.read_text())
        outcome.detail.update({"report": out.name, "failed": result["failed"],
                               "configurations": len(result["results"]),
                               "paper_run_projection": result["paper_run_projection"]})
    return outcome


def run_check(out: Path, budget_s: float = TOTAL_BUDGET_S) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    check = DeviceCheck(out, budget_s)
    check.write()
    check.part("install", lambda budget: install(check, budget))
    check.part("versions", lambda budget: versions(check, budget))
    check.part("cuda_tests", lambda budget: cuda_tests(check, budget), needs_cuda=True)
    with tempfile.TemporaryDirectory(prefix="device-check-") as temporary:
        kind = "cuda" if check.report["cuda"] else "cpu"
        repo = make_study(Path(temporary), kind)
        check.part("repro", lambda budget: repro(check, budget, repo))
        check.part("rerun", lambda budget: rerun(check, budget, repo))
        check.part("compiled", lambda budget: compiled(check, budget, repo), needs_cuda=True)
        for name in ("dvc.lock", "params.yaml"):
            if (repo / name).is_file():
                shutil.copy(repo / name, out / f"study_{name}")
    check.part("bench", lambda budget: bench(check, budget))
    statuses = [part["status"] for part in check.report["parts"].values()]
    check.report["ok"] = not any(s in ("failed", "timed_out", "not_run") for s in statuses)
    check.write()
    return check.report


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-") or len(argv) not in (1, 3) or (
            len(argv) == 3 and argv[1] != "--budget"):
        print("usage: scripts/device_check.sh OUTDIR [--budget SECONDS]", file=sys.stderr)
        return 2
    budget = TOTAL_BUDGET_S
    if len(argv) == 3:
        try:
            budget = float(argv[2])
        except ValueError:
            budget = 0.0
        if budget <= 0:
            print(f"device_check: --budget must be a positive number of seconds, got "
                  f"{argv[2]!r}", file=sys.stderr)
            return 2
    report = run_check(Path(argv[0]).resolve(), budget)
    summary = ", ".join(f"{name} {part['status']}" for name, part in report["parts"].items())
    print(f"device_check: {summary}; {report['wall_s']} s; report in {argv[0]}/{REPORT}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
