"""The confirmatory study's settings (study/params.yaml) and the run params files it derives.

The study is a DVC pipeline of its own (study/dvc.yaml) whose stages are the project's stage
commands, each run in a directory of its own with its own params.yaml. Everything of one seed
lies under ``study/seeds/<seed>/``, so that a seed is added without touching another's files:

* ``seeds/<seed>/at/``: the prepared data, the burn-in and the AT baseline, shared by the arms;
* ``seeds/<seed>/<arm>/``: one dose (eps_low) under one mask rule: PART and its controls, which
  start from copies of that seed's burn-in.

Each run directory's params.yaml is written by the ``configure`` stages from the default run's
params (``../params.yaml``, so the study is the default run's data, model and schedule), the
study's ``runs`` overrides (for every run directory) and the arm's own overrides, which may change
only what the shared runs do not depend on (the budget and the mask). The ``analysis`` section
names the pre-registered tests (part/study/analysis.py).
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
AT_RUN = "at"  # the run directory of a seed's data, burn-in and AT baseline
SEEDS_DIR = Path("seeds")  # seeds/<seed>/<run>/: one run directory per seed and run
REPORT_DIR = Path("report")
# summaries/<seed>/<arm>.json: what the analysis needs of one arm and seed (git-tracked, so that
# the report depends on no directory holding DVC-cached models)
SUMMARIES_DIR = Path("summaries")
PILOT_DIR = Path("pilot")  # the committed pilot: read for the planning figures, never pooled
RESERVED = (AT_RUN,)
# What an arm may change: a seed's burn-in and AT baseline depend on none of these.
ARM_KEYS = ("eps_low", "cam", "mask_rule", "mask")
# The variant lists of the run directories: the baseline trains in at/ only, PART and the
# controls in each arm.
AT_VARIANTS = ["baseline"]
ARM_VARIANTS = ["baseline", "part"]
GENERATED_HEADER = ("# Written by the study's configure stage (part/study/config.py) from the "
                    "default run's\n# params.yaml and the study's: edit those, not this file.\n")


class StudyConfigError(PartError):
    pass


@dataclass(frozen=True)
class Comparison:
    """`variant` minus `reference` on one attack, paired by seed and test example, at one arm
    (the reference `baseline` is the seed's AT baseline). With a margin, a non-inferiority test
    (the difference is above -margin); without, a two-sided test of no difference."""

    arm: str
    variant: str
    reference: str
    attack: str
    margin: float | None = None

    @property
    def name(self) -> str:
        kind = f", non-inferiority at -{self.margin:g}" if self.margin is not None else ""
        return f"{self.arm}: {self.variant} - {self.reference}, {self.attack}{kind}"


@dataclass(frozen=True)
class Replication:
    """Equivalence (TOST within +-margin) of `variant` with each reference on each attack, at one
    arm: the paper's own dose."""

    arm: str
    variant: str
    references: tuple[str, ...]
    attacks: tuple[str, ...]
    margin: float

    def comparisons(self) -> list[Comparison]:
        return [Comparison(self.arm, self.variant, reference, attack)
                for reference in self.references for attack in self.attacks]


@dataclass(frozen=True)
class Planning:
    """How the number of seeds was chosen: the difference to detect, the planning SD of the
    per-seed differences, the power, and the pilot's summary the SD is set against."""

    difference: float
    sd: float
    power: float
    pilot_summary: str
    pilot_comparison: Comparison


@dataclass(frozen=True)
class Analysis:
    alpha: float
    primary: Comparison
    secondary: tuple[Comparison, ...]
    replication: Replication
    planning: Planning

    def comparisons(self) -> list[Comparison]:
        return [self.primary, *self.secondary, *self.replication.comparisons()]


@dataclass(frozen=True)
class StudyConfig:
    seeds: list[int]
    runs: dict[str, Any]  # dotted key -> value, for every run directory
    arms: dict[str, dict[str, Any]]  # arm name -> dotted key -> value
    controls: list[str]
    device: str
    nproc_per_node: int
    analysis: Analysis
    preregistered: str | None = None  # the commit that named the question before any run

    def run_dirs(self) -> list[str]:
        return [AT_RUN, *self.arms]


def _require(raw: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in raw:
        raise StudyConfigError(f"{where}: no `{key}`; add it (see the study's params.yaml on main)")
    value = raw[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
        names = " or ".join(k.__name__ for k in kinds)
        raise StudyConfigError(f"{where}: `{key}` must be a {names}, got {value!r}")
    return value


def _fraction(raw: Mapping[str, Any], key: str, where: str) -> float:
    value = float(_require(raw, key, (float, int), where))
    if not 0 < value < 1:
        raise StudyConfigError(f"{where}: `{key}` must lie in (0, 1), got {value}")
    return value


def _comparison(raw: Any, where: str, arms: Mapping[str, Any], controls: list[str],
                attacks: list[str], margin_allowed: bool = True) -> Comparison:
    if not isinstance(raw, Mapping):
        raise StudyConfigError(f"{where}: must map arm, variant, reference and attack")
    unknown = sorted(set(raw) - {"arm", "variant", "reference", "attack", "margin"})
    if unknown or (not margin_allowed and "margin" in raw):
        raise StudyConfigError(f"{where}: unknown key(s) {', '.join(unknown or ['margin'])}")
    arm = _require(raw, "arm", str, where)
    if arm not in arms:
        raise StudyConfigError(f"{where}: arm {arm!r} is not one of the study's arms "
                               f"({', '.join(arms)})")
    variants = {*ARM_VARIANTS, *controls}
    variant = _require(raw, "variant", str, where)
    reference = _require(raw, "reference", str, where)
    for name in (variant, reference):
        if name not in variants:
            raise StudyConfigError(f"{where}: {name!r} is trained by no run of the study "
                                   f"({', '.join(sorted(variants))})")
    attack = _require(raw, "attack", str, where)
    if attack not in attacks:
        raise StudyConfigError(f"{where}: attack {attack!r} is not in runs' eval.attacks "
                               f"({', '.join(attacks)})")
    margin = raw.get("margin")
    if margin is not None:
        margin = _fraction(raw, "margin", where)
    return Comparison(arm, variant, reference, attack, margin)


def _analysis(raw: Any, where: str, arms: Mapping[str, Any], controls: list[str],
              attacks: list[str]) -> Analysis:
    if not isinstance(raw, Mapping):
        raise StudyConfigError(f"{where}: not a mapping")
    alpha = _fraction(raw, "alpha", where)
    primary = _comparison(_require(raw, "primary", dict, where), f"{where}.primary", arms,
                          controls, attacks, margin_allowed=False)
    secondary = tuple(_comparison(item, f"{where}.secondary[{index}]", arms, controls, attacks)
                      for index, item in enumerate(_require(raw, "secondary", list, where)))
    rep = _require(raw, "replication", dict, where)
    first = _comparison({"arm": rep.get("arm"), "variant": rep.get("variant"),
                         "reference": (rep.get("references") or [None])[0],
                         "attack": (rep.get("attacks") or [None])[0]},
                        f"{where}.replication", arms, controls, attacks)
    references = tuple(_require(rep, "references", list, f"{where}.replication"))
    rep_attacks = tuple(_require(rep, "attacks", list, f"{where}.replication"))
    for reference in references:
        for attack in rep_attacks:
            _comparison({"arm": first.arm, "variant": first.variant, "reference": reference,
                         "attack": attack}, f"{where}.replication", arms, controls, attacks)
    replication = Replication(first.arm, first.variant, references, rep_attacks,
                              _fraction(rep, "margin", f"{where}.replication"))
    plan = _require(raw, "planning", dict, where)
    planning = Planning(
        difference=_fraction(plan, "difference", f"{where}.planning"),
        sd=_fraction(plan, "sd", f"{where}.planning"),
        power=_fraction(plan, "power", f"{where}.planning"),
        pilot_summary=_require(plan, "pilot_summary", str, f"{where}.planning"),
        pilot_comparison=_pilot_comparison(_require(plan, "pilot_comparison", dict,
                                                    f"{where}.planning"), f"{where}.planning"))
    return Analysis(alpha, primary, secondary, replication, planning)


def _pilot_comparison(raw: Mapping[str, Any], where: str) -> Comparison:
    return Comparison(arm=_require(raw, "arm", str, where),
                      variant=_require(raw, "variant", str, where),
                      reference=_require(raw, "reference", str, where),
                      attack=_require(raw, "attack", str, where))


def study_config_from_dict(raw: Any, where: str = str(STUDY_PARAMS)) -> StudyConfig:
    if not isinstance(raw, Mapping):
        raise StudyConfigError(f"{where}: not a mapping of settings")
    known = {"seeds", "runs", "arms", "controls", "device", "distributed", "analysis",
             "preregistered"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise StudyConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; the study's "
                               f"settings are {', '.join(sorted(known))}")
    seeds = _require(raw, "seeds", list, where)
    if not seeds or not all(isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0
                            for seed in seeds) or len(set(seeds)) != len(seeds):
        raise StudyConfigError(f"{where}: `seeds` must be distinct non-negative integers, got "
                               f"{seeds!r}")
    runs = dict(_require(raw, "runs", dict, where))
    arms = _require(raw, "arms", dict, where)
    if not arms:
        raise StudyConfigError(f"{where}: `arms` is empty; name at least one dose")
    for name, overrides in arms.items():
        if not isinstance(name, str) or name in RESERVED or not name.replace("-", "").replace(
                "_", "").isalnum():
            raise StudyConfigError(
                f"{where}: arm name {name!r} must be letters, digits, '-' and '_', and not "
                f"{', '.join(RESERVED)} (the run directory of each seed's AT baseline)")
        if not isinstance(overrides, dict):
            raise StudyConfigError(f"{where}: arm {name!r} must map params keys to values")
        for key in overrides:
            if key.split(".")[0] not in ARM_KEYS:
                raise StudyConfigError(
                    f"{where}: arm {name!r} sets {key}: an arm may change only "
                    f"{', '.join(ARM_KEYS)} (and mask.*), because every arm shares the burn-in "
                    "and the baseline of its seed; put it under `runs` to change every run")
    for key in runs:
        if key.split(".")[0] in ("seeds", "variants", "controls", "device", "distributed"):
            raise StudyConfigError(f"{where}: `runs` sets {key}, which the study sets itself "
                                   "(`seeds`, `controls`, `device` and `distributed` at the top "
                                   "level)")
    controls = _require(raw, "controls", list, where)
    device = _require(raw, "device", str, where)
    distributed = _require(raw, "distributed", dict, where)
    nproc = _require(distributed, "nproc_per_node", int, f"{where}: distributed")
    attacks = list(runs.get("eval.attacks") or [])
    analysis = _analysis(_require(raw, "analysis", dict, where), f"{where}: analysis", arms,
                         controls, attacks)
    return StudyConfig(seeds=list(seeds), runs=runs,
                       arms={name: dict(value) for name, value in arms.items()},
                       controls=list(controls), device=device, nproc_per_node=nproc,
                       analysis=analysis, preregistered=raw.get("preregistered"))


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise StudyConfigError(f"{path}: no such file; run the study from its directory "
                               "(cd study && dvc repro --allow-missing)")
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


def run_params(config: StudyConfig, default_run: Mapping[str, Any], seed: int, run_dir: str
               ) -> dict[str, Any]:
    """The params.yaml of one run directory (AT_RUN or an arm) of one seed, as a dict."""
    if seed not in config.seeds:
        raise StudyConfigError(f"seed {seed} is not one of the study's seeds "
                               f"({', '.join(map(str, config.seeds))})")
    tree = copy.deepcopy(dict(default_run))
    for key, value in config.runs.items():
        _set(tree, key, value, "runs")
    if run_dir == AT_RUN:
        tree["variants"], tree["controls"] = list(AT_VARIANTS), []
    elif run_dir in config.arms:
        for key, value in config.arms[run_dir].items():
            _set(tree, key, value, f"arm {run_dir}")
        tree["variants"], tree["controls"] = list(ARM_VARIANTS), list(config.controls)
    else:
        raise StudyConfigError(f"no run directory {run_dir!r}; the study has "
                               f"{', '.join(config.run_dirs())}")
    tree["seeds"] = [seed]
    tree["device"] = config.device
    tree["distributed"] = {"nproc_per_node": config.nproc_per_node}
    if "pgd_unimportant" in (tree.get("eval") or {}).get("attacks", []):
        # it attacks the pixels the evaluated model's CAM finds by the run's mask rule: the
        # shared baseline's evaluation would use another rule than each arm's
        raise StudyConfigError("runs: eval.attacks includes pgd_unimportant, which the shared "
                               "baseline would score with another mask rule than the arms'; "
                               "leave it out of the study")
    return tree


def run_dir_path(seed: int, run_dir: str) -> Path:
    """Where one seed's run directory (AT_RUN or an arm's name) lies, relative to the study."""
    return SEEDS_DIR / str(seed) / run_dir


def summary_path(seed: int, arm: str) -> Path:
    return SUMMARIES_DIR / str(seed) / f"{arm}.json"


def write_run_params(seed: int, run_dir: str, study_params: Path = STUDY_PARAMS,
                     default_params: Path = DEFAULT_RUN_PARAMS) -> Path:
    """Write seeds/<seed>/<run_dir>/params.yaml (checked as the project's params), relative to
    the study."""
    from part.io.atomic import atomic_write_text
    from part.params import ParamsError, params_from_dict

    config = load_study_config(study_params)
    tree = run_params(config, _read_yaml(default_params), seed, run_dir)
    try:
        params_from_dict(tree, only=())  # the stages check the choices against the code
    except ParamsError as error:
        raise StudyConfigError(f"the params of {run_dir}/ are not valid ({error}); fix "
                               f"{study_params} or {default_params}") from None
    path = run_dir_path(seed, run_dir) / "params.yaml"
    atomic_write_text(path, GENERATED_HEADER + yaml.safe_dump(tree, sort_keys=False))
    return path
