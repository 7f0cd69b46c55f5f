"""The README's tour names every module of the package, so that it cannot fall behind the code."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_tour_names_every_module():
    readme = (ROOT / "README.md").read_text()
    tour = readme.split("## A short tour", 1)[1].split("```", 2)[1]
    modules = [path for path in sorted((ROOT / "part").rglob("*.py"))
               if path.name != "__init__.py" and "models" not in path.parts]
    missing = [str(path.relative_to(ROOT)) for path in modules if path.name not in tour]
    assert not missing, f"add these to the README's tour: {missing}"
