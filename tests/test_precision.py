"""Numerics: TF32 on or off for CUDA matmuls and cuDNN convolutions, set through torch's current
`fp32_precision` API, and restored after. The settings are process-wide and read on the CPU too,
so all of this runs without a GPU."""

from __future__ import annotations

import pytest
import torch

from part.runtime.precision import numerics


def _settings() -> tuple[str, str]:
    return torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision


@pytest.fixture
def restored_settings():
    before = _settings()
    yield
    torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = before


@pytest.mark.filterwarnings("error")  # a deprecation warning from torch fails the test
@pytest.mark.parametrize(("precision", "inside"), [("fp32", "ieee"), ("tf32", "tf32"),
                                                    ("bf16", "ieee")])
@pytest.mark.parametrize("outside", ["tf32", "ieee", "none"])
def test_numerics_sets_the_fp32_precision_of_matmuls_and_convolutions_and_restores_it(
        restored_settings, precision, inside, outside):
    # A setting made through the new API beforehand (as torch.compile's inductor makes it):
    # reading a legacy flag after it raises a RuntimeError in torch >= 2.9.
    torch.backends.cuda.matmul.fp32_precision = outside
    torch.backends.cudnn.conv.fp32_precision = outside
    with numerics(precision):
        assert _settings() == (inside, inside)
    assert _settings() == (outside, outside)


def test_numerics_restores_the_settings_when_the_body_raises(restored_settings):
    torch.backends.cuda.matmul.fp32_precision = torch.backends.cudnn.conv.fp32_precision = "tf32"
    with pytest.raises(KeyError), numerics("fp32"):
        raise KeyError("in the body")
    assert _settings() == ("tf32", "tf32")
