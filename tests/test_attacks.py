"""Attacks under a float or per-pixel budget: bounds, strength, oracles (torchattacks), errors.

A tiny BN CNN is adversarially trained (FGSM with random start) on a learnable synthetic task so
that robust accuracy at EPS sits in the middle (about 50%), where a weak or broken attack shows.
"""

from __future__ import annotations

import copy

import _paper_reference as paper
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from part.attacks.linf import (
    ATTACK_LOSSES,
    AttackError,
    cw_inf,
    fgsm,
    logit_margin,
    mma,
    mma_max,
    mma_max_candidates,
    pgd,
)
from part.errors import PartError

NUM_CLASSES, CHANNELS, SIZE = 10, 3, 16
EPS, EPS_LOW, STEP = 0.03, 0.015, 0.01
ORACLE_EXAMPLES = 2000


# --------------------------------------------------------------------------- fixtures


def _synthetic_split(count: int, templates: Tensor, generator: torch.Generator):
    labels = torch.randint(0, NUM_CLASSES, (count,), generator=generator)
    noise = 0.15 * torch.randn(count, CHANNELS, SIZE, SIZE, generator=generator)
    images = (0.5 + 0.25 * templates[labels] + noise).clamp(0.0, 1.0)
    return images, labels


def _tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(CHANNELS, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, NUM_CLASSES),
    )


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The tiny model's ops are too small to gain from threads, and on a busy 2-core machine
    oversubscribed threads slow them down by an order of magnitude."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def task(_one_thread):
    """(model in eval mode, test images, test labels); ~4 s of one core."""
    generator = torch.Generator().manual_seed(0)
    # Smooth class templates: each class is a low-frequency colour pattern.
    coarse = torch.randn(NUM_CLASSES, CHANNELS, 4, 4, generator=generator)
    templates = F.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    templates = templates / templates.abs().amax(dim=(1, 2, 3), keepdim=True)
    train_x, train_y = _synthetic_split(4096, templates, generator)
    test_x, test_y = _synthetic_split(ORACLE_EXAMPLES, templates, generator)

    torch.manual_seed(0)
    model = _tiny_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(300):
        index = torch.randint(0, train_x.shape[0], (128,), generator=generator)
        x, y = train_x[index], train_y[index]
        if step >= 100:  # natural warm-up, then fast adversarial training
            model.eval()
            x = pgd(model, x, y, EPS, 1.25 * EPS, 1, random_start=True)
            model.train()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    return model, test_x, test_y


@pytest.fixture(scope="module")
def small_batch(task):
    model, x, y = task
    return model, x[:64], y[:64]


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


def _budget_map(x: Tensor, shape: str, seed: int = 1) -> Tensor:
    """Values in {0, EPS_LOW, EPS} from a random mask: per pixel [B,1,H,W] or per channel."""
    generator = torch.Generator().manual_seed(seed)
    channels = 1 if shape == "pixel" else x.shape[1]
    draw = torch.rand(x.shape[0], channels, *x.shape[2:], generator=generator)
    return torch.where(draw < 0.2, 0.0, torch.where(draw < 0.6, EPS_LOW, EPS))


# --------------------------------------------------------------------------- every attack


def _pgd_with(loss: str, start):
    def attack(model, x, y, budget):
        target = None
        if loss in ("targeted_margin", "targeted_hinge"):
            target = (y + 1) % NUM_CLASSES
        return pgd(model, x, y, budget, STEP, 5, random_start=start, loss=loss, target=target)

    return attack


ATTACKS = {
    **{f"pgd-{loss}-uniform": _pgd_with(loss, True) for loss in ATTACK_LOSSES},
    "pgd-ce-normal": _pgd_with("ce", "normal"),
    "pgd-kl-normal": _pgd_with("kl", "normal"),
    "pgd-ce-nostart": _pgd_with("ce", False),
    "fgsm": lambda model, x, y, budget: fgsm(model, x, y, budget),
    "cw_inf": lambda model, x, y, budget: cw_inf(model, x, y, budget, STEP, 5),
    "pgd-ce-paper-start": lambda model, x, y, budget: pgd(model, x, y, budget, STEP, 5,
                                                           start="paper", start_eps=EPS),
    "pgd-kl-paper-start": lambda model, x, y, budget: pgd(model, x, y, budget, STEP, 5,
                                                           random_start="normal", loss="kl",
                                                           start="paper"),
    "mma": lambda model, x, y, budget: mma(model, x, y, budget, STEP, 5, k=3),
    "mma_max": lambda model, x, y, budget: mma_max(model, x, y, budget, STEP, 5, k=3),
}


