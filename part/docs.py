"""The documentation pages drawn from the code, so that they cannot drift from it.

`docs/architecture.md` is the package map (each package's face docstring, its modules and the
packages it imports, read with `ast`) and the data flow of the main pipeline (the stages of
dvc.yaml as DVC resolves them, each edge the file one stage writes and the next reads).
`docs/params.md` is every key of `part.params`: its value in the default run, its default, what
it accepts (the checks of `part.params`) and does, and the dvc.yaml stages that name it.
`python -m part.docs` writes the pages; a test fails when a committed page is not what the
code gives.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

import yaml

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
PARAMS_PAGE = ROOT / "docs" / "params.md"
GENERATED = "<!-- written by `python -m part.docs` from the code; edit the code, not this page -->"


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


def _cell(text: str) -> str:
    """Text as one markdown table cell: one line, its pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _summary(path: Path) -> str:
    """The first paragraph of a module's docstring, as a table cell; "-" where it has none."""
    doc = ast.get_docstring(ast.parse(path.read_text()))
    return _cell(doc.split("\n\n")[0]) if doc else "-"


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
        summary = _summary(face)
        used = sorted({_unit_of(target) for module, targets in graph.items()
                       if _unit_of(module) == unit for target in targets} - {unit, "part"},
                      key=lambda name: (floor_of(name), name))
        rows.append(f"| {floor_of(unit)} | `{unit}` | {summary} | "
                    f"{', '.join(f'`{member}`' for member in members) or '-'} | "
                    f"{', '.join(f'`{name}`' for name in used) or '-'} |")
    return rows


def _module_rows() -> list[str]:
    """Every module of part/, by package (in floor order), each with its docstring's summary."""
    found = modules()
    in_order = sorted(found, key=lambda name: (floor_of(name), _unit_of(name), name))
    return ["| module | what it holds |", "|---|---|",
            *(f"| `{name}` | {_summary(found[name])} |" for name in in_order)]


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
        GENERATED,
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
        "## Modules",
        "",
        "Every module of `part/`, package by package in floor order (a package is its",
        "`__init__.py`), with the first paragraph of its docstring.",
        "",
        *_module_rows(),
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


