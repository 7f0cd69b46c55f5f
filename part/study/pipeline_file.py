"""study/dvc.yaml, written from the code: `python -m part.study.pipeline_file` (or `make
study-pipeline`); tests/test_study_pipeline.py fails when the committed file differs.

Each stage of the study runs one of the project's stage commands in a run directory of one seed
(seeds/<seed>/<run>/, part/study/config.py), so its code deps, params and outputs are the main
pipeline's stage's (dvc.yaml, whose code lists tests/test_caching.py checks against what each
stage executes), with the paths moved under the run directory. The study's own commands
(configure, summarize, report) declare the project modules their imports reach. DVC's `foreach`
and `matrix` repeat each stage over the seeds, arms and controls of study/params.yaml.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MAIN_PIPELINE = ROOT / "dvc.yaml"
STUDY_PIPELINE = ROOT / "study" / "dvc.yaml"
CODE_ROOTS = ("part", "stages")
UP = "../../../../"  # from study/seeds/<seed>/<run>/ to the repository
HEADER = """\
# The confirmatory study (study/params.yaml; docs/study.md). Written by
# `python -m part.study.pipeline_file` from the main pipeline's stages: edit that, not this file.
# Every stage runs one of the project's stage commands in seeds/<seed>/<run>/ with the params.yaml
# its configure stage writes there; seeds/<seed>/at/ holds the seed's data, burn-in and AT
# baseline, seeds/<seed>/<arm>/ copies of them and the arm's PART and controls. Run it from here
# with `dvc repro --allow-missing` (`make study`): a fresh clone without the DVC cache runs only
# the seeds whose summaries are not committed.
"""


def _module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(path: Path, package: str) -> set[str]:
    """Every project module `path` may import, at its top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in CODE_ROOTS}


