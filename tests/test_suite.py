"""The test suite itself: it runs with and without pytest-xdist (the GPU machine's device check
runs `pytest -m cuda` where xdist may be absent), and its groups keep each file in one worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import TINY_GROUP, group_of

ROOT = Path(__file__).resolve().parents[1]


def test_the_suite_runs_without_pytest_xdist():
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "-p",
                             "no:cacheprovider", "-q", "tests/test_readme.py"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout, result.stdout


def test_the_shared_tiny_repros_files_are_one_group_and_every_other_file_its_own():
    assert group_of("tests/test_pipeline.py::test_a[x]") == TINY_GROUP
    assert group_of("tests/test_sweep.py::test_b") == TINY_GROUP
    assert group_of("tests/test_caching.py::test_c[burnin@0]") == "test_caching"
    assert group_of("tests/test_cli.py::TestX::test_d") == "test_cli"
