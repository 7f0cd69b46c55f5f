"""The controls: matched-eps arithmetic, random masks with given counts, and controls that spend
exactly what PART itself spent, epoch by epoch."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from part.importance.budget_trace import kept_counts
from part.importance.masks import MaskSettings
from part.importance.variants import (
    epoch_budget,
    matched_eps,
    random_masks_with_counts,
    trace_masks,
)
from part.models.checkpoint import read_metadata


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
    drawn = random_masks_with_counts(kept_counts(masks), tuple(masks.shape),
                                     torch.Generator().manual_seed(seed + 1))
    assert drawn.dtype == torch.bool and drawn.shape == masks.shape
    assert torch.equal(drawn.sum(dim=(2, 3)), masks.sum(dim=(2, 3)))


def test_random_masks_are_seeded_and_redrawn_at_each_epoch():
    cam = _masks((50, 1, 8, 8), 0.4, 2)
    counts, shape = kept_counts(cam), tuple(cam.shape)
    first = trace_masks(counts, shape, seed=0, epoch=3)
    assert torch.equal(first, trace_masks(counts, shape, seed=0, epoch=3))
    assert not torch.equal(first, trace_masks(counts, shape, seed=0, epoch=4))
    assert not torch.equal(first, trace_masks(counts, shape, seed=1, epoch=3))
    assert not torch.equal(first, cam)
    assert torch.equal(kept_counts(first), counts)


def test_random_mask_positions_are_uniform():
    """Keep 4 of 16 places, 4000 times: every place is kept equally often (chi-square)."""
    mask = torch.zeros(4000, 1, 4, 4, dtype=torch.bool)
    mask[:, :, 0, :] = True
    drawn = random_masks_with_counts(kept_counts(mask), tuple(mask.shape),
                                     torch.Generator().manual_seed(0))
    counts = drawn.sum(dim=0).flatten().numpy()
    assert stats.chisquare(counts).pvalue > 1e-3


def test_the_epoch_budget_of_each_variant():
    cam = _masks((10, 1, 4, 4), 0.5, 3)
    eps, eps_low = 0.1, 0.05
    assert epoch_budget("baseline", None, eps, eps_low).for_batch(None) == eps
    recorded = 0.0734  # any mean budget PART recorded: the control trains at exactly it
    matched = epoch_budget("uniform_matched", None, eps, eps_low, matched_mean=recorded)
    assert matched.masks is None and matched.for_batch(None) == recorded == matched.mean
    with pytest.raises(ValueError):
        epoch_budget("uniform_matched", cam, eps, eps_low)  # never from its own masks
    part = epoch_budget("part", cam, eps, eps_low)
    budget = part.for_batch(cam[:2])
    expected = torch.where(cam[:2], torch.tensor(eps, dtype=torch.float32),
                           torch.tensor(eps_low, dtype=torch.float32))
    assert torch.equal(budget, expected)
    # PART's mean budget: the float64 mean of its whole budget map, computed independently
    assert part.mean == pytest.approx(_budget64(cam, eps, eps_low).mean().item(), abs=1e-15)


OFFICIAL = MaskSettings("gradcam", "official", batch_size=64)


class _EpochSpy:
    """Records the budget every call of part.training.train.train_epoch trains on, by run and epoch:
    what the runs actually trained with, seen from outside the training loop."""

    def __init__(self, monkeypatch):
        import part.training.train as train_module

        self.seen: dict[tuple[str, int], object] = {}
        real = train_module.train_epoch

        def spy(model, optimizer, data, budget, params, epoch, device, **kwargs):
            self.seen[(self.run, epoch)] = budget
            return real(model, optimizer, data, budget, params, epoch, device, **kwargs)

        self.run = ""
        monkeypatch.setattr(train_module, "train_epoch", spy)

    def mean_budget(self, run: str, epoch: int) -> float:
        return self.seen[(run, epoch)].mean

    def counts(self, run: str, epoch: int) -> torch.Tensor:
        masks = self.seen[(run, epoch)].masks
        return masks.flatten(2).sum(dim=2)


def test_the_controls_spend_exactly_what_part_itself_spent_each_epoch(tmp_path, monkeypatch):
    """PART trains 3 epochs after the burn-in with masks refreshed every epoch, so its budget
    changes from epoch to epoch and differs from what its rule gives on another model. Each
    control trains every epoch at exactly PART's mean budget (uniform_matched) or with exactly
    PART's count per image and channel (random_mask), including the epochs after a resume."""
    from test_train import (
        PART_FOR_CONTROLS,
        _continue,
        _interrupt_after_first_epoch,
        _tiny_data,
        _tiny_params,
    )

    from part.importance.budget_trace import load_trace
    from part.training.train import RunSpec, train_run

    params = _tiny_params(epochs=4)
    burnin = tmp_path / "burnin.safetensors"
    train_run(params, RunSpec("burnin", 1, 1), _tiny_data(), torch.device("cpu"),
              out_path=burnin, log_dir=tmp_path / "logs", state_dir=tmp_path / "runs",
              show_progress=False)
    spy = _EpochSpy(monkeypatch)
    spy.run = "part"
    rule = {"refresh_every": 1, "mask_settings": OFFICIAL}  # its counts vary image to image
    _continue(params, burnin, tmp_path, PART_FOR_CONTROLS, "part", **rule)
    epochs = [2, 3, 4]
    part_means = [spy.mean_budget("part", epoch) for epoch in epochs]
    assert len(set(part_means)) > 1  # refreshed masks: PART's budget moved between epochs
    trace = load_trace(tmp_path / f"{PART_FOR_CONTROLS}.trace.safetensors")
    assert trace.epochs == epochs and trace.mean_budgets == part_means

    spy.run = "uniform_matched"
    _continue(params, burnin, tmp_path, "matched", "uniform_matched", **rule)
    spy.run = "random_mask"
    _interrupt_after_first_epoch(monkeypatch, params, burnin, tmp_path, "random",
                                 variant="random_mask", **rule)
    _continue(params, burnin, tmp_path, "random", "random_mask", **rule)
    for epoch, part_mean in zip(epochs, part_means, strict=True):
        assert spy.seen[("uniform_matched", epoch)].masks is None
        assert spy.mean_budget("uniform_matched", epoch) == part_mean  # equal, not close
        assert torch.equal(spy.counts("random_mask", epoch), spy.counts("part", epoch))
        assert not torch.equal(spy.seen[("random_mask", epoch)].masks,
                               spy.seen[("part", epoch)].masks)  # the same counts elsewhere
    recorded = json.loads(read_metadata(tmp_path / "matched.safetensors")
                          ["mean_budget_per_epoch"])
    assert recorded == json.loads(read_metadata(
        tmp_path / f"{PART_FOR_CONTROLS}.safetensors")["mean_budget_per_epoch"])


