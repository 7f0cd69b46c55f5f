"""CHANGELOG.md follows Keep a Changelog 1.1.0, and its newest release is the package's version.

The checks are functions over text that return a list of problems (empty: none), so the tests
can feed them a broken changelog and see each check fail.
"""

from __future__ import annotations

import ast
import datetime
import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
CHANGELOG = ROOT / "CHANGELOG.md"

KINDS = ("Added", "Changed", "Deprecated", "Removed", "Fixed", "Security")
UNRELEASED = "## [Unreleased]"
RELEASE = re.compile(r"## \[(\d+)\.(\d+)\.(\d+)\] - (\d{4}-\d{2}-\d{2})")
LINK_DEFINITION = re.compile(r"\[([^\]]+)\]:\s*\S+")


def _headed_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line.rstrip()))
    return lines


def form_problems(text: str) -> list[str]:
    """Where `text` departs from Keep a Changelog: `# Changelog`, then `## [Unreleased]`, then
    releases `## [x.y.z] - YYYY-MM-DD` newest first (versions strictly decreasing, dates not
    increasing), each holding only `###` subsections of the six kinds, each kind at most once and
    none empty; link definitions only for headings that exist."""
    problems: list[str] = []
    lines = _headed_lines(text)
    headings = [(n, line) for n, line in lines if line.startswith("#")]
    if not headings or headings[0][1] != "# Changelog":
        problems.append("the first heading is not '# Changelog'")
    sections = [(n, line) for n, line in headings if line.startswith("## ")]
    if not sections or sections[0][1] != UNRELEASED:
        problems.append(f"the first '## ' heading is not '{UNRELEASED}'")

    labels: set[str] = set()
    releases: list[tuple[int, tuple[int, int, int], datetime.date]] = []
    section: str | None = None
    kinds: dict[str, set[str]] = {}
    subsection: tuple[int, str] | None = None
    entries = 0

    def close_subsection() -> None:
        if subsection is not None and entries == 0:
            problems.append(f"line {subsection[0]}: '{subsection[1]}' has no entries")

    for number, line in lines:
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            if level == 2:
                close_subsection()
                subsection, entries = None, 0
                section = line
                kinds.setdefault(section, set())
                if line == UNRELEASED:
                    if "Unreleased" in labels:
                        problems.append(f"line {number}: a second '{UNRELEASED}'")
                    elif releases:
                        problems.append(f"line {number}: '{UNRELEASED}' after a release")
                    labels.add("Unreleased")
                else:
                    match = RELEASE.fullmatch(line)
                    if match is None:
                        problems.append(f"line {number}: '{line}' is neither '{UNRELEASED}' nor "
                                        "'## [x.y.z] - YYYY-MM-DD'")
                        continue
                    version = (int(match[1]), int(match[2]), int(match[3]))
                    try:
                        date = datetime.date.fromisoformat(match[4])
                    except ValueError:
                        problems.append(f"line {number}: {match[4]} is not a date")
                        continue
                    if releases and not version < releases[-1][1]:
                        problems.append(f"line {number}: version {'.'.join(map(str, version))} "
                                        "is not lower than the release above it")
                    if releases and date > releases[-1][2]:
                        problems.append(f"line {number}: {date} is later than the release above")
                    releases.append((number, version, date))
                    labels.add(".".join(map(str, version)))
            elif level == 3:
                close_subsection()
                subsection, entries = (number, line), 0
                kind = line[4:]
                if section is None:
                    problems.append(f"line {number}: '{line}' before any '## ' heading")
                elif kind not in KINDS:
                    problems.append(f"line {number}: '{line}' is not one of "
                                    f"{', '.join(KINDS)}")
                elif kind in kinds[section]:
                    problems.append(f"line {number}: a second '### {kind}' in '{section}'")
                else:
                    kinds[section].add(kind)
            elif level != 1 or number != headings[0][0]:
                problems.append(f"line {number}: '{line}' is not a heading of this form")
        elif line.startswith("- "):
            if subsection is None and section is not None:
                problems.append(f"line {number}: an entry outside a '### ' subsection")
            entries += 1
        elif LINK_DEFINITION.fullmatch(line):
            continue
        elif line.strip() and section is not None and subsection is None:
            problems.append(f"line {number}: text outside a '### ' subsection")
    close_subsection()

    for number, _version, _date in releases:
        section_line = dict(lines)[number]
        if not kinds.get(section_line):
            problems.append(f"line {number}: the release '{section_line}' has no subsection")
    for number, line in lines:
        match = LINK_DEFINITION.fullmatch(line)
        if match and match[1] not in labels:
            problems.append(f"line {number}: the link [{match[1]}] names no heading")
    return problems


def newest_release(text: str) -> str | None:
    """The version of the first release heading, or None."""
    for _number, line in _headed_lines(text):
        match = RELEASE.fullmatch(line)
        if match:
            return f"{match[1]}.{match[2]}.{match[3]}"
    return None


def package_version(init_text: str) -> str | None:
    """`__version__` as part/__init__.py assigns it."""
    for node in ast.parse(init_text).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "__version__"
                and isinstance(node.value, ast.Constant)):
            return str(node.value.value)
    return None


