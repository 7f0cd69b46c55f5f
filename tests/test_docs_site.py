"""The documentation as a reader meets it: a README short enough to read, whose links lead
somewhere; a docs/ site that MkDocs builds in strict mode (a broken link, a missing page or an
anchor that does not exist fails the build); and pages that describe the software, not its
history, which belongs in CHANGELOG.md and git."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

# Wording that tells how the project or its figures came to be, rather than what the software
# does: the history belongs in CHANGELOG.md and the commit log.
HISTORY_WORDING = [
    r"previous (version|session|stop|run of this|table)",
    r"fixed since",
    r"so far",
    r"\bsessions?\b",
    r"\b(this|last|next|previous) stop\b",
    r"earlier version",
    r"\bno longer\b",
    r"\bused to\b",
    r"\bnot yet\b",
    r"\bmoved from\b",
    r"\bwe (measured|found|fixed|ran|changed)\b",
    r"\b(yesterday|last week)\b",
]


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def test_the_readme_is_a_front_page():
    assert len(README.read_text().splitlines()) <= 250


def _slug(heading: str) -> str:
    """The anchor Python-Markdown's toc extension gives a heading (MkDocs' default)."""
    text = re.sub(r"[^\w\s-]", "", heading.strip().lower())
    return re.sub(r"[-\s]+", "-", text).strip("-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def test_every_link_of_the_readme_leads_to_a_file_and_anchor_that_exist():
    text = README.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        target, _, anchor = link.partition("#")
        page = ROOT / target if target else README
        assert page.is_file(), f"README links to {link}: no such file"
        if anchor:
            assert anchor in _anchors(page), f"README links to {link}: no such heading"


def test_every_page_of_the_site_is_in_its_navigation():
    config = (ROOT / "mkdocs.yml").read_text()
    missing = [page.name for page in DOCS.glob("*.md") if f": {page.name}" not in config]
    assert not missing, f"add these pages to mkdocs.yml's nav: {missing}"


def _build(config_dir: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "--site-dir", str(site)], cwd=config_dir, capture_output=True,
                          text=True)


def test_the_site_builds_in_strict_mode(tmp_path):
    result = _build(ROOT, tmp_path / "site")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "params" / "index.html").is_file()


@pytest.mark.parametrize("broken", ["[a page](no-such-page.md)",
                                    "[an anchor](training.md#no-such-heading)"])
def test_a_broken_link_fails_the_build(tmp_path, broken):
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    index = tmp_path / "docs" / "index.md"
    index.write_text(index.read_text() + f"\nSee {broken}.\n")
    result = _build(tmp_path, tmp_path / "site")
    assert result.returncode != 0
    assert broken.split("(")[1].rstrip(")").split("#")[-1] in result.stderr


def test_the_pages_describe_the_software_not_its_history():
    found = []
    for page in _pages():
        for number, line in enumerate(page.read_text().splitlines(), 1):
            found += [f"{page.relative_to(ROOT)}:{number}: {line.strip()}"
                      for pattern in HISTORY_WORDING if re.search(pattern, line, re.I)]
    assert not found, "history wording (move it to CHANGELOG.md):\n" + "\n".join(found)


def test_the_training_pages_mask_share_is_the_studys_summary():
    """The measured figure of the differences table is read from the summary it names."""
    text = " ".join((DOCS / "training.md").read_text().split())
    match = re.search(r"PART's mean budget is ([0-9.]+)% of eps, about ([0-9]+)% of the pixels "
                      r"kept at eps \(.*?`dose` in `(study/summaries/[0-9]+/official-7of8\.json)`",
                      text)
    assert match, "the differences table names no mask share and summary"
    summary = json.loads((ROOT / match.group(3)).read_text())
    kept = (summary["dose"] - summary["eps_low"] / summary["eps"]) / (
        1 - summary["eps_low"] / summary["eps"])
    assert float(match.group(1)) == round(100 * summary["dose"], 1)
    assert int(match.group(2)) == round(100 * kept)
