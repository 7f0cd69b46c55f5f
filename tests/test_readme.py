"""The README cannot fall behind the code: its tour names every module of the package, its
table of the default run is the committed report's, and its staleness check of the committed study
says what the README says it does."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_tour_names_every_module():
    readme = (ROOT / "README.md").read_text()
    tour = readme.split("## A short tour", 1)[1].split("```", 2)[1]
    modules = [path for path in sorted((ROOT / "part").rglob("*.py"))
               if path.name != "__init__.py" and "models" not in path.parts]
    missing = [str(path.relative_to(ROOT)) for path in modules if path.name not in tour]
    assert not missing, f"add these to the README's tour: {missing}"


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
    """The README's check, as it is written there, on this checkout: every stage
    `dvc repro --allow-missing --dry` would run belongs to a seed without committed summaries,
    or is the report; a finished seed whose code, params or commands moved would show here."""
    readme = (ROOT / "README.md").read_text()
    assert "cd study && dvc repro --allow-missing\n--dry --keep-going`" in readme
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


