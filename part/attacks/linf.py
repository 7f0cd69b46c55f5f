"""L-inf attacks under a per-element budget: one PGD serves AT, PART, TRADES, MART and evaluation.

The budget ``eps`` is either a python float (the usual uniform ball) or a float tensor that
broadcasts to the images (PART's budget map, e.g. ``torch.where(mask, eps, eps_low)`` of shape
[B,1,H,W] or [B,C,H,W]). Every attack projects ``x_adv - x`` element-wise into ``[-E, E]`` and
then clips to the image range [0, 1].

All attacks work on the tensors' device, leave the model's train/eval mode alone (the caller
decides, e.g. eval for evaluation), never touch parameter ``.grad`` (gradients are taken w.r.t.
the input only), never synchronise with the host, and work under an active ``torch.autocast``
(losses are computed in float32 from the logits).
"""

from __future__ import annotations

import numbers
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from part.errors import PartError
from part.runtime.random_draws import BatchDraws

AttackLoss = Literal["ce", "kl", "margin", "targeted_margin", "targeted_hinge"]
RandomStart = bool | None | Literal["uniform", "normal"]
StartRule = Literal["budget", "paper"]

ATTACK_LOSSES: tuple[str, ...] = ("ce", "kl", "margin", "targeted_margin", "targeted_hinge")
RANDOM_STARTS: tuple[object, ...] = (True, False, None, "uniform", "normal")
START_RULES: tuple[str, ...] = ("budget", "paper")

GLOBAL_DRAWS = BatchDraws()  # torch's global RNG, the whole batch
# TRADES and MART start from a tiny Gaussian perturbation rather than a uniform draw.
NORMAL_START_STD = 0.001
# The paper code's MMA hinge: -max(z_y - z_t + kappa, 0), so the push stops kappa logits past t.
MMA_KAPPA = 50.0

__all__ = [
    "ATTACK_LOSSES",
    "AttackError",
    "cw_inf",
    "fgsm",
    "logit_margin",
    "mma",
    "mma_max",
    "mma_max_candidates",
    "pgd",
]


class AttackError(PartError):
    """An attack was called with arguments it cannot honour."""


# --------------------------------------------------------------------------- validation
# Only shapes, dtypes and python scalars are checked: a data-dependent check (e.g. "is every
# element of the budget map >= 0") would force a host sync on every call.


