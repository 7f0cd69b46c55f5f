"""The README and the study's page cannot fall behind the code: the README's table of the default
run is the committed report's, its wall times are those of the result files it names, and the
study page's staleness check of the committed study does what the page says it does."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _table_after(text: str, heading: str) -> list[str]:
    """The first markdown table after `heading`: its lines, header included."""
    rest = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(rest) if line.startswith("|"))
    end = next((i for i in range(start, len(rest)) if not rest[i].startswith("|")), len(rest))
    return rest[start:end]


def test_the_default_runs_table_is_the_committed_reports():
    readme = (ROOT / "README.md").read_text()
    report = (ROOT / "reports" / "results.md").read_text()
    assert _table_after(readme, "## The default run") == _table_after(report, "## Accuracy")


def test_the_studys_dry_run_lists_only_the_seeds_not_yet_committed():
    """The study page's check, as it is written there, on this checkout: every stage
    `dvc repro --allow-missing --dry` would run belongs to a seed without committed summaries,
    or is the report; a finished seed whose code, params or commands moved would show here."""
    page = (ROOT / "docs" / "study.md").read_text()
    assert "cd study && dvc repro --allow-missing\n--dry --keep-going`" in page
    # a new seed's stages that need its run directory fail the dry run: --keep-going names them
    result = subprocess.run([shutil.which("dvc") or "dvc", "repro", "--allow-missing", "--dry",
                             "--keep-going"], cwd=ROOT / "study", capture_output=True, text=True)
    failed = re.findall(r"'([a-z_]+@[^']+)'", result.stderr.split("failed to reproduce")[-1])
    committed = {path.parent.name for path in (ROOT / "study" / "summaries").glob("*/*.json")}
    for stage in re.findall(r"Running stage '([^']+)'", result.stdout) + failed:
        if stage == "report":
            continue
        seed = stage.split("@")[1].split("-")[0]
        assert seed not in committed, (stage, result.stdout)




def _wall_time_text(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def test_the_wall_times_are_those_of_the_result_files_named():
    readme = (ROOT / "README.md").read_text()
    rows = _table_after(readme, "## Two commands")[2:]
    assert {row.split("|")[1].strip() for row in rows} == {"`make repro`", "`make test`"}
    for row in rows:
        command, wall, commit, what, result = (cell.strip() for cell in row.split("|")[1:6])
        measured = json.loads((ROOT / result.strip("`")).read_text())
        assert command == f"`{measured['command']}`" and measured["exit_code"] == 0, row
        assert wall == _wall_time_text(measured["wall_s"]), (row, measured["wall_s"])
        assert commit == measured["commit"] and "2 cores" in measured["machine"], row
        if "outcome" in measured:
            outcome = measured["outcome"]
            passed = outcome["tests"] - outcome["failures"] - outcome["errors"] - outcome["skipped"]
            assert what.startswith(f"{passed} passed, {outcome['skipped']} skipped"), row


def test_the_default_runs_reading_is_what_its_report_shows():
    """The README's reading of the table: the intervals overlap in every row and no paired
    McNemar test of the report is significant at 0.05."""
    readme = (ROOT / "README.md").read_text()
    assert "intervals overlap in every row" in readme and "significant at 0.05" in readme
    report = (ROOT / "reports" / "results.md").read_text()
    for row in _table_after(report, "## Accuracy")[2:]:
        (low_a, high_a), (low_b, high_b) = (
            map(float, interval) for interval in re.findall(r"\[([0-9.]+), ([0-9.]+)\]", row))
        assert low_a <= high_b and low_b <= high_a, row
    p_values = [float(p) for p in re.findall(
        r"\(p=([0-9.e-]+)\)", report.split("McNemar's exact test", 1)[1])]
    assert p_values and min(p_values) > 0.05


def test_the_default_runs_table_names_the_commit_that_wrote_the_report():
    readme = " ".join((ROOT / "README.md").read_text().split())
    match = re.search(r"`reports/results\.md`, written by `dvc repro` at commit ([0-9a-f]{7,})",
                      readme)
    assert match, "the README names no commit for the default run's report"
    commit = match.group(1)
    if subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=ROOT).returncode:
        pytest.skip(f"commit {commit} is not in this clone's history (a shallow clone)")
    written = subprocess.run(["git", "show", f"{commit}:reports/results.md"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    assert written == (ROOT / "reports" / "results.md").read_text()