@pytest.mark.parametrize("budget_kind", ["float", "pixel", "channel"])
@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_stays_in_its_budget_and_the_image_range(small_batch, name, budget_kind):
    model, x, y = small_batch
    budget = EPS if budget_kind == "float" else _budget_map(x, budget_kind)
    torch.manual_seed(0)
    x_adv = ATTACKS[name](model, x, y, budget)

    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    full_budget = torch.as_tensor(budget).expand_as(x)
    assert ((x_adv - x).abs() <= full_budget + 1e-6).all()
    assert (x_adv >= 0).all() and (x_adv <= 1).all()
    if budget_kind != "float":
        frozen = full_budget == 0
        assert frozen.any() and torch.equal(x_adv[frozen], x[frozen])
    # The attack used its budget rather than trivially staying inside it.
    moved = (x_adv - x).abs()
    assert (moved > 0.5 * full_budget).float().mean() > 0.5


def test_pgd_saturates_a_per_channel_map_element_by_element(small_batch):
    model, x, y = small_batch
    budget = _budget_map(x, "channel")
    torch.manual_seed(0)
    x_adv = pgd(model, x, y, budget, STEP, 10)
    unclipped = (x_adv > 0) & (x_adv < 1) & (budget > 0)
    at_edge = torch.isclose((x_adv - x).abs(), budget, atol=1e-6)
    # L-inf PGD with a step of a third of eps ends mostly on the faces of the box, so most
    # elements sit at their own budget: EPS where the map says EPS and EPS_LOW where it says so.
    assert at_edge[unclipped].float().mean() > 0.8
    for value in (EPS, EPS_LOW):
        region = unclipped & (budget == value)
        assert at_edge[region].float().mean() > 0.8


def test_fgsm_steps_each_element_by_its_own_budget(small_batch):
    model, x, y = small_batch
    budget = _budget_map(x, "pixel")
    x_var = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x_var), y, reduction="sum"), x_var)
    expected = (x + budget * grad.sign()).clamp(0, 1)
    assert torch.allclose(fgsm(model, x, y, budget), expected, atol=1e-7)


def test_a_budget_map_sits_between_its_two_levels(task):
    model, x, y = task
    x, y = x[:1000], y[:1000]
    low_high = torch.where(torch.rand(x.shape[0], 1, SIZE, SIZE) < 0.5, EPS_LOW, EPS)
    accuracy = {}
    for name, budget in (("low", EPS_LOW), ("map", low_high), ("high", EPS)):
        torch.manual_seed(0)
        accuracy[name] = _accuracy(model, pgd(model, x, y, budget, STEP / 2, 10), y)
    assert accuracy["high"] < accuracy["map"] < accuracy["low"]


# --------------------------------------------------------------------------- strength


def test_pgd_strictly_lowers_accuracy_and_robust_accuracy_is_mid_range(task):
    model, x, y = task
    natural = _accuracy(model, x, y)
    torch.manual_seed(0)
    robust = _accuracy(model, pgd(model, x, y, EPS, STEP, 10), y)
    assert natural > 0.9
    assert 0.3 < robust < 0.8 and robust < natural - 0.2


def test_more_steps_never_lower_the_loss_achieved(task):
    model, x, y = task
    x, y = x[:500], y[:500]
    achieved = []
    for steps in (0, 1, 3, 10, 20):
        x_adv = pgd(model, x, y, EPS, STEP / 2, steps, random_start=False)
        with torch.no_grad():
            achieved.append(F.cross_entropy(model(x_adv), y).item())
    assert all(
        later >= earlier - 1e-4 for earlier, later in zip(achieved, achieved[1:], strict=False)
    )
    assert achieved[-1] > 2 * achieved[0]