def version_problems(changelog: str, pyproject: str, init: str) -> list[str]:
    """Where the newest release differs from pyproject.toml's and part/__init__.py's version."""
    newest = newest_release(changelog)
    project = tomllib.loads(pyproject)["project"]["version"]
    package = package_version(init)
    problems = []
    if newest is None:
        problems.append("the changelog names no release")
    if newest != project:
        problems.append(f"the newest release is {newest}; pyproject.toml says {project}")
    if newest != package:
        problems.append(f"the newest release is {newest}; part.__version__ is {package}")
    return problems


# --------------------------------------------------------------------------- the real files


def test_changelog_follows_keep_a_changelog():
    assert form_problems(CHANGELOG.read_text(encoding="utf-8")) == []


def test_newest_release_is_the_package_version():
    import part

    changelog = CHANGELOG.read_text(encoding="utf-8")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    init = (ROOT / "part" / "__init__.py").read_text(encoding="utf-8")
    assert version_problems(changelog, pyproject, init) == []
    assert newest_release(changelog) == part.__version__


# --------------------------------------------------------------------------- broken on purpose

GOOD = """# Changelog

Text about the format.

## [Unreleased]

### Fixed
- a fix

## [0.2.0] - 2026-12-09

### Added
- a feature

### Changed
- a change

## [0.1.0] - 2026-12-07

### Added
- the first release
"""


def test_a_good_changelog_passes():
    assert form_problems(GOOD) == []
    assert form_problems(GOOD.replace("### Fixed\n- a fix\n\n", "")) == []  # empty Unreleased
    assert newest_release(GOOD) == "0.2.0"


@pytest.mark.parametrize(("old", "new", "found"), [
    ("## [Unreleased]\n\n### Fixed\n- a fix\n\n", "", "is not '## [Unreleased]'"),
    ("# Changelog", "# Change log", "is not '# Changelog'"),
    ("## [0.2.0] - 2026-12-09", "## 0.2.0 - 2026-12-09", "is neither"),
    ("## [0.2.0] - 2026-12-09", "## [0.2.0] 2026-12-09", "is neither"),
    ("## [0.2.0] - 2026-12-09", "## [v0.2.0] - 2026-12-09", "is neither"),
    ("## [0.2.0] - 2026-12-09", "## [0.2.0] - 2026-13-09", "is not a date"),
    ("## [0.2.0] - 2026-12-09", "## [0.0.9] - 2026-12-09", "is not lower"),
    ("## [0.2.0] - 2026-12-09", "## [0.1.0] - 2026-12-09", "is not lower"),
    ("## [0.2.0] - 2026-12-09", "## [0.2.0] - 2026-12-01", "is later"),
    ("### Changed", "### Improved", "is not one of"),
    ("### Changed", "### Added", "a second '### Added'"),
    ("### Changed\n- a change\n", "### Changed\n", "has no entries"),
    ("### Fixed\n- a fix\n", "### Fixed\n", "has no entries"),
    ("## [0.1.0] - 2026-12-07\n\n### Added\n", "## [0.1.0] - 2026-12-07\n\n", "outside"),
    ("- the first release\n", "- the first release\n\n## [Unreleased]\n", "a second"),
    ("### Added\n- a feature", "#### Added\n- a feature", "not a heading of this form"),
])
def test_each_form_check_fails_on_a_bad_text(old, new, found):
    bad = GOOD.replace(old, new, 1)
    assert bad != GOOD
    problems = form_problems(bad)
    assert any(found in problem for problem in problems), problems


def test_a_release_without_subsections_fails():
    bad = GOOD.replace("### Added\n- the first release\n", "")
    assert any("has no subsection" in p for p in form_problems(bad))


def test_link_definitions_must_name_a_heading():
    linked = GOOD + "\n[Unreleased]: https://example.org/compare\n[0.2.0]: https://example.org/t\n"
    assert form_problems(linked) == []
    dangling = GOOD + "\n[0.3.0]: https://example.org/t\n"
    assert any("names no heading" in p for p in form_problems(dangling))


def test_headings_inside_code_fences_are_text():
    fenced = GOOD.replace("- a feature\n", "- a feature:\n  ```bash\n  # a comment\n  ```\n")
    assert form_problems(fenced) == []


PYPROJECT = '[project]\nname = "part"\nversion = "0.2.0"\n'
INIT = '"""The package."""\n\n__version__ = "0.2.0"\n'


def test_the_version_check_passes_on_agreeing_texts():
    assert version_problems(GOOD, PYPROJECT, INIT) == []


@pytest.mark.parametrize(("changelog", "pyproject", "init", "found"), [
    (GOOD.replace("[0.2.0]", "[0.3.0]"), PYPROJECT, INIT, "pyproject.toml says 0.2.0"),
    (GOOD, PYPROJECT.replace("0.2.0", "0.2.1"), INIT, "pyproject.toml says 0.2.1"),
    (GOOD, PYPROJECT, INIT.replace("0.2.0", "0.1.0"), "part.__version__ is 0.1.0"),
    (GOOD, PYPROJECT, '"""No version."""\n', "part.__version__ is None"),
    ("# Changelog\n\n## [Unreleased]\n", PYPROJECT, INIT, "names no release"),
])
def test_the_version_check_fails_on_a_mismatch(changelog, pyproject, init, found):
    problems = version_problems(changelog, pyproject, init)
    assert any(found in problem for problem in problems), problems
