"""Every file the project's code, comments and docs point at is in the repository: a path such as
`part/io/atomic.py` or `tests/test_caching.py` named in a source, config or doc file exists (the
changelog, which names the paths files had, aside), and nothing cites a design document the
repository does not hold."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# a repository path: a top-level folder of the project, then a file with a suffix
FOLDERS = "part|stages|tests|bench|scripts|study|configs|docs"
REFERENCE = re.compile(rf"(?<![\w./-])((?:\.\./)*(?:{FOLDERS})"
                       r"/[\w./-]*\w\.(?:py|sh|yaml|md|json|toml))")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".cfg"}


def _tracked() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    return [ROOT / name for name in listed if Path(name).suffix in SUFFIXES
            or Path(name).name in {"Makefile", "run"}]


def _exists(reference: str, source: Path) -> bool:
    path = reference
    while path.startswith("../"):
        path = path[3:]
    # a stage with a wdir names files relative to it: the project root or the file's own folder
    return (ROOT / path).exists() or (source.parent / reference).exists()


def test_every_named_repository_file_exists():
    missing = []
    for source in _tracked():
        if source.name == "CHANGELOG.md":
            continue  # it names the paths files had
        for number, line in enumerate(source.read_text(errors="replace").splitlines(), 1):
            for match in REFERENCE.finditer(line):
                reference = match.group(1)
                if line[:match.start()].endswith(("--out ", "--out=")):
                    continue  # a file the command writes
                if not _exists(reference, source):
                    missing.append(f"{source.relative_to(ROOT)}:{number}: {reference}")
    assert not missing, "\n".join(missing)


def test_nothing_cites_a_design_document_outside_the_repository():
    cited = [f"{source.relative_to(ROOT)}:{number}"
             for source in _tracked() if source.name != "test_references.py"
             for number, line in enumerate(source.read_text(errors="replace").splitlines(), 1)
             if re.search(r"\bDESIGN\b", line)]
    assert not cited, cited