def test_every_loss_ascends_its_own_objective(small_batch):
    model, x, y = small_batch
    target = (y + 3) % NUM_CLASSES
    with torch.no_grad():
        clean_logits = model(x)
    clean_log_probs = F.log_softmax(clean_logits, dim=1)

    def objective(loss: str, x_adv: Tensor) -> float:
        with torch.no_grad():
            logits = model(x_adv)
        if loss == "ce":
            return F.cross_entropy(logits, y).item()
        if loss == "kl":
            log_probs = F.log_softmax(logits, dim=1)
            return F.kl_div(log_probs, clean_log_probs, log_target=True, reduction="sum").item()
        if loss == "margin":
            return logit_margin(logits, y).mean().item()
        return (logits.gather(1, target[:, None]) - logits.gather(1, y[:, None])).mean().item()

    for loss in ATTACK_LOSSES:
        torch.manual_seed(0)
        start = pgd(model, x, y, EPS, STEP, 0, random_start="normal", loss=loss, target=target)
        torch.manual_seed(0)
        end = pgd(model, x, y, EPS, STEP, 10, random_start="normal", loss=loss, target=target)
        assert objective(loss, end) > objective(loss, start) + 0.1, loss


def test_kl_uses_the_given_clean_logits(small_batch):
    model, x, y = small_batch
    with torch.no_grad():
        clean_logits = model(x)
    runs = []
    for given in (None, clean_logits):
        torch.manual_seed(0)
        runs.append(pgd(model, x, y, EPS, STEP, 5, loss="kl", clean_logits=given))
    assert torch.equal(runs[0], runs[1])
    # Other clean probabilities steer the attack elsewhere.
    torch.manual_seed(0)
    shuffled = pgd(model, x, y, EPS, STEP, 5, loss="kl", clean_logits=clean_logits.roll(1, 0))
    assert not torch.equal(shuffled, runs[0])


def test_cw_inf_is_pgd_on_the_margin(small_batch):
    model, x, y = small_batch
    torch.manual_seed(0)
    cw = cw_inf(model, x, y, EPS, STEP, 5)
    torch.manual_seed(0)
    assert torch.equal(cw, pgd(model, x, y, EPS, STEP, 5, loss="margin"))
    assert _accuracy(model, cw, y) < _accuracy(model, x, y)


@pytest.mark.slow
def test_mma_max_keeps_per_example_the_largest_margin_of_the_top_k_targeted_runs(task):
    model, x, y = task
    x, y = x[:500], y[:500]
    torch.manual_seed(0)
    x_mma = mma_max(model, x, y, EPS, STEP, 10, k=3)
    torch.manual_seed(0)
    candidates, margins = mma_max_candidates(model, x, y, EPS, STEP, 10, k=3)

    # Candidate i is the targeted margin PGD towards the i-th most likely wrong class.
    with torch.no_grad():
        clean_logits = model(x)
    others = clean_logits.masked_fill(F.one_hot(y, NUM_CLASSES).bool(), float("-inf"))
    targets = others.topk(3, dim=1).indices
    assert (targets != y[:, None]).all()
    torch.manual_seed(0)
    for rank in range(3):
        direct = pgd(model, x, y, EPS, STEP, 10, loss="targeted_margin", target=targets[:, rank])
        assert torch.equal(candidates[rank], direct)

    with torch.no_grad():
        kept_margin = logit_margin(model(x_mma), y)
    assert torch.allclose(kept_margin, margins.amax(dim=1), atol=1e-5)
    broken_by_any = (margins > 0).any(dim=1)
    assert torch.equal(kept_margin > 0, broken_by_any)
    assert _accuracy(model, x_mma, y) < _accuracy(model, x, y)


def _same_up_to_rounding(ours: Tensor, theirs: Tensor) -> None:
    """Equal but for the last bits: the paper code projects with min/max against x -+ eps, ours
    rounds the box inwards so the bound holds exactly; a gradient sign may flip at a float tie."""
    assert ((ours - theirs).abs() > 1e-6).float().mean() < 1e-3


