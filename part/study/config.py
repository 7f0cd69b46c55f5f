"""The dose-response study's settings (study/params.yaml) and the run params files it derives.

The study is a DVC pipeline of its own (study/dvc.yaml) whose stages are the project's stage
commands, each run in a directory of its own with its own params.yaml:

* ``study/shared/``: the data, the burn-ins and the AT baseline, shared by every arm;
* ``study/arms/<arm>/``: one dose (eps_low) under one mask rule: PART and its controls, which start
  from copies of the shared burn-ins.

Each run directory's params.yaml is written by the ``configure`` stage from the default run's
params (``../params.yaml``, so the study is the default run's data, model and schedule), the
study's ``runs`` overrides (for every run directory) and the arm's own overrides, which may change
only what the shared runs do not depend on (the budget and the mask).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from part.errors import PartError

STUDY_PARAMS = Path("params.yaml")  # in the study's directory, where its stages run from
DEFAULT_RUN_PARAMS = Path("../params.yaml")  # the default run's, relative to the study
SHARED = "shared"  # the run directory of the data, the burn-ins and the baseline
ARMS_DIR = Path("arms")  # arms/<arm>/: one run directory per arm
REPORT_DIR = Path("report")
# summaries/<arm>.json: what the report needs of one arm (git-tracked, so that the report
# depends on no directory holding DVC-cached models)
SUMMARIES_DIR = Path("summaries")
RESERVED = (SHARED,)
# What an arm may change: the shared burn-ins and baseline depend on none of these.
ARM_KEYS = ("eps_low", "cam", "mask_rule", "mask")
# The variant lists of the run directories: the baseline trains in shared/ only, PART and the
# controls in each arm.
SHARED_VARIANTS = ["baseline"]
ARM_VARIANTS = ["baseline", "part"]
GENERATED_HEADER = ("# Written by the study's configure stage (part/study/config.py) from the "
                    "default run's\n# params.yaml and the study's: edit those, not this file.\n")


class StudyConfigError(PartError):
    pass


@dataclass(frozen=True)
class Primary:
    """The comparisons named before the study ran: (variant, control) pairs on these attacks,
    at every arm, tested together with Holm's correction."""

    comparisons: tuple[tuple[str, str], ...]
    attacks: tuple[str, ...]
    alpha: float
    power: float


@dataclass(frozen=True)
class StudyConfig:
    runs: dict[str, Any]  # dotted key -> value, for every run directory
    arms: dict[str, dict[str, Any]]  # arm name -> dotted key -> value
    controls: list[str]
    device: str
    nproc_per_node: int
    primary: Primary

    def run_dirs(self) -> list[str]:
        return [SHARED, *self.arms]


