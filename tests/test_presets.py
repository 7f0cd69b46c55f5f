"""The paper presets in configs/: each loads, holds the paper code's settings, and its header
says what its values are (a header once claimed SVHN's weight decay and step were CIFAR-10's)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from part.params import load_params

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PAPER_PRESETS = sorted(path for path in CONFIGS.glob("*.yaml")
                       if not path.name.startswith("fashion-mnist"))


def test_every_family_has_a_preset_for_every_paper_setting():
    names = {path.stem for path in PAPER_PRESETS}
    for stem in ("cifar10-resnet18", "cifar10-wrn34", "svhn-resnet18", "tinyimagenet-resnet18"):
        assert {stem, f"{stem}-trades", f"{stem}-mart"} <= names


@pytest.mark.parametrize("path", PAPER_PRESETS, ids=lambda path: path.stem)
def test_a_paper_preset_runs_the_paper_codes_settings_and_says_so(path):
    params = load_params(path)
    header = "".join(line for line in path.read_text().splitlines(keepends=True)
                     if line.startswith("#"))
    method = {"": "at", "-trades": "trades", "-mart": "mart"}[
        re.search(r"(-trades|-mart)?$", path.stem).group(0)]
    assert params.method == method
    assert (params.epochs, params.burn_in_epochs, params.train.lr) == (80, 20, 0.01)
    assert (params.eps, params.eps_low) == (8 / 255, 7 / 255)
    assert params.train.random_start == "paper" and params.train.precision == "tf32"
    assert params.eval.n_autoattack is None and params.eval.n is None  # the whole test set
    assert "autoattack" in params.eval.attacks and "mma" in params.eval.attacks
    svhn = params.dataset == "svhn"
    assert params.train.weight_decay == (3.5e-3 if svhn else 2e-4)
    assert params.train.step_size == (1 / 255 if svhn else 2 / 255)
    wd = re.search(r"\bwd ([0-9.e-]+)", header).group(1)
    step = re.search(r"\bstep (\d+/255)", header).group(1)
    assert float(wd) == params.train.weight_decay
    assert step == ("1/255" if svhn else "2/255")
    assert f"cp configs/{path.name} params.yaml" in header
    # never a selection on the test set: a validation split held out, and the header says so
    assert params.data.val_subset == 1000 and "data.val_subset: 0" in header