# What each key does for a person who sets it, one sentence each; a test fails when a key of
# part.params has none here, or when this names a key that part.params lacks.
DESCRIPTIONS = {
    "dataset": "The data set `prepare` reads; `imagefolder` and `arrays` are your own data.",
    "model": "The architecture trained and evaluated: a registered one or your own factory.",
    "cam_layer": "The submodule whose activations CAM reads; null: the model's own `cam_layer`.",
    "method": "The training loss; with PART's masks `at` is PART, `trades` PART-T, `mart` PART-M.",
    "cam": "The class activation map that marks the important pixels (masks, `pgd_unimportant`).",
    "mask_rule": "From CAM to mask: `official` the paper code's jet z-score rule, `quantile` the "
                 "top `mask.quantile`.",
    "eps": "The L-inf budget of training (PART's important pixels) and, by default, of evaluation.",
    "eps_low": "PART's budget for the unimportant pixels; it must not exceed `eps`.",
    "epochs": "The training epochs in all, burn-in included; more than `burn_in_epochs`.",
    "burn_in_epochs": "The epochs of plain adversarial training every variant continues from.",
    "seeds": "The training seeds (distinct, >= 0): one burn-in, masks and variants each.",
    "variants": "The variants trained on their own (`train`), each once, `baseline` among them.",
    "controls": "The controls, which follow part's budget trace; they need `part` in `variants`.",
    "seed": "The seed of the run at hand: each stage sets it from `--seed`, one of `seeds`.",
    "device": "Where the stages compute: `auto` takes a GPU where there is one, else the CPU.",
    "data.root": "Where the source data set is (your own: its folder or .npz); null: the "
                 "default places.",
    "data.train_subset": "A seeded, class-balanced subset of the training split left after "
                         "validation; null: all.",
    "data.val_subset": "Held out of training, never trained on: the monitor and the best epoch "
                       "use it (0: the test subset).",
    "data.test_subset": "A seeded, class-balanced subset of the test split, the evaluation's; "
                        "null: all of it.",
    "data.seed": "Picks the subsets, the validation split and the monitor's examples, for every "
                 "seed alike.",
    "data.download": "Whether `prepare` may download a source data set it cannot find.",
    "data.image_size": "`imagefolder`: resize every image to this square size; null keeps sizes.",
    "mask.quantile": "Under `mask_rule: quantile`, the fraction of pixels kept at `eps`; (0, 1].",
    "mask.refresh_every": "PART's masks come from the current model every N epochs; 0: the "
                          "burn-in's throughout.",
    "mask.batch_size": "Images per batch when computing CAM masks.",
    "mask.alignment": "`sample`: each image trains with its own mask; `paper`: by batch position.",
    "train.batch_size": "Examples per training batch, shared among the processes.",
    "train.lr": "The SGD learning rate before any decay.",
    "train.momentum": "The SGD momentum; below 1.",
    "train.weight_decay": "The SGD weight decay.",
    "train.lr_schedule": "`lr_milestones` count from: `official` the burn-in's end, `piecewise` "
                         "epoch 1.",
    "train.lr_milestones": "The epochs (> 0) at which the learning rate is multiplied by "
                           "`lr_gamma`.",
    "train.lr_gamma": "The factor the learning rate is multiplied by at each milestone.",
    "train.step_size": "The PGD step of training, the monitor and (by default) the evaluation.",
    "train.steps": "PGD steps of the training attack; at least 1.",
    "train.beta": "The weight of the TRADES or MART regulariser; `method: at` ignores it.",
    "train.augment": "`auto`: the data set's default (`part.data.augment`); `crop_flip`; `none`.",
    "train.monitor_subset": "Validation examples of the per-epoch clean and PGD accuracy.",
    "train.monitor_steps": "PGD steps of the monitor's attack.",
    "train.random_start": "PGD starts `budget`: within each pixel's budget; `paper`: U(-eps, "
                          "eps), unprojected.",
    "train.precision": "The numerics of training and masks on a GPU; the CPU runs fp32.",
    "train.deterministic": "CUDA: deterministic kernels, so that a rerun writes the same bytes.",
    "train.compile": "The training loss and its attack run through torch.compile.",
    "eval.attacks": "The attacks the evaluation runs; without the key, every attack.",
    "eval.n": "The first this many test examples every attack but AutoAttack runs on; null: all.",
    "eval.n_autoattack": "The first this many test examples AutoAttack runs on; null: all.",
    "eval.eps": "The evaluation budget; null evaluates at the training `eps`.",
    "eval.step_size": "The evaluation attacks' step; null uses `train.step_size`.",
    "eval.steps": "Iterations of every iterative evaluation attack, `pgd20` and `cw20` too.",
    "eval.batch_size": "Test examples per evaluation batch.",
    "eval.seed": "Set before each attack (AutoAttack's seed too), for their random starts.",
    "eval.checkpoint": "`last`: the final epoch's checkpoint; `best`: the best monitor PGD one's.",
    "eval.autoattack_version": "AutoAttack's own version to run.",
    "distributed.nproc_per_node": "Processes (GPUs) of the burn-in, mask and training stages; "
                                  "it changes the result.",
}
_REFERENCE = re.compile(r"\$\{\s*([^}\s]+)\s*\}")  # DVC's ${...} interpolation


def param_fields() -> dict[str, Field]:
    """Every key of Params, a section's as `section.key`, in the order the dataclasses give."""
    from part.params import _SECTIONS, Params

    keys: dict[str, Field] = {}
    for top in fields(Params):
        if top.name in _SECTIONS:
            keys.update({f"{top.name}.{inner.name}": inner
                         for inner in fields(_SECTIONS[top.name])})
        else:
            keys[top.name] = top
    return keys


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as dotted keys: {"train": {"lr": 0.01}} -> {"train.lr": 0.01}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _yaml_text(value: Any) -> str:
    text = yaml.safe_dump(list(value) if isinstance(value, tuple) else value,
                          default_flow_style=True)
    text = text.removesuffix("\n...\n").strip()  # a scalar's document ends in "..."
    return f"`{text}`"


def allowed_text(key: str, annotation: str) -> str:
    """What params.yaml may give `key`, in the order part.params._convert checks it."""
    from part import params

    if key in {name for _, name in params._INTERNAL}:
        return "none: set by the stage, not read from params.yaml"
    listed = ", ".join(f"`{value}`" for value in params.allowed_values(key)) \
        if key in {**params._CHOICES, **params._LISTS_OF_CHOICES} else ""
    if key in params._BUDGET_KEYS:
        text = "a budget in [0, 1]: a number or a fraction such as 8/255"
    elif key in params._CHOICES:
        # _convert takes a `model` with a colon as an import path before the registry's names
        text = f"one of {listed}" + (", or an import path `module:factory`" * (key == "model"))
    elif key in params._LISTS_OF_CHOICES:
        text = f"a list drawn from {listed}" + " (may be empty)" * (key in params._MAY_BE_EMPTY)
    elif annotation.startswith("tuple[int"):
        text = "a list of whole numbers"
    elif annotation.startswith("bool"):
        text = "`true` or `false`"
    elif annotation.startswith("int"):
        text = ("a whole number > 0" if key in params._POSITIVE_INTS else "a whole number >= 0"
                if key in params._NON_NEGATIVE_INTS else "a whole number")
    elif annotation.startswith("float"):
        text = "a number >= 0" if key in params._NON_NEGATIVE_FLOATS else "a number"
    else:
        text = "any text"
    return text + (", or `null`" if "None" in annotation else "")