def _require(raw: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in raw:
        raise StudyConfigError(f"{where}: no `{key}`; add it (see the study's params.yaml on main)")
    value = raw[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise StudyConfigError(f"{where}: `{key}` must be a {kind.__name__}, got {value!r}")
    return value


def study_config_from_dict(raw: Any, where: str = str(STUDY_PARAMS)) -> StudyConfig:
    if not isinstance(raw, Mapping):
        raise StudyConfigError(f"{where}: not a mapping of settings")
    known = {"runs", "arms", "controls", "device", "distributed", "primary"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise StudyConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; the study's "
                               f"settings are {', '.join(sorted(known))}")
    runs = dict(_require(raw, "runs", dict, where))
    arms = _require(raw, "arms", dict, where)
    if not arms:
        raise StudyConfigError(f"{where}: `arms` is empty; name at least one dose")
    for name, overrides in arms.items():
        if not isinstance(name, str) or name in RESERVED or not name.replace("-", "").replace(
                "_", "").isalnum():
            raise StudyConfigError(
                f"{where}: arm name {name!r} must be letters, digits, '-' and '_', and not "
                f"{', '.join(RESERVED)} (the configure stage's name for the shared run directory)")
        if not isinstance(overrides, dict):
            raise StudyConfigError(f"{where}: arm {name!r} must map params keys to values")
        for key in overrides:
            if key.split(".")[0] not in ARM_KEYS:
                raise StudyConfigError(
                    f"{where}: arm {name!r} sets {key}: an arm may change only "
                    f"{', '.join(ARM_KEYS)} (and mask.*), because every arm shares the burn-ins "
                    "and the baseline; put it under `runs` to change every run")
    for key in runs:
        if key.split(".")[0] in ("variants", "controls", "device", "distributed"):
            raise StudyConfigError(f"{where}: `runs` sets {key}, which the study sets itself "
                                   "(`controls`, `device` and `distributed` at the top level)")
    controls = _require(raw, "controls", list, where)
    device = _require(raw, "device", str, where)
    distributed = _require(raw, "distributed", dict, where)
    nproc = _require(distributed, "nproc_per_node", int, f"{where}: distributed")
    primary_raw = _require(raw, "primary", dict, where)
    pairs = _require(primary_raw, "comparisons", list, f"{where}: primary")
    if not pairs or not all(isinstance(pair, list) and len(pair) == 2 for pair in pairs):
        raise StudyConfigError(f"{where}: primary.comparisons must be a list of [variant, "
                               "control] pairs, e.g. [[part, random_mask]]")
    arm_variants = {*ARM_VARIANTS, *controls}
    for pair in pairs:
        for variant in pair:
            if variant not in arm_variants:
                raise StudyConfigError(f"{where}: primary comparison {pair} names {variant!r}, "
                                       f"which no arm trains ({', '.join(sorted(arm_variants))})")
    attacks = _require(primary_raw, "attacks", list, f"{where}: primary")
    alpha = float(_require(primary_raw, "alpha", float, f"{where}: primary"))
    power = float(_require(primary_raw, "power", float, f"{where}: primary"))
    if not (0 < alpha < 1 and 0 < power < 1):
        raise StudyConfigError(f"{where}: primary.alpha and primary.power must lie in (0, 1)")
    primary = Primary(tuple((a, b) for a, b in pairs), tuple(attacks), alpha, power)
    return StudyConfig(runs=runs, arms={name: dict(value) for name, value in arms.items()},
                       controls=list(controls), device=device, nproc_per_node=nproc,
                       primary=primary)


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise StudyConfigError(f"{path}: no such file; run the study from its directory "
                               "(cd study && dvc repro)")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise StudyConfigError(f"{path}: cannot be read as YAML ({error}); fix it") from None


def load_study_config(path: Path = STUDY_PARAMS) -> StudyConfig:
    return study_config_from_dict(_read_yaml(path), str(path))


def _set(tree: dict[str, Any], dotted: str, value: Any, where: str) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for index, key in enumerate(parents):
        if not isinstance(node.get(key), dict):
            raise StudyConfigError(f"{where}: {dotted}: the default run's params have no "
                                   f"section {'.'.join(parents[:index + 1])}; check the key")
        node = node[key]
    if leaf not in node:
        raise StudyConfigError(f"{where}: {dotted}: the default run's params have no such key; "
                               "check its spelling against ../params.yaml")
    node[leaf] = copy.deepcopy(value)


def run_params(config: StudyConfig, default_run: Mapping[str, Any], run_dir: str
               ) -> dict[str, Any]:
    """The params.yaml of one run directory (SHARED or an arm), as a dict."""
    tree = copy.deepcopy(dict(default_run))
    for key, value in config.runs.items():
        _set(tree, key, value, "runs")
    if run_dir == SHARED:
        tree["variants"], tree["controls"] = list(SHARED_VARIANTS), []
    elif run_dir in config.arms:
        for key, value in config.arms[run_dir].items():
            _set(tree, key, value, f"arm {run_dir}")
        tree["variants"], tree["controls"] = list(ARM_VARIANTS), list(config.controls)
    else:
        raise StudyConfigError(f"no run directory {run_dir!r}; the study has "
                               f"{', '.join(config.run_dirs())}")
    tree["device"] = config.device
    tree["distributed"] = {"nproc_per_node": config.nproc_per_node}
    if "pgd_unimportant" in (tree.get("eval") or {}).get("attacks", []):
        # it attacks the pixels the evaluated model's CAM finds by the run's mask rule: the
        # shared baseline's evaluation would use another rule than each arm's
        raise StudyConfigError("runs: eval.attacks includes pgd_unimportant, which the shared "
                               "baseline would score with another mask rule than the arms'; "
                               "leave it out of the study")
    return tree


def summary_path(arm: str) -> Path:
    return SUMMARIES_DIR / f"{arm}.json"


def run_dir_path(run_dir: str) -> Path:
    """Where a run directory (SHARED or an arm's name) lies, relative to the study."""
    return Path(SHARED) if run_dir == SHARED else ARMS_DIR / run_dir


def write_run_params(run_dir: str, study_params: Path = STUDY_PARAMS,
                     default_params: Path = DEFAULT_RUN_PARAMS) -> Path:
    """Write <run_dir>/params.yaml (checked as the project's params), relative to the study."""
    from part.io.atomic import atomic_write_text
    from part.params import ParamsError, params_from_dict

    config = load_study_config(study_params)
    tree = run_params(config, _read_yaml(default_params), run_dir)
    try:
        params_from_dict(tree, only=())  # the stages check the choices against the code
    except ParamsError as error:
        raise StudyConfigError(f"the params of {run_dir}/ are not valid ({error}); fix "
                               f"{study_params} or {default_params}") from None
    path = run_dir_path(run_dir) / "params.yaml"
    atomic_write_text(path, GENERATED_HEADER + yaml.safe_dump(tree, sort_keys=False))
    return path
