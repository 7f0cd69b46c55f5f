"""params.yaml -> Params: budgets as fractions; one message per bad key, with the allowed values."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from part.params import ParamsError, load_params, params_from_dict, parse_budget

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("given", "expected"),
    [("8/255", 8 / 255), (" 7 / 255 ", 7 / 255), (0.1, 0.1), (0, 0.0), ("0.03", 0.03),
     ("2e-2", 0.02), (1, 1.0)],
)
def test_budgets_accept_fractions_and_numbers(given, expected):
    assert parse_budget(given, "eps") == pytest.approx(expected)


@pytest.mark.parametrize("given", ["8//255", "8/0", "abc", -0.1, 1.5, True, [8, 255], "nan"])
def test_bad_budgets_name_the_key(given):
    with pytest.raises(ParamsError, match="eps"):
        parse_budget(given, "eps")


def test_every_budget_key_takes_a_fraction():
    params = params_from_dict({"eps": "8/255", "eps_low": "7/255",
                               "train": {"step_size": "2/255"}, "eval": {"eps": "4/255"}})
    assert params.eps == pytest.approx(8 / 255)
    assert params.eps_low == pytest.approx(7 / 255)
    assert params.train.step_size == pytest.approx(2 / 255)
    assert params.eval_eps == pytest.approx(4 / 255)
    assert params.eval_step_size == pytest.approx(2 / 255)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"eps": "8/255", "eps_low": "9/255"}, r"eps_low .* must not exceed eps"),
        ({"epochs": -1}, r"epochs: must be a positive whole number"),
        ({"burn_in_epochs": 10, "epochs": 10}, r"burn_in_epochs .* smaller than epochs"),
        ({"dataset": "mnist"}, r"dataset: 'mnist' is not one of fashion-mnist, cifar10, svhn"),
        ({"model": "vgg16"}, r"model: 'vgg16' is not one of cnn_small, cnn_small_gn, resnet18"),
        ({"method": "awp"}, r"method: 'awp' is not one of at, trades, mart"),
        ({"cam": "scorecam"}, r"cam: 'scorecam' is not one of gradcam, xgradcam, layercam"),
        ({"mask_rule": "otsu"}, r"mask_rule: 'otsu' is not one of official, quantile"),
        ({"learning_rate": 0.1}, r"unknown key learning_rate .* allowed at the top level"),
        ({"train": {"lr_schedul": "official"}}, r"unknown key train.lr_schedul .* lr_schedule"),
        ({"train": {"lr_schedule": "cosine"}}, r"train.lr_schedule: 'cosine' is not one of"),
        ({"train": {"precision": "fp16"}}, r"train.precision: .fp16. is not one of fp32, tf32"),
        ({"train": {"random_start": "torch"}}, r"train.random_start: 'torch' is not one of budget"),
        ({"mask": {"alignment": "batch"}}, r"mask.alignment: 'batch' is not one of sample, paper"),
        ({"eval": {"attacks": ["pgd40"]}}, r"eval.attacks: unknown pgd40; allowed: .*mma_max"),
        ({"train": {"batch_size": 0}}, r"train.batch_size: must be a positive"),
        ({"train": {"lr": -0.1}}, r"train.lr: must be 0 or more"),
        ({"eval": {"attacks": ["pgd20", "deepfool"]}}, r"eval.attacks: unknown deepfool"),
        ({"mask": {"quantile": 1.5}}, r"mask.quantile must be in \(0, 1\]"),
        ({"seed": 1}, r"seed: replaced by `seeds`, a list .* seeds: \[1\]"),
        ({"seeds": [0, 0]}, r"seeds: give a list of distinct whole numbers"),
        ({"seeds": []}, r"seeds: give a list of distinct whole numbers"),
        ({"seeds": [1.5]}, r"seeds: give a list of distinct whole numbers"),
        ({"variants": ["part"]}, r"variants: .* include baseline"),
        ({"variants": ["baseline", "uniform"]}, r"variants: unknown uniform; allowed: baseline, "
                                                r"part$"),
        ({"variants": ["baseline", "part", "random_mask"]},
         r"variants: random_mask follow part's recorded budget trace.*list them under `controls`"),
        ({"controls": ["uniform"]}, r"controls: unknown uniform; allowed: uniform_matched, "
                                    r"random_mask"),
        ({"variants": ["baseline"], "controls": ["random_mask"]}, r"add part to `variants`"),
        ({"data": {"val_subset": -1}}, r"data.val_subset: must be 0 or more"),
        ({"data": {"seed": -1}}, r"data.seed: must be 0 or more"),
        ({"data": {"download": "yes"}}, r"data.download: expected true or false"),
    ],
)
def test_invalid_values_name_the_key_and_the_allowed_values(raw, message):
    with pytest.raises(ParamsError, match=message):
        params_from_dict(raw)


def test_load_params_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"eps": 0.1, "eps_low": 0.2}))
    with pytest.raises(ParamsError, match=rf"{path}: eps_low"):
        load_params(path)
    with pytest.raises(ParamsError, match="no such params file"):
        load_params(tmp_path / "missing.yaml")
    path.write_text("eps: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(path)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")) + [ROOT / "params.yaml"],
                         ids=lambda p: p.name)
def test_shipped_params_and_presets_are_valid(path):
    load_params(path)


def test_a_stage_given_bad_params_prints_one_message_and_exits_2(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("eps: 8/255\neps_low: 9/255\n")
    result = subprocess.run([sys.executable, str(ROOT / "stages" / "prepare.py"),
                             "--params", str(bad)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "eps_low" in result.stderr and "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "data").exists()