def _check_images_and_labels(x: Tensor, y: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise AttackError(
            f"attack input x must be a float tensor [B,C,H,W] with values in [0,1]; got {shape}"
        )
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or tuple(y.shape) != (x.shape[0],):
        got = (tuple(y.shape), y.dtype) if isinstance(y, Tensor) else type(y).__name__
        raise AttackError(
            f"attack labels y must be an int64 tensor of shape [{x.shape[0]}] (one per image); "
            f"got {got}"
        )


def _is_real_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _budget(eps: float | Tensor, x: Tensor) -> float | Tensor:
    """The budget as a python float, or as a tensor on x's device and dtype that broadcasts to x."""
    if _is_real_number(eps):
        if eps < 0:
            raise AttackError(f"attack budget eps must be >= 0; got {eps}")
        return float(eps)
    if not isinstance(eps, Tensor):
        raise AttackError(
            "attack budget eps must be a python float or a float tensor broadcastable to x "
            f"{tuple(x.shape)}; got {type(eps).__name__}"
        )
    if not eps.is_floating_point():
        raise AttackError(
            f"attack budget map must be a float tensor; got dtype {eps.dtype}. Build it from a "
            "boolean mask with torch.where(mask, eps, eps_low)."
        )
    try:
        broadcast = torch.broadcast_shapes(tuple(eps.shape), tuple(x.shape))
    except RuntimeError:
        broadcast = None
    if broadcast != tuple(x.shape):
        raise AttackError(
            f"attack budget map of shape {tuple(eps.shape)} does not broadcast to the images "
            f"{tuple(x.shape)}; use [B,1,H,W], [B,C,H,W] or a shape that broadcasts to it"
        )
    return eps.detach().to(device=x.device, dtype=x.dtype)


def _check_schedule(step_size: float, steps: int) -> None:
    if not _is_real_number(step_size) or step_size < 0:
        raise AttackError(f"attack step_size must be a python float >= 0; got {step_size!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise AttackError(f"attack steps must be an int >= 0; got {steps!r}")


def _check_loss(loss: str, x: Tensor, target: Tensor | None, clean_logits: Tensor | None) -> None:
    if loss not in ATTACK_LOSSES:
        raise AttackError(f"unknown attack loss {loss!r}; allowed: {', '.join(ATTACK_LOSSES)}")
    batch = x.shape[0]
    if loss in ("targeted_margin", "targeted_hinge"):
        if target is None:
            raise AttackError(
                f"attack loss {loss!r} needs target= (an int64 tensor [B] of target classes)"
            )
        if target.dtype != torch.int64 or tuple(target.shape) != (batch,):
            raise AttackError(
                f"attack target must be an int64 tensor of shape [{batch}]; "
                f"got {tuple(target.shape)} {target.dtype}"
            )
    if clean_logits is not None and (clean_logits.dim() != 2 or clean_logits.shape[0] != batch):
        raise AttackError(
            f"clean_logits must be a [{batch}, num_classes] tensor (the model's logits on x); "
            f"got {tuple(clean_logits.shape)}"
        )


def _check_random_start(random_start: RandomStart, start: str, start_eps: float | None,
                        budget: float | Tensor) -> None:
    is_flag = random_start is True or random_start is False or random_start is None
    if not is_flag and not (isinstance(random_start, str) and random_start in RANDOM_STARTS):
        raise AttackError(
            f"unknown random_start {random_start!r}; allowed: True or 'uniform' (U[-E,E]), "
            "'normal' (0.001 * N(0,1), TRADES/MART), False or None (start at x)"
        )
    if start not in START_RULES:
        raise AttackError(f"unknown start rule {start!r}; allowed: {', '.join(START_RULES)}")
    if start_eps is not None and (not _is_real_number(start_eps) or start_eps < 0):
        raise AttackError(f"start_eps must be a python float >= 0; got {start_eps!r}")
    uniform = random_start is True or random_start == "uniform"
    if start == "paper" and uniform and start_eps is None and not isinstance(budget, float):
        raise AttackError("start='paper' with a budget map draws U(-eps, eps) with one scalar "
                          "eps: pass start_eps= (the largest budget, eps)")


# --------------------------------------------------------------------------- building blocks


def logit_margin(logits: Tensor, y: Tensor) -> Tensor:
    """Per-example CW margin max_{j != y} z_j - z_y in float32; > 0 means misclassified."""
    logits = logits.float()
    true_logit = logits.gather(1, y[:, None]).squeeze(1)
    is_true_class = F.one_hot(y, logits.shape[1]).bool()
    best_other = logits.masked_fill(is_true_class, float("-inf")).amax(dim=1)
    return best_other - true_logit


def _project(x_adv: Tensor, x: Tensor, budget: float | Tensor) -> Tensor:
    delta = torch.clamp(x_adv - x, min=-budget, max=budget)
    return torch.clamp(x + delta, 0.0, 1.0)


def _exactly_within(x_adv: Tensor, x: Tensor, budget: float | Tensor) -> Tensor:
    """x_adv with |x_adv - x| <= E holding in exact arithmetic, not only up to float rounding.

    `x + clamp(delta, -E, E)` rounds, and lands one ulp outside the budget for a large share of
    elements (every 10th at eps = 8/255). Here the box [x - E, x + E] is computed in float64 and
    rounded inwards to x's dtype, so every float comparison of the result with E holds. E is the
    budget as x's dtype holds it (a float eps rounds as it does in a budget map, so a map whose
    every element is eps gives what the float eps gives).
    """
    wide = x.double()
    if isinstance(budget, float):
        budget_wide = torch.tensor(budget, dtype=x.dtype, device=x.device).double()
    else:
        budget_wide = budget.double()
    low_wide, high_wide = wide - budget_wide, wide + budget_wide
    low, high = low_wide.to(x.dtype), high_wide.to(x.dtype)
    low = torch.where(low.double() < low_wide, torch.nextafter(low, x), low)
    high = torch.where(high.double() > high_wide, torch.nextafter(high, x), high)
    return torch.clamp(torch.minimum(torch.maximum(x_adv, low), high), 0.0, 1.0)


def _start_point(x: Tensor, budget: float | Tensor, random_start: RandomStart,
                 start: str = "budget", start_eps: float | None = None,
                 draws: BatchDraws = GLOBAL_DRAWS) -> Tensor:
    """The first iterate. `budget`: uniform draws within each element's own budget, projected
    and clipped. `paper` (the paper code's part_pgd and TRADES/MART): U(-eps, eps) with one
    scalar eps on every element (or 0.001 N(0,1)), neither projected nor clipped before the
    first step; with a uniform budget the uniform draw is clipped to [0,1] (torchattacks' PGD,
    which the paper code uses for AT with one eps)."""
    uniform = random_start is True or random_start == "uniform"
    if uniform:
        if start == "paper" and not isinstance(budget, float):
            assert start_eps is not None  # checked by _check_random_start
            delta = draws.uniform(x, -start_eps, start_eps)
        elif isinstance(budget, float):
            delta = draws.uniform(x, -budget, budget)
        else:
            delta = draws.uniform(x, -1.0, 1.0) * budget
    elif random_start == "normal":
        delta = NORMAL_START_STD * draws.normal(x)
    else:
        return x.clone()
    if start == "paper":
        if uniform and isinstance(budget, float):
            return torch.clamp(x + delta, 0.0, 1.0)
        return x + delta
    return _project(x + delta, x, budget)


def _objective(
    logits: Tensor,
    y: Tensor,
    loss: str,
    target: Tensor | None,
    clean_probs: Tensor | None,
) -> Tensor:
    """The quantity PGD ascends, summed over the batch (the sign of its gradient is all we use)."""
    logits = logits.float()
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="sum")
    if loss == "kl":
        # As TRADES' nn.KLDivLoss(log_softmax(f(x_adv)), softmax(f(x))) computes it:
        # sum p_clean * log(p_clean / p_adv), i.e. KL(p_clean || p_adv).
        return F.kl_div(F.log_softmax(logits, dim=1), clean_probs, reduction="sum")
    if loss == "margin":
        return logit_margin(logits, y).sum()
    assert target is not None  # checked by _check_loss
    towards_target = logits.gather(1, target[:, None]) - logits.gather(1, y[:, None])
    if loss == "targeted_hinge":
        return -torch.clamp(MMA_KAPPA - towards_target, min=0.0).sum()
    return towards_target.sum()


def _ascend(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    budget: float | Tensor,
    step: float | Tensor,
    steps: int,
    x_adv: Tensor,
    loss: str,
    target: Tensor | None,
    clean_logits: Tensor | None,
) -> Tensor:
    """Signed-gradient ascent from `x_adv` projected into the budget; arguments validated.
    The result lies in the budget exactly (see _exactly_within)."""
    x = x.detach()
    clean_probs = None
    if loss == "kl":
        if clean_logits is None:
            with torch.no_grad():
                clean_logits = model(x)
        clean_probs = F.softmax(clean_logits.detach().float(), dim=1)

    # Evaluation code often runs under no_grad; the input gradient is needed regardless.
    with torch.enable_grad():
        for _ in range(steps):
            x_adv.requires_grad_(True)
            objective = _objective(model(x_adv), y, loss, target, clean_probs)
            (grad,) = torch.autograd.grad(objective, x_adv)
            x_adv = _project(x_adv.detach() + step * grad.sign(), x, budget)
    return _exactly_within(x_adv.detach(), x, budget)


# --------------------------------------------------------------------------- public attacks


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    step_size: float,
    steps: int,
    *,
    random_start: RandomStart = True,
    loss: AttackLoss = "ce",
    target: Tensor | None = None,
    clean_logits: Tensor | None = None,
    start: StartRule = "budget",
    start_eps: float | None = None,
    draws: BatchDraws = GLOBAL_DRAWS,
) -> Tensor:
    """L-inf PGD under a float or per-element budget map; returns x_adv (detached), inside the
    budget and [0,1] exactly.

    random_start: True/'uniform' -> U[-E, E] (AT, Madry); 'normal' -> 0.001 * N(0,1) projected
    into the budget (TRADES, MART); False/None -> start at x.
    start: 'budget' (ours: each element's draw within its own budget, projected); 'paper' (the
    paper code: U(-start_eps, start_eps) on every element, or the Gaussian, not projected before
    the first step; start_eps is that eps for a budget map; a float budget draws with itself).
    loss: 'ce' (AT, MART), 'kl' (TRADES; sum_b KL(p_clean || p_adv) as TRADES' KLDivLoss computes
    it, p_clean from clean_logits if given), 'margin' (CW), 'targeted_margin' (z_target - z_y),
    'targeted_hinge' (the paper's MMA loss, -max(z_y - z_target + 50, 0)).
    draws: where the random start comes from (default torch's global RNG); training passes its
    rank's share of the global batch's draws (part/runtime/random_draws.py).
    """
    _check_images_and_labels(x, y)
    budget = _budget(eps, x)
    _check_schedule(step_size, steps)
    _check_loss(loss, x, target, clean_logits)
    _check_random_start(random_start, start, start_eps, budget)
    start_point = _start_point(x.detach(), budget, random_start, start, start_eps, draws)
    return _ascend(
        model, x, y, budget, float(step_size), steps, start_point, loss, target, clean_logits
    )


def fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor) -> Tensor:
    """One signed-gradient CE step of size E (element-wise), from x, clipped to [0,1]."""
    _check_images_and_labels(x, y)
    budget = _budget(eps, x)
    # The step is the budget itself, so a map budget steps each element by its own E.
    return _ascend(model, x, y, budget, budget, 1, x.detach().clone(), "ce", None, None)


def cw_inf(model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor, step_size: float,
           steps: int = 20, random_start: RandomStart = True) -> Tensor:
    """CW-inf: PGD on the margin max_{j != y} z_j - z_y."""
    return pgd(model, x, y, eps, step_size, steps, random_start=random_start, loss="margin")


def _top_other_classes(model: nn.Module, x: Tensor, y: Tensor, k: int) -> Tensor:
    """[B, k] int64: each example's k most likely wrong classes by its clean logits, most likely
    first."""
    with torch.no_grad():
        clean_logits = model(x.detach()).float()
    num_classes = clean_logits.shape[1]
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= num_classes - 1:
        raise AttackError(
            f"mma k must be an int in [1, num_classes - 1 = {num_classes - 1}]; got {k!r}"
        )
    is_true_class = F.one_hot(y, num_classes).bool()
    return clean_logits.masked_fill(is_true_class, float("-inf")).topk(k, dim=1).indices


