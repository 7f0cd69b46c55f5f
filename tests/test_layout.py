"""The package's shape (docs: the architecture): packages by concern, imports that go one way
(a floor imports only its own floor and those below it), no import circle, no function over 80
lines and no module over 450. The graph is read from the sources with `ast`, every import
counted, the ones inside functions too; graphlib (the standard library's) finds the circles."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "part"

# Lowest first. A top-level module of part/ not named here is a face kept for a documented
# import path (README, "Public API"), and sits on the top floor.
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
    ["part.stage", "part.pipeline", "part.cli"],
]
KEPT_PATHS = {"part.cam", "part.mask_rules", "part.checkpoint", "part.evaluate",
              "part.budget_trace", "part.launch"}
PACKAGES = ["part.io", "part.runtime", "part.data", "part.models", "part.importance",
            "part.attacks", "part.training", "part.evaluation", "part.study"]
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 450


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))
            if "__pycache__" not in path.parts}


def _imports(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports, `from a.b import c` naming a.b.c where c is a module."""
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


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}


def _floor(module: str) -> int:
    for index, floor in enumerate(FLOORS):
        for unit in floor:
            if module == unit or (unit != "part" and module.startswith(unit + ".")):
                return index
    assert module in KEPT_PATHS, f"{module}: on no floor; add it to a package"
    return len(FLOORS)


def test_every_module_sits_on_a_floor_and_imports_only_downwards():
    wrong = [f"{module} (floor {_floor(module)}) imports {target} (floor {_floor(target)})"
             for module, targets in _graph().items() for target in sorted(targets)
             if _floor(target) > _floor(module)]
    assert not wrong, "\n".join(wrong)


def test_no_import_circle():
    graph = _graph()
    # a package's face importing its own modules is how a face works, not a circle
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as circle:
        pytest.fail(f"import circle: {' -> '.join(circle.args[1])}")


def test_the_top_level_holds_only_what_ties_the_packages():
    top = {name for name in _modules() if name.count(".") == 1
           and not (PACKAGE / name.split(".")[1]).is_dir()}
    assert top == {"part.errors", "part.ui", "part.params", "part.stage", "part.pipeline",
                   "part.cli"} | KEPT_PATHS


def test_every_package_face_is_a_map_of_its_package():
    for name in PACKAGES:
        face = PACKAGE / name.split(".")[1] / "__init__.py"
        doc = ast.get_docstring(ast.parse(face.read_text()))
        assert doc, f"{face}: no docstring"
        modules = [path.stem for path in face.parent.glob("*.py") if path.stem != "__init__"]
        missing = [module for module in modules if f"`{module}`" not in doc]
        assert not missing, f"{face}: the map does not name {missing}"


def test_no_function_over_80_lines_and_no_module_over_450():
    long = []
    for path in _modules().values():
        source = path.read_text()
        if source.count("\n") > MAX_MODULE_LINES:
            long.append(f"{path.relative_to(ROOT)}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}: {node.name} has {lines} lines")
    assert not long, "\n".join(long)