def code_closure(module: str) -> list[str]:
    """The project files running `python -m module` may execute, relative to the repository:
    the module, every project module its imports reach, and their packages' __init__ files."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            path = _module_file(".".join(parts[:depth]))
            if path is None or path in seen:
                continue
            seen.add(path)
            package = ".".join(parts[:depth]) if path.name == "__init__.py" else ".".join(
                parts[:depth - 1])
            todo.extend(_imports(path, package))
    return sorted(str(path.relative_to(ROOT)) for path in seen)


def _main_stage(stages: dict[str, Any], name: str) -> dict[str, Any]:
    stage = stages[name]
    return stage.get("do", stage)


def _code(deps: list[Any], prefix: str) -> list[str]:
    return [prefix + dep for dep in deps
            if isinstance(dep, str) and dep.split("/")[0] in CODE_ROOTS]


def _moved(values: list[Any] | None, item: dict[str, str]) -> list[Any]:
    """The main stage's outputs (or metrics, plots) with its item names bound to the study's."""
    def bind(text: str) -> str:
        for old, new in item.items():
            text = text.replace(old, new)
        return text

    moved = []
    for value in values or []:
        if isinstance(value, str):
            moved.append(bind(value))
        else:
            moved.append({bind(key): settings for key, settings in value.items()})
    return moved


def _project_stage(stages: dict[str, Any], main: str, wdir: str, item: dict[str, str],
                   deps: list[str], loop: dict[str, Any], cmd: str | None = None
                   ) -> dict[str, Any]:
    source = _main_stage(stages, main)
    body: dict[str, Any] = {"wdir": wdir,
                            "cmd": f"PYTHONPATH={UP.rstrip('/')} "
                                   + (cmd or _moved([source["cmd"]], item)[0]),
                            "deps": _code(source["deps"], UP) + deps,
                            "params": source.get("params", [])}
    for key in ("outs", "metrics", "plots"):
        if source.get(key):
            body[key] = _moved(source[key], item)
    if "foreach" in loop:
        return {"foreach": loop["foreach"], "do": body}
    return {**loop, **body}


def _own_stage(module: str, args: str, deps: list[str], params: list[str], outs: list[Any],
               loop: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {"cmd": f"PYTHONPATH=.. python -m {module} {args}".rstrip(),
            "deps": ["../" + path for path in code_closure(module)] + deps,
            "params": params, "outs": outs}
    if loop and "foreach" in loop:
        return {"foreach": loop["foreach"], "do": body}
    return {**(loop or {}), **body}


def study_pipeline() -> dict[str, Any]:
    stages = yaml.safe_load(MAIN_PIPELINE.read_text())["stages"]
    seed, arm, control = "${item.seed}", "${item.arm}", "${item.variant}"
    per_seed = {"foreach": "${seeds}"}
    per_arm = {"matrix": {"seed": "${seeds}", "arm": "${arms}"}}
    per_control = {"matrix": {"seed": "${seeds}", "arm": "${arms}", "variant": "${controls}"}}
    at, in_arm = "seeds/${item}/at", f"seeds/{seed}/{arm}"
    data = ["data/prepared/train.safetensors", "data/prepared/val.safetensors"]
    test = ["data/prepared/test.safetensors"]
    configure = ["../params.yaml"]
    configure_params = ["runs", "device", "distributed"]
    pipeline: dict[str, Any] = {
        "configure_at": _own_stage("stages.study_configure", "${item} at", configure,
                                   configure_params,
                                   [{"seeds/${item}/at/params.yaml": {"cache": False}}],
                                   per_seed),
        "configure": _own_stage("stages.study_configure", f"{seed} {arm}", configure,
                                [*configure_params, "arms", "controls"],
                                [{f"{in_arm}/params.yaml": {"cache": False}}], per_arm),
        "prepare": _project_stage(stages, "prepare", at, {}, [], per_seed),
        "burnin": _project_stage(stages, "burnin", at, {}, data, per_seed),
        "baseline": _project_stage(
            stages, "train", at, {"${item.variant}": "baseline", "${item.seed}": "${item}"},
            [*data, "models/burnin-${item}.safetensors", "budgets/baseline.json"], per_seed),
        "budgets": _project_stage(stages, "budgets", at, {}, [], per_seed),
        "evaluate_baseline": _project_stage(
            stages, "evaluate", at, {"${item.variant}": "baseline", "${item.seed}": "${item}"},
            ["models/baseline-${item}.safetensors", "models/baseline-${item}.best.safetensors",
             *test], per_seed),
        "arm_inputs": {
            **per_arm, "wdir": in_arm,
            "cmd": "mkdir -p data/prepared models && cp ../at/data/prepared/train.safetensors "
                   "../at/data/prepared/val.safetensors ../at/data/prepared/test.safetensors "
                   f"data/prepared/ && cp ../at/models/burnin-{seed}.safetensors models/",
            # params.yaml: the configure stage makes the run directory this stage runs in
            "deps": ["params.yaml", *(f"../at/{path}" for path in (*data, *test)),
                     f"../at/models/burnin-{seed}.safetensors"],
            "outs": [*data, *test, f"models/burnin-{seed}.safetensors"]},
        "arm_budgets": _project_stage(stages, "budgets", in_arm, {}, [], per_arm),
        "train": _project_stage(
            stages, "train", in_arm, {"${item.variant}": "part"},
            [*data, f"models/burnin-{seed}.safetensors", "budgets/part.json"], per_arm),
        "train_control": _project_stage(
            stages, "train_control", in_arm, {},
            [*data, f"models/burnin-{seed}.safetensors", f"budgets/{control}.json",
             f"traces/part-{seed}.safetensors"], per_control),
        "evaluate": _project_stage(
            stages, "evaluate", in_arm, {"${item.variant}": "part"},
            [f"models/part-{seed}.safetensors", f"models/part-{seed}.best.safetensors", *test],
            per_arm),
        "evaluate_control": _project_stage(
            stages, "evaluate_control", in_arm, {},
            [f"models/{control}-{seed}.safetensors",
             f"models/{control}-{seed}.best.safetensors", *test], per_control),
        "summarize": _own_stage(
            "stages.study_summarize", f"{seed} {arm}",
            [f"seeds/{seed}/at/params.yaml", f"seeds/{seed}/at/metrics", f"{in_arm}/params.yaml",
             f"{in_arm}/metrics", f"{in_arm}/traces"],
            ["controls"], [{f"summaries/{seed}/{arm}.json": {"cache": False}}], per_arm),
        "report": _own_stage(
            "stages.study_report", "", ["summaries", "pilot/summaries"],
            ["seeds", "arms", "controls", "analysis", "preregistered"],
            # study.json, results.md and one paired plot per arm: the directory, git-tracked
            [{"report": {"cache": False}}]),
    }
    return {"stages": pipeline}


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # each stage's lists written out in full
        return True


def pipeline_text() -> str:
    return HEADER + yaml.dump(study_pipeline(), Dumper=_Dumper, sort_keys=False, width=100)


def main() -> None:
    STUDY_PIPELINE.write_text(pipeline_text())
    print(f"wrote {STUDY_PIPELINE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
