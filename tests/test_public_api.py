"""Every name of the README's "Public API" block imports from where the block says, so that a
notebook written against it keeps working when modules move (importance_mask once moved out of
part.cam and its old import broke)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _public_imports() -> list[tuple[str, str]]:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("### Public API", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    found = []
    for line in block.splitlines():
        match = re.match(r"from ([\w.]+) import ([\w, ]+)", line.split("#", 1)[0].strip())
        if match:
            found += [(match.group(1), name.strip()) for name in match.group(2).split(",")]
    return found


def test_the_block_lists_the_design_documents_api():
    names = set(_public_imports())
    for entry in [("part.models", "build_model"), ("part.attacks", "pgd"), ("part.cam", "cam"),
                  ("part.cam", "importance_mask"), ("part.checkpoint", "save_checkpoint"),
                  ("part.checkpoint", "load_checkpoint")]:
        assert entry in names, entry


def test_every_listed_name_imports_from_its_listed_module():
    for module, name in _public_imports():
        value = getattr(importlib.import_module(module), name, None)
        assert callable(value), f"from {module} import {name}"
    # the old place and the new one give the same function
    from part.cam import importance_mask as old_place
    from part.mask_rules import importance_mask as new_place

    assert old_place is new_place
