"""The README's two commands as a new user runs them: a fresh clone of a commit, then `make repro`,
`make test` or `make test-fast` (venv included) under `env -i` with the system's python3 (Debian's
/usr/bin/python3 on Debian 12), timed as a whole. For the tests the per-file seconds come from
pytest's JUnit XML (each test's setup, call and teardown; under pytest-xdist the files run two at
a time, so they add up to more than the wall time).

    python bench/fresh_clone.py test  --out bench/results/cpu-2core-make-test-<commit>.json
    python bench/fresh_clone.py repro --out bench/results/cpu-2core-make-repro-<commit>.json
    python bench/fresh_clone.py test --rev 6d2cd0e --out ...   # another commit, for a before
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
USER_PATH = "/usr/local/bin:/usr/bin:/bin"  # a login shell's, without this image's pyenv


def _per_file(junit: Path) -> tuple[dict[str, float], dict[str, int]]:
    seconds: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        # "tests.test_caching" or "tests.test_caching.SomeClass": the test file's module
        parts = case.get("classname", "").split(".")
        name = next((part for part in parts if part.startswith("test_")), parts[0]) + ".py"
        seconds[name] += float(case.get("time", 0))
        counts[name] += 1
    return dict(sorted(seconds.items(), key=lambda item: -item[1])), dict(counts)


def _outcome(junit: Path) -> dict[str, int]:
    suites = ElementTree.parse(junit).getroot()
    suite = suites if suites.tag == "testsuite" else suites.find("testsuite")
    return {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=["repro", "test", "test-fast"])
    parser.add_argument("--rev", default="HEAD", help="the commit to clone (default: HEAD)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--keep", type=Path, help="clone here and keep it (default: a temp dir)")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", args.rev], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    work = args.keep or Path(tempfile.mkdtemp(prefix="fresh-clone-"))
    clone = work / "part"
    subprocess.run(["git", "clone", "-q", "--no-local", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", commit], cwd=clone, check=True)
    junit = work / "junit.xml"
    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": USER_PATH, "LANG": "C.UTF-8"}
    if args.target.startswith("test"):
        env["PYTEST_ADDOPTS"] = f"--junitxml={junit}"
    log = work / f"make-{args.target}.log"
    started = time.monotonic()
    with open(log, "w") as output:
        code = subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), "make",
                               args.target], cwd=clone, stdout=output,
                              stderr=subprocess.STDOUT).returncode
    wall = time.monotonic() - started
    result = {"command": f"make {args.target}", "commit": commit, "exit_code": code,
              "wall_s": round(wall, 1), "machine": f"{platform.machine()}, "
              f"{os.cpu_count()} cores, {platform.platform()}",
              "python": subprocess.run(["env", "-i", f"PATH={USER_PATH}", "python3", "-V"],
                                       capture_output=True, text=True).stdout.strip(),
              "log": str(log)}
    if args.target.startswith("test") and junit.exists():
        seconds, counts = _per_file(junit)
        result["outcome"] = _outcome(junit)
        result["seconds_by_file"] = {name: round(value, 1) for name, value in seconds.items()}
        result["tests_by_file"] = counts
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({key: result[key] for key in ("command", "commit", "exit_code", "wall_s")}))


if __name__ == "__main__":
    main()
