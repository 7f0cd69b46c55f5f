"""The package's shape (docs: the architecture): packages by concern, imports that go one way
(a floor imports only its own floor and those below it), no import circle, no function over 80
lines and no module over 450. The graph is read from the sources with `ast`, every import
counted, the ones inside functions too; graphlib (the standard library's) finds the circles."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

from part.docs import (
    ARCHITECTURE,
    KEPT_PATHS,
    PACKAGES,
    architecture_page,
    floor_of,
    import_graph,
    modules,
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "part"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 450
_graph, _modules, _floor = import_graph, modules, floor_of


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
                   "part.cli", "part.docs"} | KEPT_PATHS


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


def test_the_architecture_page_is_what_the_code_gives():
    """docs/architecture.md is generated (`python -m part.docs`): its package map and data flow
    are today's faces, imports and dvc.yaml."""
    assert ARCHITECTURE.read_text() == architecture_page(), "run `python -m part.docs`"