@pytest.mark.slow
def test_mma_is_the_paper_codes_mma(task):
    model, x, y = task
    x, y = x[:500], y[:500]
    torch.manual_seed(3)
    ours = mma(model, x, y, EPS, STEP, 10, k=3)
    torch.manual_seed(3)  # the same draw as ours: one U(-eps, eps) start shared by the k runs
    noise = torch.empty_like(x).uniform_(-EPS, EPS)
    theirs = paper.mma(model, x, y, EPS, STEP, 10, noise, k=3, num_classes=NUM_CLASSES)
    model.zero_grad(set_to_none=True)  # the paper code backpropagates into the weights too
    _same_up_to_rounding(ours, theirs)
    with torch.no_grad():
        assert ((model(ours).argmax(1) == y) == (model(theirs).argmax(1) == y)).all()
    assert _accuracy(model, ours, y) < _accuracy(model, x, y)


def test_paper_start_is_the_paper_codes_part_pgd(small_batch):
    model, x, y = small_batch
    budget = _budget_map(x, "channel")
    torch.manual_seed(5)
    ours = pgd(model, x, y, budget, STEP, 4, start="paper", start_eps=EPS)
    torch.manual_seed(5)
    noise = torch.empty_like(x).uniform_(-EPS, EPS)  # every element at the full eps, unprojected
    theirs = paper.part_pgd(model, x, y, budget, noise, num_steps=4, step_size=STEP)
    model.zero_grad(set_to_none=True)  # the paper code backpropagates into the weights too
    _same_up_to_rounding(ours, theirs)
    # Ours draws within each element's budget instead: another start, another result.
    torch.manual_seed(5)
    assert not torch.equal(pgd(model, x, y, budget, STEP, 4), ours)


def _precisions_here() -> list[str]:
    """fp32 everywhere; bf16 autocast where the CPU (or GPU) runs it; tf32 on CUDA only."""
    available = ["fp32", "bf16"]
    if torch.cuda.is_available():
        available.append("tf32")
    return available


@pytest.mark.parametrize("precision", _precisions_here())
@pytest.mark.parametrize("eps_pair", [(8 / 255, 7 / 255), (0.1, 0.0875), (EPS, EPS_LOW)])
def test_every_element_stays_in_its_own_budget_exactly_under_each_precision(small_batch,
                                                                             precision, eps_pair):
    from part.runtime.precision import precision_context

    model, x, y = small_batch
    eps, eps_low = eps_pair
    grid = (x * 255).round() / 255  # pixel values as data sets store them
    mask = torch.rand(x.shape[0], 1, *x.shape[2:], generator=torch.Generator().manual_seed(2)) < .6
    budget = torch.where(mask, eps, eps_low)
    device = torch.device("cuda" if precision == "tf32" else "cpu")
    with precision_context(precision, device):
        for x_in in (x, grid):
            for start in ("budget", "paper"):
                x_adv = pgd(model, x_in, y, budget, eps / 4, 3, start=start, start_eps=eps)
                # Exactly: in float64, with no tolerance, and in the images' own float32.
                assert ((x_adv.double() - x_in.double()).abs() <= budget.double()).all()
                assert ((x_adv - x_in).abs() <= budget).all()
                assert ((x_adv >= 0) & (x_adv <= 1)).all()
            x_uniform = pgd(model, x_in, y, eps, eps / 4, 3)
            as_stored = torch.tensor(eps, dtype=torch.float32).double()  # as a budget map holds it
            assert ((x_uniform.double() - x_in.double()).abs() <= as_stored).all()


# --------------------------------------------------------------------------- caller's state


