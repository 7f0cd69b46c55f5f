"""The controls: matched-eps arithmetic, random masks with CAM's counts, the eps they record."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from part.checkpoint import read_metadata
from part.masking import compute_masks
from part.variants import epoch_budget, matched_eps, random_masks_like, training_masks


def _budget64(masks, eps, eps_low):
    return torch.where(masks, torch.tensor(eps, dtype=torch.float64),
                       torch.tensor(eps_low, dtype=torch.float64))


def _masks(shape, density, seed):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < density


def test_matched_eps_is_the_mean_of_the_budget_map_over_every_image_element():
    eps, eps_low = 8 / 255, 4 / 255
    # One plane of 4 elements with one kept: a quarter of the budget at eps.
    one = torch.tensor([[[[True, False], [False, False]]]])
    assert matched_eps(one, eps, eps_low) == pytest.approx(eps_low + (eps - eps_low) / 4,
                                                           abs=1e-17)
    # A one-plane mask stands for all 3 channels: the mean over the expanded [N,3,H,W] map.
    masks = _masks((20, 1, 8, 8), 0.3, 0)
    expanded = _budget64(masks.expand(20, 3, 8, 8), eps, eps_low)
    assert matched_eps(masks, eps, eps_low) == pytest.approx(expanded.mean().item(), abs=1e-15)
    per_channel = _masks((20, 3, 8, 8), 0.7, 1)
    budget = _budget64(per_channel, eps, eps_low)
    assert matched_eps(per_channel, eps, eps_low) == pytest.approx(budget.mean().item(),
                                                                   abs=1e-15)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 6), planes=st.sampled_from([1, 3]), height=st.integers(1, 9),
       width=st.integers(1, 9), density=st.floats(0, 1), seed=st.integers(0, 2**31))
def test_random_masks_keep_each_images_count_per_channel(n, planes, height, width, density,
                                                         seed):
    masks = _masks((n, planes, height, width), density, seed)
    drawn = random_masks_like(masks, torch.Generator().manual_seed(seed + 1))
    assert drawn.dtype == torch.bool and drawn.shape == masks.shape
    assert torch.equal(drawn.sum(dim=(2, 3)), masks.sum(dim=(2, 3)))


def test_random_masks_are_seeded_and_redrawn_at_each_refresh():
    cam = _masks((50, 1, 8, 8), 0.4, 2)
    first = training_masks("random_mask", cam, seed=0, epoch=3)
    assert torch.equal(first, training_masks("random_mask", cam, seed=0, epoch=3))
    assert not torch.equal(first, training_masks("random_mask", cam, seed=0, epoch=4))
    assert not torch.equal(first, training_masks("random_mask", cam, seed=1, epoch=3))
    assert not torch.equal(first, cam)
    assert training_masks("part", cam, seed=0, epoch=3) is cam


def test_random_mask_positions_are_uniform():
    """Keep 4 of 16 places, 4000 times: every place is kept equally often (chi-square)."""
    mask = torch.zeros(4000, 1, 4, 4, dtype=torch.bool)
    mask[:, :, 0, :] = True
    drawn = random_masks_like(mask, torch.Generator().manual_seed(0))
    counts = drawn.sum(dim=0).flatten().numpy()
    assert stats.chisquare(counts).pvalue > 1e-3


def test_the_epoch_budget_of_each_variant():
    cam = _masks((10, 1, 4, 4), 0.5, 3)
    eps, eps_low = 0.1, 0.05
    assert epoch_budget("baseline", None, eps, eps_low).for_batch(None) == eps
    matched = epoch_budget("uniform_matched", cam, eps, eps_low)
    assert matched.masks is None and matched.for_batch(None) == matched_eps(cam, eps, eps_low)
    part = epoch_budget("part", cam, eps, eps_low)
    budget = part.for_batch(cam[:2])
    expected = torch.where(cam[:2], torch.tensor(eps, dtype=torch.float32),
                           torch.tensor(eps_low, dtype=torch.float32))
    assert torch.equal(budget, expected)
    assert part.mean == matched.for_batch(None)


def test_uniform_matched_trains_on_and_records_the_mean_budget_of_its_cam_masks(tmp_path):
    from test_train import MASK_SETTINGS, _continue, _tiny_data, _tiny_params

    from part.checkpoint import load_checkpoint
    from part.train import RunSpec, train_run

    params = _tiny_params()
    burnin = tmp_path / "burnin.safetensors"
    train_run(params, RunSpec("burnin", 1, 1), _tiny_data(), torch.device("cpu"),
              out_path=burnin, log_dir=tmp_path / "logs",
              state_dir=tmp_path / "runs", show_progress=False)
    out, history = _continue(params, burnin, tmp_path, "matched", "uniform_matched",
                             refresh_every=1)
    model, _ = load_checkpoint(burnin)
    cam = compute_masks(model, _tiny_data().images, MASK_SETTINGS)
    expected = (params.eps_low + (params.eps - params.eps_low)
                * cam.double().mean().item())
    recorded = json.loads(read_metadata(out)["mean_budget_per_epoch"])
    assert set(recorded) == {"2", "3"}
    assert recorded["2"] == pytest.approx(expected, abs=1e-8)
    assert history[0]["mean_budget"] == recorded["2"]
    assert params.eps_low <= recorded["3"] <= params.eps
    assert read_metadata(out)["variant"] == "uniform_matched"