def test_a_control_refuses_the_trace_of_another_computation(tmp_path):
    from test_train import MASK_SETTINGS, PART_FOR_CONTROLS, _continue, _tiny_data, _tiny_params

    from part.importance.budget_trace import TraceError
    from part.training.train import RunSpec, train_run

    params = _tiny_params()
    burnin = tmp_path / "burnin.safetensors"
    train_run(params, RunSpec("burnin", 1, 1), _tiny_data(), torch.device("cpu"),
              out_path=burnin, log_dir=tmp_path / "logs", state_dir=tmp_path / "runs",
              show_progress=False)
    _continue(params, burnin, tmp_path, PART_FOR_CONTROLS, "part", refresh_every=1)
    with pytest.raises(TraceError, match="eps_low"):
        _continue(_tiny_params(eps_low="6/255"), burnin, tmp_path, "matched", "uniform_matched",
                  refresh_every=1)
    trace = tmp_path / f"{PART_FOR_CONTROLS}.trace.safetensors"
    trace.unlink()
    spec = RunSpec("random", 2, params.epochs, variant="random_mask", init_checkpoint=burnin,
                   mask_settings=MASK_SETTINGS, refresh_every=1, follows=trace)
    with pytest.raises(TraceError, match="no budget trace"):
        train_run(params, spec, _tiny_data(), torch.device("cpu"),
                  out_path=tmp_path / "random.safetensors", log_dir=tmp_path / "logs" / "r",
                  state_dir=tmp_path / "runs", show_progress=False)
