"""The confirmatory study's settings and its pipeline file, as shipped in study/."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from part.params import load_params
from part.study.config import (
    ARM_KEYS,
    AT_RUN,
    StudyConfigError,
    load_study_config,
    run_dir_path,
    run_params,
    study_config_from_dict,
    write_run_params,
)

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "study"


def _shipped() -> dict:
    return yaml.safe_load((STUDY / "params.yaml").read_text())


def _default_run() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_each_run_directorys_params_are_the_projects_and_name_its_seed(tmp_path, monkeypatch):
    (tmp_path / "study").mkdir()
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "study" / "params.yaml").write_text((STUDY / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path / "study")
    config = load_study_config()
    for run_dir in config.run_dirs():
        written = write_run_params(config.seeds[-1], run_dir)
        assert written == run_dir_path(config.seeds[-1], run_dir) / "params.yaml"
        params = load_params(written)  # the project's own check, choices included
        assert list(params.seeds) == [config.seeds[-1]]


def test_every_run_is_the_default_run_but_for_what_the_study_names():
    config = study_config_from_dict(_shipped())
    default = _default_run()
    shared = run_params(config, default, config.seeds[0], AT_RUN)
    assert shared["variants"] == ["baseline"] and shared["controls"] == []
    for arm, overrides in config.arms.items():
        tree = run_params(config, default, config.seeds[0], arm)
        assert tree["variants"] == ["baseline", "part"]
        assert tree["controls"] == config.controls
        # what the burn-ins and the baseline depend on is the shared runs' exactly
        for key in ("dataset", "model", "method", "eps", "epochs", "burn_in_epochs", "data",
                    "train", "eval", "seeds"):
            assert tree[key] == shared[key], key
        for key, value in overrides.items():
            section, _, leaf = key.partition(".")
            assert (tree[section][leaf] if leaf else tree[section]) == value
    # the default run's data, model and schedule, but for what the study's `runs` name
    named = {}
    for key, value in config.runs.items():
        section, _, leaf = key.partition(".")
        if leaf:
            named.setdefault(section, {})[leaf] = value
    for key in ("dataset", "model", "epochs", "burn_in_epochs", "data", "train"):
        expected = ({**default[key], **named[key]} if key in named else default[key])
        assert shared[key] == expected, key


def test_the_shipped_study_meets_the_issue_it_answers():
    """One primary contrast (PART - random_mask, PGD-20, at the lowest dose), a small secondary
    family, the paper's dose as a replication, about 10 new seeds, every test image."""
    config = study_config_from_dict(_shipped())
    eps = float(_default_run()["eps"])
    analysis = config.analysis
    primary = analysis.primary
    assert (primary.variant, primary.reference, primary.attack) == ("part", "random_mask", "pgd20")
    assert primary.margin is None
    doses = {name: arm["eps_low"] for name, arm in config.arms.items()}
    assert doses[primary.arm] == min(doses.values()) == 0
    assert config.arms[analysis.replication.arm] == {"mask_rule": "official",
                                                     "eps_low": pytest.approx(0.875 * eps)}
    assert set(analysis.replication.references) == {"baseline", *config.controls}
    assert len(analysis.secondary) <= 4
    assert all(c.margin == 0.01 for c in analysis.secondary if c.attack == "natural")
    assert len(config.seeds) >= 10 and not set(config.seeds) & {0, 1, 2}  # not the pilot's
    assert config.runs["data.test_subset"] is None  # all 10,000 test images
    assert config.preregistered


@pytest.mark.parametrize("change, message", [
    (lambda raw: raw["arms"]["quantile-0of8"].update({"train.lr": 0.1}),
     r"arm 'quantile-0of8' sets train.lr: an arm may change only eps_low"),
    (lambda raw: raw["arms"].update({"at": {"eps_low": 0.0}}), r"arm name 'at'"),
    (lambda raw: raw.update({"armz": {}}), r"unknown key\(s\) armz"),
    (lambda raw: raw["runs"].update({"controls": []}), r"`runs` sets controls"),
    (lambda raw: raw["analysis"]["primary"].update({"reference": "paper"}),
     r"'paper' is trained by no run of the study"),
    (lambda raw: raw["analysis"].update({"alpha": 1.5}), r"must lie in \(0, 1\)"),
    (lambda raw: raw["analysis"]["primary"].update({"attack": "cw20"}),
     r"attack 'cw20' is not in runs' eval.attacks"),
    (lambda raw: raw.update({"seeds": [3, 3]}), r"`seeds` must be distinct"),
    (lambda raw: raw.update({"arms": {}}), r"`arms` is empty"),
    (lambda raw: raw["runs"].update({"eval.attacks": ["natural", "pgd20", "pgd_unimportant"]}),
     r"pgd_unimportant.*the shared baseline"),
])
def test_a_bad_study_setting_is_named_with_its_fix(change, message):
    raw = copy.deepcopy(_shipped())
    change(raw)
    with pytest.raises(StudyConfigError, match=message):
        run_params(study_config_from_dict(raw), _default_run(), raw["seeds"][0], "quantile-0of8")


def test_an_override_of_a_key_the_default_run_lacks_is_refused():
    raw = copy.deepcopy(_shipped())
    raw["runs"]["train.learning_rate"] = 0.1
    with pytest.raises(StudyConfigError, match=r"train.learning_rate: the default run's params "
                                                r"have no such key"):
        run_params(study_config_from_dict(raw), _default_run(), raw["seeds"][0], AT_RUN)


def test_the_arm_keys_are_what_the_shared_stages_do_not_read():
    """An arm may change only params no shared stage (prepare, burn-in, baseline, its
    evaluation) declares in study/dvc.yaml, or the arms could not share them."""
    pipeline = yaml.safe_load((STUDY / "dvc.yaml").read_text())["stages"]
    # (the evaluation reads cam and mask_rule for pgd_unimportant only, which the study refuses)
    for name in ("prepare", "burnin", "baseline"):
        stage = pipeline[name].get("do", pipeline[name])
        for param in stage["params"]:
            assert param.split(".")[0] not in ARM_KEYS, (name, param)