def _keep_largest(candidates: Tensor, scores: Tensor) -> Tensor:
    """Per example, the candidate [k,B,...] whose score [B,k] is largest (the first on a tie)."""
    best = scores.argmax(dim=1)
    return candidates[best, torch.arange(candidates.shape[1], device=candidates.device)]


def mma(model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor, step_size: float,
        steps: int = 20, k: int = 3, random_start: RandomStart = True) -> Tensor:
    """The paper code's MMA evaluation (craft_ae.mma, category 'Madry'), exactly.

    One random start clamp(x + U(-eps, eps), 0, 1), shared by k targeted runs, one per top-k
    wrong class t by the clean logits; each ascends the hinge -max(z_y - z_t + 50, 0) with
    signed steps projected into eps; per example the run with the largest final target-class
    margin z_t - z_y is kept. That selection can keep a run the model survives while another run
    broke it; `mma_max` keeps the run with the largest margin over all wrong classes instead.
    """
    _check_images_and_labels(x, y)
    budget = _budget(eps, x)
    _check_schedule(step_size, steps)
    _check_random_start(random_start, "budget", None, budget)
    targets = _top_other_classes(model, x, y, k)
    shared_start = _start_point(x.detach(), budget, random_start)
    candidates, target_margins = [], []
    for rank in range(k):  # over target ranks, never over images
        target = targets[:, rank].contiguous()
        x_adv = _ascend(model, x, y, budget, float(step_size), steps, shared_start,
                        "targeted_hinge", target, None)
        with torch.no_grad():
            logits = model(x_adv).float()
        target_margins.append((logits.gather(1, target[:, None])
                               - logits.gather(1, y[:, None])).squeeze(1))
        candidates.append(x_adv)
    return _keep_largest(torch.stack(candidates), torch.stack(target_margins, dim=1))


def mma_max_candidates(model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor,
                       step_size: float, steps: int = 20, k: int = 3,
                       random_start: RandomStart = True) -> tuple[Tensor, Tensor]:
    """The k targeted margin attacks behind `mma_max`, one per top-k other class by the clean
    logits, each from its own random start.

    Returns (candidates [k,B,C,H,W], margins [B,k]): candidate i attacks each example towards its
    i-th most likely wrong class; margins are max_{j != y} z_j - z_y of the model on it (float32).
    """
    _check_images_and_labels(x, y)
    targets = _top_other_classes(model, x, y, k)
    candidates, margins = [], []
    for rank in range(k):  # over target ranks, never over images
        x_adv = pgd(model, x, y, eps, step_size, steps, random_start=random_start,
                    loss="targeted_margin", target=targets[:, rank].contiguous())
        with torch.no_grad():
            margins.append(logit_margin(model(x_adv), y))
        candidates.append(x_adv)
    return torch.stack(candidates), torch.stack(margins, dim=1)


def mma_max(model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor, step_size: float,
            steps: int = 20, k: int = 3, random_start: RandomStart = True) -> Tensor:
    """A stronger MMA than the paper's: targeted margin PGD (no hinge) against each of the top-k
    other classes from independent random starts, keeping per example the candidate with the
    largest final margin over all wrong classes (the most damaging one)."""
    candidates, margins = mma_max_candidates(model, x, y, eps, step_size, steps, k, random_start)
    return _keep_largest(candidates, margins)
