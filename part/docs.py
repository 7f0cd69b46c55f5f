"""The documentation pages drawn from the code, so that they cannot drift from it.

`docs/architecture.md` is the package map (each package's face docstring, its modules and the
packages it imports, read with `ast`) and the data flow of the main pipeline (the stages of
dvc.yaml as DVC resolves them, each edge the file one stage writes and the next reads).
`python -m part.docs` writes the pages; a test fails when a committed page is not what the
code gives.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "part"

# The import floors, lowest first: a module imports only its own floor and those below it
# (tests/test_layout.py). A top-level module of part/ named in KEPT_PATHS is a face kept for a
# documented import path and sits above every floor.
FLOORS = [
    ["part", "part.errors"],
    ["part.ui"],
    ["part.io"],
    ["part.runtime"],
    ["part.data"],
    ["part.models"],
    ["part.importance"],
    ["part.attacks"],
    ["part.params"],
    ["part.training"],
    ["part.evaluation"],
    ["part.study"],
    ["part.stage", "part.pipeline", "part.cli", "part.docs"],
]
KEPT_PATHS = {"part.cam", "part.mask_rules", "part.checkpoint", "part.evaluate",
              "part.budget_trace", "part.launch"}
PACKAGES = ["part.io", "part.runtime", "part.data", "part.models", "part.importance",
            "part.attacks", "part.training", "part.evaluation", "part.study"]
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))
            if "__pycache__" not in path.parts}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports, `from a.b import c` naming a.b.c where c is a module;
    imports inside functions count too."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in known:
                found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names
                      if f"{node.module}.{alias.name}" in known}
    return found


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(path, set(found)) - {name} for name, path in found.items()}


def floor_of(module: str) -> int:
    for index, floor in enumerate(FLOORS):
        for unit in floor:
            if module == unit or (unit != "part" and module.startswith(unit + ".")):
                return index
    if module in KEPT_PATHS:
        return len(FLOORS)
    raise LookupError(f"{module}: on no floor; add it to a package")


def _unit_of(module: str) -> str:
    """The package (or top-level module) a module belongs to."""
    return next((package for package in PACKAGES
                 if module == package or module.startswith(package + ".")), module)


def _package_rows() -> list[str]:
    graph = import_graph()
    rows = ["| floor | package | what it holds | its modules | imports |",
            "|---:|---|---|---|---|"]
    units = [unit for floor in FLOORS for unit in floor if unit != "part"]
    for unit in units:
        if unit in PACKAGES:
            face = PACKAGE / unit.split(".")[1] / "__init__.py"
            members = sorted(path.stem for path in face.parent.glob("*.py")
                             if path.stem != "__init__")
        else:
            face = PACKAGE / f"{unit.split('.')[1]}.py"
            members = []
        summary = (ast.get_docstring(ast.parse(face.read_text())) or "").split("\n\n")[0]
        used = sorted({_unit_of(target) for module, targets in graph.items()
                       if _unit_of(module) == unit for target in targets} - {unit, "part"},
                      key=lambda name: (floor_of(name), name))
        rows.append(f"| {floor_of(unit)} | `{unit}` | {' '.join(summary.split())} | "
                    f"{', '.join(f'`{member}`' for member in members) or '-'} | "
                    f"{', '.join(f'`{name}`' for name in used) or '-'} |")
    return rows


def _stage_flow(stages: Iterable) -> list[str]:
    """A mermaid flowchart: one node per stage, one edge per file a stage reads from another."""
    stages = list(stages)
    written = [(str(out), stage.addressing) for stage in stages for out in stage.outs]
    ids = {stage.addressing: f"s{index}" for index, stage in enumerate(stages)}
    lines = ["```mermaid", "flowchart TD"]
    lines += [f'  {ids[stage.addressing]}["{stage.addressing}"]' for stage in stages]
    for stage in stages:
        for dep in map(str, stage.deps):
            # a directory dep (the report reads metrics/) is fed by every stage writing in it
            sources = dict.fromkeys(source for out, source in written
                                    if out == dep or out.startswith(dep + "/"))
            lines += [f'  {ids[source]} -- "{dep}" --> {ids[stage.addressing]}'
                      for source in sources if source != stage.addressing]
    return [*lines, "```"]


def _stage_rows(stages: Iterable) -> list[str]:
    rows = ["| stage | command | writes |", "|---|---|---|"]
    for stage in stages:
        command = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)
        outs = ", ".join(f"`{out}`" for out in stage.outs)
        rows.append(f"| `{stage.addressing}` | `{command}` | {outs} |")
    return rows


def main_pipeline_stages(root: Path = ROOT) -> list:
    """The stages of the main pipeline (dvc.yaml at the root), in dvc.yaml's order."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return [stage for stage in repo.index.stages
                if Path(stage.path).resolve() == (root / "dvc.yaml").resolve()]


def architecture_page() -> str:
    stages = main_pipeline_stages()
    lines = [
        "# Architecture",
        "",
        "<!-- written by `python -m part.docs` from the code; edit the code, not this page -->",
        "",
        "`part/` is the library, all of its logic; `stages/` holds one thin Typer command per",
        "DVC stage and `part.cli` the `part-cli` command. The packages sit on floors: a module",
        "imports only from its own floor and the floors below it, and no import circle exists",
        "(`tests/test_layout.py`). Each package's face (`__init__.py`) is the map of that",
        "package; the first paragraph of each is below.",
        "",
        "## Package map",
        "",
        *_package_rows(),
        "",
        "Kept for documented import paths, above every floor: "
        + ", ".join(f"`{name}`" for name in sorted(KEPT_PATHS)) + ".",
        "",
        "## Data flow",
        "",
        "The main pipeline, `dvc.yaml` with the default `params.yaml` (one seed, no controls):",
        "each arrow is a file one stage writes and the next one reads. A stage reruns when",
        "one of its deps (these files, its params, its code) changes. A stage that feeds no",
        "other one writes what a person looks at: `masks@<seed>` the burn-in model's masks",
        "and their gallery (each training computes its masks itself, from the same weights),",
        "`report` the tables and the plot.",
        "",
        *_stage_flow(stages),
        "",
        *_stage_rows(stages),
        "",
    ]
    return "\n".join(lines)


PAGES = {ARCHITECTURE: architecture_page}


def main() -> int:
    from part.io.atomic import atomic_write_text

    for path, build in PAGES.items():
        atomic_write_text(path, build())
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
