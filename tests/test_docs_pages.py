"""The generated pages (part/docs.py) say what the code and dvc.yaml say: docs/params.md is what
`python -m part.docs` builds, it describes every key of the params and no other, its stages
column agrees with a reading of dvc.yaml made here, and the architecture page's module table
names every module of part/. The readings below are this file's own (dataclasses, yaml), not
part.docs', so that a mistake in part.docs cannot agree with itself."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from part.docs import DESCRIPTIONS, PARAMS_PAGE, architecture_page, params_page
from part.params import Params

ROOT = Path(__file__).resolve().parents[1]
DVC_STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _dataclass_keys(cls: type = Params, prefix: str = "") -> set[str]:
    """Every field of Params as a dotted key, a nested dataclass's fields under its name."""
    keys = set()
    for field in dataclasses.fields(cls):
        nested = field.default_factory() if field.default is dataclasses.MISSING else None
        if dataclasses.is_dataclass(nested):
            keys |= _dataclass_keys(type(nested), f"{prefix}{field.name}.")
        else:
            keys.add(prefix + field.name)
    return keys


def _yaml_keys(tree: dict, prefix: str = "") -> set[str]:
    return {key for name, value in tree.items()
            for key in (_yaml_keys(value, f"{prefix}{name}.") if isinstance(value, dict)
                        else {prefix + name})}


def _rows(page: str) -> dict[str, list[str]]:
    """The cells of every table row whose first cell is a `key`, by key."""
    rows = {}
    for line in page.splitlines():
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        if cells and re.fullmatch(r"`[^`]+`", cells[0]):
            rows[cells[0].strip("`")] = cells
    return rows


@pytest.fixture(scope="module")
def params_rows() -> dict[str, list[str]]:
    page = params_page()
    header = next(line for line in page.splitlines() if line.startswith("| key |"))
    assert [cell.strip() for cell in header.split("|")[1:-1]][-2:] == ["what it does", "stages"]
    return _rows(page)


def _stages(cell: str) -> dict[str, set[str]]:
    """A stages cell read back: the stages by how the key reaches them."""
    found = {"params": set(), "command": set(), "items": set()}
    for part in cell.split("; "):
        how = ("command" if part.startswith("the command of ") else
               "items" if part.startswith("which items ") else "params")
        found[how] |= set(re.findall(r"`([^`]+)`", part))
    return found


def _label(name: str) -> str:
    definition = DVC_STAGES[name]
    return f"{name}@*" if "foreach" in definition or "matrix" in definition else name


def _reading_params(key: str) -> set[str]:
    """The stages whose `params` list the key or a section above it, read from dvc.yaml here."""
    sections = {".".join(key.split(".")[:length]) for length in range(1, key.count(".") + 2)}
    return {_label(name) for name, definition in DVC_STAGES.items()
            if sections & set(definition.get("do", definition).get("params", []))}


def test_the_params_page_is_what_the_code_gives():
    """docs/params.md is generated (`python -m part.docs`) from part.params, params.yaml and
    dvc.yaml."""
    assert PARAMS_PAGE.read_text() == params_page(), "run `python -m part.docs`"


def test_every_key_has_a_description_and_every_description_a_key():
    # the dict first: without a description the page cannot be built
    keys = _dataclass_keys()
    assert not keys - set(DESCRIPTIONS), f"part.docs.DESCRIPTIONS lacks {keys - set(DESCRIPTIONS)}"
    assert not set(DESCRIPTIONS) - keys, f"no such key: {set(DESCRIPTIONS) - keys}"
    in_default_run = _yaml_keys(yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert in_default_run <= keys, in_default_run - keys
    params_rows = _rows(params_page())
    assert set(params_rows) == keys, set(params_rows) ^ keys
    for key in keys | in_default_run:
        assert params_rows[key][4], f"{key}: no description on the page"


def test_each_value_in_the_default_run_is_on_the_page(params_rows):
    flat = {}
    for section, value in yaml.safe_load((ROOT / "params.yaml").read_text()).items():
        flat.update({f"{section}.{key}": inner for key, inner in value.items()}
                    if isinstance(value, dict) else {section: value})
    assert params_rows["eps_low"][1] == f"`{flat['eps_low']}`"
    assert params_rows["variants"][1] == f"`[{', '.join(flat['variants'])}]`"
    assert params_rows["data.root"][1] == "`null`"
    assert params_rows["seed"][1] == "-"  # not a key params.yaml may hold


@pytest.mark.parametrize("key", ["eps_low", "data.test_subset", "train.lr", "mask.quantile",
                                 "eval.steps", "cam", "train.precision"])
def test_the_stages_of_a_key_are_those_whose_params_name_it(params_rows, key):
    assert _stages(params_rows[key][5])["params"] == _reading_params(key)


def test_the_stages_of_some_keys_as_dvc_yaml_says_them(params_rows):
    """What dvc.yaml says in words: eps_low reaches the training stages only through
    budgets/<variant>.json, the test subset only prepare (and the report)."""
    eps_low = _stages(params_rows["eps_low"][5])
    assert eps_low["params"] == {"budgets", "report"}
    test_subset = _stages(params_rows["data.test_subset"][5])["params"]
    assert "prepare" in test_subset
    assert not test_subset & {"burnin@*", "train@*", "train_control@*"}
    lr = _stages(params_rows["train.lr"][5])["params"]
    assert {"burnin@*", "train@*", "train_control@*"} <= lr and not lr & {"prepare", "masks@*"}


@pytest.mark.parametrize("key", ["device", "distributed.nproc_per_node"])
def test_a_key_in_a_command_names_the_stages_that_interpolate_it(params_rows, key):
    commands = {_label(name): definition.get("do", definition)["cmd"]
                for name, definition in DVC_STAGES.items()}
    expected = {label for label, command in commands.items() if "${" + key + "}" in command}
    assert expected, f"no stage's command interpolates {key}"
    assert _stages(params_rows[key][5])["command"] == expected


def test_the_lists_of_runs_decide_which_items_exist(params_rows):
    for key in ("seeds", "variants", "controls"):
        expected = {_label(name) for name, definition in DVC_STAGES.items()
                    if "${" + key + "}" in str(definition.get("foreach", definition.get("matrix")))}
        assert _stages(params_rows[key][5])["items"] == expected, key


def test_the_architecture_pages_module_table_names_every_module():
    page = architecture_page()
    table = page.split("## Modules", 1)[1].split("\n## ", 1)[0]
    named = set(_rows(table))
    package = ROOT / "part"
    expected = set()
    for path in package.rglob("*.py"):
        if "__pycache__" in path.parts:
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        expected.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    assert named == expected, named ^ expected
