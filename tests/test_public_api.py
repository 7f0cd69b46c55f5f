"""Every name of the "Public API" block of docs/api.md imports from where the block says, with the
parameters it documents, so that a notebook written against it keeps working when modules move
(importance_mask once moved out of part.cam and its old import broke). The old paths (part.cam,
part.checkpoint, ...) and the package faces give the very same functions."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The documented parameters, in order: a rename, a removal or a reordering breaks callers.
SIGNATURES = {
    "build_model": ["name", "num_classes", "in_channels", "cam_layer"],
    "pgd": ["model", "x", "y", "eps", "step_size", "steps", "random_start", "loss", "target",
            "clean_logits", "start", "start_eps", "draws"],
    "cam": ["model", "x", "method", "layer", "class_idx"],
    "importance_mask": ["cams", "image_shape", "rule", "rule_args"],
    "budget_map": ["mask", "eps", "eps_low"],
    "load_trace": ["path"],
    "save_checkpoint": ["path", "model", "meta", "extra_tensors"],
    "load_checkpoint": ["path", "device", "expect"],
    "read_metadata": ["path"],
    "evaluate_checkpoint": ["checkpoint", "data", "attacks", "eps", "step_size", "steps", "n",
                            "n_autoattack", "batch_size", "seed", "device", "expect", "masks",
                            "autoattack_version", "keep_adversarial", "progress"],
    "evaluate_model": ["model", "images", "labels", "attacks", "eps", "step_size", "steps", "n",
                       "n_autoattack", "batch_size", "seed", "device", "masks",
                       "autoattack_version", "keep_adversarial", "progress"],
    "load_params": ["path", "only"],
}


def _block() -> list[str]:
    page = (ROOT / "docs" / "api.md").read_text()
    block = page.split("# Public API", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.startswith("from ")]


def _public_imports() -> list[tuple[str, str, str]]:
    """(module, name, the line's comment)"""
    found = []
    for line in _block():
        code, _, comment = line.partition("#")
        match = re.match(r"from ([\w.]+) import ([\w, ]+)", code.strip())
        assert match, line
        found += [(match.group(1), name.strip(), comment) for name in match.group(2).split(",")]
    return found


def _documented_parameters(name: str, comment: str) -> list[str] | None:
    """The parameter names a comment's `name(a, b=1, *, c=None, ...)` spells out, in order."""
    match = re.search(rf"\b{name}\((.*?)\)\s*->", comment)
    if not match:
        return None
    names = []
    for word in match.group(1).split(","):
        word = word.strip()
        if word in ("*", "...", "") or word.startswith("..."):
            continue
        names.append(word.lstrip("*").split("=", 1)[0].strip())
    return names


def test_the_block_lists_the_design_documents_api():
    names = {(module, name) for module, name, _ in _public_imports()}
    for entry in [("part.models", "build_model"), ("part.attacks", "pgd"), ("part.cam", "cam"),
                  ("part.cam", "importance_mask"), ("part.checkpoint", "save_checkpoint"),
                  ("part.checkpoint", "load_checkpoint"), ("part.importance", "cam"),
                  ("part.evaluation", "evaluate_checkpoint")]:
        assert entry in names, entry


def test_every_listed_name_imports_with_its_documented_parameters():
    for module, name, comment in _public_imports():
        value = getattr(importlib.import_module(module), name, None)
        assert callable(value), f"from {module} import {name}"
        parameters = list(inspect.signature(value).parameters)
        assert parameters == SIGNATURES[name], f"{module}.{name}{inspect.signature(value)}"
        spelled = _documented_parameters(name, comment)
        if spelled is not None:  # the comment's own signature: the first parameters, in order
            assert parameters[:len(spelled)] == spelled, (f"{module}.{name}: docs/api.md says "
                                                          f"{spelled}, the code {parameters}")


def test_each_name_is_one_function_wherever_it_is_imported_from():
    by_name: dict[str, set[int]] = {}
    for module, name, _ in _public_imports():
        by_name.setdefault(name, set()).add(id(getattr(importlib.import_module(module), name)))
    assert {name: len(ids) for name, ids in by_name.items()} == {name: 1 for name in by_name}
    from part.importance.mask_rules import importance_mask

    assert importlib.import_module("part.cam").importance_mask is importance_mask


def test_no_documented_module_answers_through_a_module_getattr():
    for module in {module for module, _, _ in _public_imports()}:
        assert "__getattr__" not in vars(importlib.import_module(module)), module
