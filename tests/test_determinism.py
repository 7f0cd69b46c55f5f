"""Deterministic CUDA (train.deterministic): the switch is a validated param, it sets what torch
needs for the same bytes on a rerun, and training applies it before its first CUDA work. The GPU
itself is checked in tests/test_cuda.py; here a CUDA device is only named, never used."""

from __future__ import annotations

import pytest
import torch

import part.training.train
from part.params import ParamsError, params_from_dict
from part.runtime.device import make_deterministic
from part.training.spec import TrainData
from part.training.train import RunSpec, train_run

CUDA = torch.device("cuda", 0)


def test_deterministic_is_on_by_default_and_must_be_true_or_false():
    assert params_from_dict({}).train.deterministic is True
    assert params_from_dict({"train": {"deterministic": False}}).train.deterministic is False
    with pytest.raises(ParamsError, match=r"train.deterministic: expected true or false"):
        params_from_dict({"train": {"deterministic": "yes"}})


@pytest.fixture
def torch_switches(monkeypatch):
    """torch's process-wide switches, recorded instead of set (and so restored afterwards)."""
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms",
                        lambda mode, **kwargs: calls.append((mode, kwargs)))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    return calls


def test_on_cuda_it_asks_for_deterministic_kernels_a_fixed_cublas_workspace_and_no_autotuning(
        torch_switches, monkeypatch):
    import os

    make_deterministic(CUDA, True)
    assert torch_switches == [(True, {})]
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert torch.backends.cudnn.benchmark is False and torch.backends.cudnn.deterministic is True
    # A deterministic workspace already chosen is kept; any other value is replaced.
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    make_deterministic(CUDA, True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":0:0")
    make_deterministic(CUDA, True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


@pytest.mark.parametrize(("device", "deterministic"), [(CUDA, False),
                                                        (torch.device("cpu"), True)])
def test_off_or_on_the_cpu_it_changes_nothing(torch_switches, device, deterministic):
    import os

    make_deterministic(device, deterministic)
    assert torch_switches == []
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert torch.backends.cudnn.benchmark is True


class _Applied(Exception):
    pass


@pytest.mark.parametrize("deterministic", [True, False])
def test_training_applies_the_param_first(monkeypatch, deterministic, tmp_path):
    def applied(device, value):
        raise _Applied(device, value)

    monkeypatch.setattr(part.training.train, "make_deterministic", applied)
    params = params_from_dict({"dataset": "synthetic", "train": {"deterministic": deterministic}})
    empty = torch.zeros(0, 3, 32, 32, dtype=torch.uint8)
    labels = torch.zeros(0, dtype=torch.long)
    data = TrainData(empty, labels, empty, labels, "synthetic", 10)
    with pytest.raises(_Applied) as raised:
        train_run(params, RunSpec("burnin-0", 1, 1), data, torch.device("cpu"),
                  out_path=tmp_path / "out.safetensors", log_dir=tmp_path / "log",
                  state_dir=tmp_path / "state", show_progress=False)
    assert raised.value.args == (torch.device("cpu"), deterministic)