def _names_same_value(entry: str, key: str) -> bool:
    """A params entry (or ${...} reference) and a key name one value: they are equal, or one is
    a section of the other (`train` covers `train.lr`)."""
    return entry == key or key.startswith(entry + ".") or entry.startswith(key + ".")


def stages_using(key: str, definitions: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """The stages whose definition names `key`, by how: its `params`, its command, or the list
    its foreach or matrix runs over (which items exist)."""
    found: dict[str, list[str]] = {"params": [], "command": [], "items": []}
    for name, definition in definitions.items():
        body = definition.get("do", definition)  # a foreach stage's definition is under `do`
        entries = [entry for item in body.get("params", [])
                   for entry in ([item] if isinstance(item, str) else
                                 item.get("params.yaml") or [])]
        command = body["cmd"] if isinstance(body["cmd"], str) else " ".join(body["cmd"])
        generator = f"{definition.get('foreach', '')} {definition.get('matrix', '')}"
        label = f"{name}@*" if generator.strip() else name  # every item of a foreach or matrix
        for how, names in (("params", entries), ("command", _REFERENCE.findall(command)),
                           ("items", _REFERENCE.findall(generator))):
            if any(_names_same_value(entry, key) for entry in names):
                found[how].append(label)
    return found


def _stages_text(found: Mapping[str, list[str]]) -> str:
    named = {how: ", ".join(f"`{label}`" for label in labels) for how, labels in found.items()}
    return "; ".join(part for part in (named["params"],
                                       named["command"] and f"the command of {named['command']}",
                                       named["items"] and f"which items {named['items']} have")
                     if part) or "none"


def _item_legend(definitions: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """For each foreach or matrix stage, how DVC names its items and what they run over."""
    legend = []
    for name, definition in definitions.items():
        axes = definition.get("matrix") or ({"item": definition["foreach"]}
                                            if "foreach" in definition else {})
        if axes:
            legend.append(f"- `{name}@*`: `{name}@{'-'.join(f'<{axis}>' for axis in axes)}`, one "
                          f"per item of {' x '.join(f'`{values}`' for values in axes.values())}")
    return legend


def params_page() -> str:
    from part.params import _INTERNAL, _SECTIONS

    keys, set_by_the_code = param_fields(), {name for _, name in _INTERNAL}
    default_run = flatten(yaml.safe_load((ROOT / "params.yaml").read_text()))
    # the main dvc.yaml's stages as written, before DVC resolves foreach and matrix
    definitions = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    lines = ["# Params", "", GENERATED, "",
             "Every key of `params.yaml` (`part/params.py`). *default run*: the value in the root",
             "`params.yaml`; *when absent*: the value when the key is left out (`-`: set by the",
             "code). *stages*: the stages of `dvc.yaml` whose own definition names the key (its",
             "`params`, its command, or the list its `foreach` or `matrix` runs over); a change",
             "reruns them, and then every stage that reads a file they write (the data flow in",
             "[the architecture](architecture.md)). `name@*` is every item of a stage:", "",
             *_item_legend(definitions), ""]
    for section in ["", *_SECTIONS]:
        lines += [f"## {section or 'Top level'}", "",
                  "| key | default run | when absent | allowed | what it does | stages |",
                  "|---|---|---|---|---|---|"]
        for key, field in keys.items():
            if key.rpartition(".")[0] != section:
                continue
            in_default_run = _yaml_text(default_run[key]) if key in default_run else "-"
            default = field.default_factory() if field.default is MISSING else field.default
            when_absent = "-" if key in set_by_the_code else _yaml_text(default)
            lines.append(f"| `{key}` | {in_default_run} | {when_absent} | "
                         f"{_cell(allowed_text(key, str(field.type)))} | "
                         f"{_cell(DESCRIPTIONS[key])} | "
                         f"{_cell(_stages_text(stages_using(key, definitions)))} |")
        lines.append("")
    return "\n".join(lines)


PAGES = {ARCHITECTURE: architecture_page, PARAMS_PAGE: params_page}


def main() -> int:
    from part.io.atomic import atomic_write_text

    for path, build in PAGES.items():
        atomic_write_text(path, build())
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