@pytest.mark.parametrize("training", [False, True])
def test_attacks_leave_mode_and_parameter_grads_alone(small_batch, training):
    model, x, y = small_batch
    running_means = [m.running_mean.clone() for m in model.modules() if hasattr(m, "running_mean")]
    model.train(training)
    try:
        pgd(model, x, y, EPS, STEP, 2)
        mma(model, x, y, EPS, STEP, 1, k=2)
        mma_max(model, x, y, EPS, STEP, 1, k=2)
        assert model.training is training
        assert all(parameter.grad is None for parameter in model.parameters())
    finally:
        model.eval()
        # Train-mode forwards moved the BN statistics; put them back for the other tests.
        modules = [m for m in model.modules() if hasattr(m, "running_mean")]
        for module, mean in zip(modules, running_means, strict=True):
            module.running_mean.copy_(mean)


def test_pgd_works_under_no_grad_and_frozen_parameters(small_batch):
    model, x, y = small_batch
    torch.manual_seed(0)
    reference = pgd(model, x, y, EPS, STEP, 5)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    try:
        with torch.no_grad():
            torch.manual_seed(0)
            frozen = pgd(model, x, y, EPS, STEP, 5)
    finally:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
    assert torch.equal(frozen, reference)


def test_pgd_works_under_autocast(small_batch):
    model, x, y = small_batch
    budget = _budget_map(x, "pixel")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_adv = pgd(model, x, y, budget, STEP, 5, loss="kl")
        x_mma = mma(model, x, y, EPS, STEP, 3)
    assert x_adv.dtype == torch.float32 and x_mma.dtype == torch.float32
    assert ((x_adv - x).abs() <= budget + 1e-6).all()
    assert _accuracy(model, x_mma, y) < _accuracy(model, x, y)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_attacks_run_on_the_tensors_device(small_batch):
    model, x, y = small_batch
    device_model = copy.deepcopy(model).cuda()
    x_gpu, y_gpu = x.cuda(), y.cuda()
    budget = _budget_map(x, "channel").cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        x_adv = pgd(device_model, x_gpu, y_gpu, budget, STEP, 5)
        x_mma = mma(device_model, x_gpu, y_gpu, EPS, STEP, 3)
    assert x_adv.device == x_gpu.device and x_mma.device == x_gpu.device
    assert ((x_adv - x_gpu).abs() <= budget + 1e-6).all()
    assert _accuracy(device_model, x_adv, y_gpu) < _accuracy(device_model, x_gpu, y_gpu)


def test_zero_steps_return_the_start_point(small_batch):
    model, x, y = small_batch
    assert torch.equal(pgd(model, x, y, EPS, STEP, 0, random_start=False), x)
    start = pgd(model, x, y, EPS, STEP, 0, random_start=True)
    assert not torch.equal(start, x) and ((start - x).abs() <= EPS + 1e-6).all()


# --------------------------------------------------------------------------- oracles


@pytest.mark.slow
def test_pgd_matches_torchattacks(task):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = task
    oracle = torchattacks.PGD(model, eps=EPS, alpha=STEP, steps=10, random_start=True)

    # Same seed: the same uniform draw (U[-eps, eps]), so the runs should agree per example.
    torch.manual_seed(7)
    ours = pgd(model, x, y, EPS, STEP, 10)
    torch.manual_seed(7)
    theirs = oracle(x, y)
    with torch.no_grad():
        ours_right = model(ours).argmax(1) == y
        theirs_right = model(theirs).argmax(1) == y
    # Their loss is a batch mean, ours a sum: identical gradient signs up to rare float ties;
    # ours rounds its final projection inwards (the bound holds exactly), theirs to nearest.
    _same_up_to_rounding(ours, theirs)
    assert (ours_right == theirs_right).float().mean() > 0.999

    # Independent seeds: the robust accuracies agree to within a percentage point.
    ours_acc, theirs_acc = [], []
    for seed in (1, 2):
        torch.manual_seed(seed)
        ours_acc.append(_accuracy(model, pgd(model, x, y, EPS, STEP, 10), y))
        torch.manual_seed(seed + 100)
        theirs_acc.append(_accuracy(model, oracle(x, y), y))
    ours_mean, theirs_mean = sum(ours_acc) / 2, sum(theirs_acc) / 2
    print(f"\nPGD-10 robust accuracy, ours {ours_acc}, torchattacks {theirs_acc}")
    assert abs(ours_mean - theirs_mean) < 0.01


