"""The fast paths a GPU run takes (bf16 autocast, channels_last, torch.compile), run on the CPU:
one training step of each method on a per-pixel budget map and one evaluation, each compared
with plain fp32 eager, and the budget bound |x_adv - x| <= E holding exactly under each.

Every comparison has two halves:
- the numerics, with a PGD step so small (1e-6) that the adversarial examples are all but the
  random start: what differs then is the arithmetic of the forward and backward passes alone;
- the budget, with the training schedule's real steps (2/255, projections active): PGD follows
  the *sign* of the input gradient, so a last-bit difference flips the step of an element
  whose gradient is near zero, and the examples (not the arithmetic) differ; there the loss,
  an average over the batch, is compared loosely and the bound is checked exactly.
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from _budget_batch import budget_batch

import part.training.methods
from part.attacks.linf import pgd
from part.evaluation.evaluate import attack_correctness
from part.models import build_model
from part.runtime.precision import precision_context
from part.training.methods import METHODS, TrainingAttack, training_loss

CPU = torch.device("cpu")
EPS, EPS_LOW = 8 / 255, 4 / 255
TINY_STEP = 1e-6
REAL_STEP = 2 / 255
CONFIGS = ("bf16", "channels_last", "compiled")

# Relative tolerances against fp32 eager, per configuration, for the tiny-step numerics.
# bf16 keeps 8 significant bits (a rounding of ~0.4% per tensor), compounded over cnn_small's
# three convolutions and the classifier, forward and backward: measured 4e-5..1.2e-4 on the loss
# and 0.065..0.08 on the gradient (its relative L2 distance). Reordered float32 sums
# (channels_last kernels, inductor's fused kernels) are last-bit differences, yet max pooling
# picks another of two equal-looking values now and then and routes a gradient elsewhere:
# measured up to 1.1e-6 on the loss and 5e-3 on the gradient.
LOSS_RTOL = {"bf16": 2e-3, "channels_last": 1e-5, "compiled": 1e-5}
GRAD_RTOL = {"bf16": 0.15, "channels_last": 2e-2, "compiled": 2e-2}
# With real PGD steps the examples differ by flipped steps (see above): the batch-mean loss
# moved by up to 0.6% in measurements, in every configuration alike.
REAL_STEP_LOSS_RTOL = 3e-2


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("cnn_small", num_classes=10, in_channels=3)


@pytest.fixture(scope="module")
def compiled(model):
    """One compiled module for the whole file: it shares `model`'s weights, and every test
    reuses its graphs (train and eval mode, with and without input gradients)."""
    return torch.compile(model)


@pytest.fixture(scope="module")
def batch():
    return budget_batch(8, 1, EPS, EPS_LOW)


def _runs_as(config: str, model, compiled):
    """The model and the context of `config`. channels_last converts the weights (so every
    activation is channels_last) but not the images: a uniform random start drawn into a
    channels_last tensor fills it in memory order, another start than fp32 eager's; the
    budget test below gives channels_last images as well."""
    if config == "compiled":
        return compiled, contextlib.nullcontext()
    if config == "channels_last":
        converted = copy.deepcopy(model).to(memory_format=torch.channels_last)
        return converted, contextlib.nullcontext()
    return model, precision_context("bf16", CPU)


def _step(method: str, net, context, x, y, budget, step_size: float):
    """One training step's loss and the gradient of the weights, from one seeded start."""
    attack = TrainingAttack(step_size=step_size, steps=3, eps=EPS)
    torch.manual_seed(5)
    net.train()  # as train_epoch runs it
    net.zero_grad(set_to_none=True)
    with context:
        result = training_loss(method, net, x, y, budget, attack, beta=6.0)
    result.loss.backward()
    gradient = torch.cat([p.grad.flatten() for p in net.parameters()])
    return result.loss.item(), gradient


def _relative_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def _assert_exactly_within(x_adv, x, budget) -> None:
    # No tolerance: in float64, and in the images' own float32.
    assert ((x_adv.double() - x.double()).abs() <= budget.double()).all()
    assert ((x_adv - x).abs() <= budget).all()
    assert ((x_adv >= 0) & (x_adv <= 1)).all()


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("method", METHODS)
def test_a_training_step_matches_fp32_eager_within_its_tolerance(model, compiled, batch,
                                                                 config, method):
    x, y, budget = batch
    loss_ref, grad_ref = _step(method, model, contextlib.nullcontext(), x, y, budget, TINY_STEP)
    net, context = _runs_as(config, model, compiled)
    loss, grad = _step(method, net, context, x, y, budget, TINY_STEP)
    assert loss == pytest.approx(loss_ref, rel=LOSS_RTOL[config])
    assert _relative_distance(grad, grad_ref) <= GRAD_RTOL[config]


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("method", METHODS)
def test_a_training_step_keeps_every_element_in_its_budget_exactly(model, compiled, batch,
                                                                   monkeypatch, config, method):
    x, y, budget = batch
    generated = []

    def recording_pgd(net, x_in, y_in, eps, *args, **kwargs):
        x_adv = pgd(net, x_in, y_in, eps, *args, **kwargs)
        generated.append((x_adv, x_in, eps))
        return x_adv

    loss_ref, _ = _step(method, model, contextlib.nullcontext(), x, y, budget, REAL_STEP)
    net, context = _runs_as(config, model, compiled)
    if config == "channels_last":  # as the pipeline gives batches on CUDA (part.training.train)
        x = x.contiguous(memory_format=torch.channels_last)
    monkeypatch.setattr(part.training.methods, "pgd", recording_pgd)
    loss, _ = _step(method, net, context, x, y, budget, REAL_STEP)
    assert len(generated) == 1
    x_adv, x_in, eps = generated[0]
    assert eps is budget and x_in is x
    assert (x_adv != x).float().mean() > 0.5  # it did attack
    _assert_exactly_within(x_adv, x, budget)
    assert loss == pytest.approx(loss_ref, rel=REAL_STEP_LOSS_RTOL)


def _own_predictions(model, x):
    with torch.no_grad():
        return model.eval()(x).argmax(dim=1)


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS)
def test_an_evaluation_keeps_the_budget_and_agrees_with_fp32_eager(model, compiled, batch,
                                                                   config):
    x, _, budget = batch
    # The model's own clean predictions as labels, and a budget small enough that PGD-20 breaks
    # only part of them: a comparison of correctness that is neither all-true nor all-false.
    y = _own_predictions(model, x)
    small = budget / 16
    net, context = _runs_as(config, model, compiled)
    if config == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    with context:
        torch.manual_seed(3)
        x_adv = pgd(net, x, y, small, REAL_STEP / 16, 20)
    _assert_exactly_within(x_adv, x, small)
    torch.manual_seed(3)
    x_adv_ref = pgd(model, x.contiguous(), y, small, REAL_STEP / 16, 20)
    if config != "channels_last":  # the same start: most elements end where fp32's end
        assert (x_adv == x_adv_ref).float().mean() >= 0.9
    # The evaluation stage's own function (fp32 by its own choice; bf16 is the monitor's case,
    # pgd under autocast above). Flipped sign steps may change the verdict on an example
    # near its decision boundary: at most one of the eight.
    settings = {"eps": EPS / 16, "step_size": REAL_STEP / 16, "steps": 20, "batch_size": 8}
    reference = attack_correctness(model, x.contiguous(), y, "pgd20", **settings)
    assert 0 < reference.sum() < reference.numel()
    if config != "bf16":
        correct = attack_correctness(net, x, y, "pgd20", **settings)
        assert (correct != reference).sum() <= 1