def test_fgsm_matches_torchattacks(task):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = task
    ours = fgsm(model, x, y, EPS)
    theirs = torchattacks.FGSM(model, eps=EPS)(x, y)
    # Their loss is a batch mean, ours a sum: the same gradient signs up to rare float ties.
    _same_up_to_rounding(ours, theirs)
    assert abs(_accuracy(model, ours, y) - _accuracy(model, theirs, y)) < 0.002


# --------------------------------------------------------------------------- errors


def _raises(match: str, call) -> None:
    with pytest.raises(AttackError, match=match) as info:
        call()
    assert isinstance(info.value, PartError)


def test_invalid_arguments_are_named(small_batch):
    model, x, y = small_batch
    _raises(r"eps must be >= 0", lambda: pgd(model, x, y, -0.1, STEP, 1))
    _raises(r"step_size must be a python float >= 0", lambda: pgd(model, x, y, EPS, -1.0, 1))
    _raises(r"steps must be an int >= 0", lambda: pgd(model, x, y, EPS, STEP, -1))
    _raises(r"steps must be an int >= 0", lambda: pgd(model, x, y, EPS, STEP, 2.0))
    _raises(
        r"budget map of shape \(64, 2, 16, 16\) does not broadcast to the images",
        lambda: pgd(model, x, y, torch.zeros(64, 2, 16, 16), STEP, 1),
    )
    _raises(
        r"budget map of shape \(64, 1, 16, 16\) does not broadcast",
        lambda: pgd(model, x[:8], y[:8], torch.zeros(64, 1, 16, 16), STEP, 1),
    )
    _raises(
        r"budget map must be a float tensor.*torch.where\(mask, eps, eps_low\)",
        lambda: pgd(model, x, y, torch.ones(64, 1, 16, 16, dtype=torch.bool), STEP, 1),
    )
    _raises(
        r"unknown attack loss 'mse'; allowed: ce, kl, margin, targeted_margin",
        lambda: pgd(model, x, y, EPS, STEP, 1, loss="mse"),
    )
    _raises(
        r"'targeted_margin' needs target=",
        lambda: pgd(model, x, y, EPS, STEP, 1, loss="targeted_margin"),
    )
    _raises(
        r"target must be an int64 tensor of shape \[64\]",
        lambda: pgd(model, x, y, EPS, STEP, 1, loss="targeted_margin", target=y[:3]),
    )
    _raises(
        r"unknown random_start 'gauss'; allowed",
        lambda: pgd(model, x, y, EPS, STEP, 1, random_start="gauss"),
    )
    _raises(r"unknown random_start 1", lambda: pgd(model, x, y, EPS, STEP, 1, random_start=1))
    _raises(r"labels y must be an int64 tensor of shape \[64\]", lambda: fgsm(model, x, y[:5], EPS))
    _raises(r"labels y must be an int64", lambda: fgsm(model, x, y.int(), EPS))
    _raises(r"input x must be a float tensor \[B,C,H,W\]", lambda: fgsm(model, x[0], y, EPS))
    _raises(
        r"clean_logits must be a \[64, num_classes\] tensor",
        lambda: pgd(model, x, y, EPS, STEP, 1, loss="kl", clean_logits=torch.zeros(3, 10)),
    )
    _raises(
        r"mma k must be an int in \[1, num_classes - 1 = 9\]",
        lambda: mma(model, x, y, EPS, STEP, 1, k=10),
    )
    _raises(r"mma k must be an int", lambda: mma(model, x, y, EPS, STEP, 1, k=0))
    _raises(r"eps must be >= 0", lambda: cw_inf(model, x, y, -EPS, STEP))
    _raises(r"unknown start rule 'torch'; allowed: budget, paper",
            lambda: pgd(model, x, y, EPS, STEP, 1, start="torch"))
    _raises(r"start='paper' with a budget map .* pass start_eps=",
            lambda: pgd(model, x, y, _budget_map(x, "pixel"), STEP, 1, start="paper"))
