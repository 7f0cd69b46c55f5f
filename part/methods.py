"""AT, TRADES and MART training losses.

Each takes the perturbation budget as a float (the base method) or a per-pixel budget map
(PART, PART-T, PART-M): the PART variants are these same losses given the map.
The adversarial example is generated with the model in eval mode, as the TRADES and MART
reference code does, and the loss is computed in train mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from part.attacks import pgd
from part.errors import PartError
from part.eval_mode import eval_mode

METHODS = ("at", "trades", "mart")


@dataclass(frozen=True)
class TrainingAttack:
    """How the training examples are attacked: PGD's schedule and its start rule ("budget":
    within each pixel's budget; "paper": U(-eps, eps) with the full eps, unprojected)."""

    step_size: float
    steps: int
    eps: float  # the full budget: the paper start's scale
    start: str = "budget"


@dataclass
class StepResult:
    loss: Tensor  # scalar, differentiable
    logits_adv: Tensor  # detached logits on the adversarial examples, for the train accuracy


def _generate(model: nn.Module, x: Tensor, y: Tensor, budget: float | Tensor,
              attack: TrainingAttack, start: str, loss: str) -> Tensor:
    with eval_mode(model):
        return pgd(model, x, y, budget, attack.step_size, attack.steps,
                   random_start=start, loss=loss, start=attack.start, start_eps=attack.eps)


def at_loss(model: nn.Module, x: Tensor, y: Tensor, budget: float | Tensor,
            attack: TrainingAttack, beta: float = 0.0) -> StepResult:
    """Madry AT: PGD on cross-entropy from a uniform random start, train on CE(f(x_adv), y)."""
    x_adv = _generate(model, x, y, budget, attack, start="uniform", loss="ce")
    logits_adv = model(x_adv).float()
    return StepResult(F.cross_entropy(logits_adv, y), logits_adv.detach())


def trades_loss(model: nn.Module, x: Tensor, y: Tensor, budget: float | Tensor,
                attack: TrainingAttack, beta: float = 6.0) -> StepResult:
    """TRADES: CE(f(x), y) + beta * KL(f(x_adv) || f(x)), PGD on the KL from x + 0.001 N(0,1)."""
    x_adv = _generate(model, x, y, budget, attack, start="normal", loss="kl")
    # Two forwards, not one on the concatenation: batch-norm statistics stay per batch, as in the
    # reference code.
    logits_nat, logits_adv = model(x).float(), model(x_adv).float()
    natural = F.cross_entropy(logits_nat, y)
    robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_nat, dim=1),
                      reduction="sum") / x.shape[0]
    return StepResult(natural + beta * robust, logits_adv.detach())


def mart_loss(model: nn.Module, x: Tensor, y: Tensor, budget: float | Tensor,
              attack: TrainingAttack, beta: float = 6.0) -> StepResult:
    """MART: boosted CE on x_adv plus beta * KL(f(x) || f(x_adv)) weighted by 1 - p_y(x)."""
    x_adv = _generate(model, x, y, budget, attack, start="normal", loss="ce")
    # Two forwards, not one on the concatenation: batch-norm statistics stay per batch, as in the
    # reference code.
    logits_nat, logits_adv = model(x).float(), model(x_adv).float()
    probs_adv = F.softmax(logits_adv, dim=1)
    top2 = probs_adv.topk(2, dim=1).indices
    runner_up = torch.where(top2[:, 0] == y, top2[:, 1], top2[:, 0])
    boosted_ce = F.cross_entropy(logits_adv, y) + F.nll_loss(
        torch.log(1.0001 - probs_adv + 1e-12), runner_up
    )
    probs_nat = F.softmax(logits_nat, dim=1)
    true_prob = probs_nat.gather(1, y.unsqueeze(1)).squeeze(1)
    kl = F.kl_div(torch.log(probs_adv + 1e-12), probs_nat, reduction="none").sum(dim=1)
    robust = (kl * (1.0000001 - true_prob)).mean()
    return StepResult(boosted_ce + beta * robust, logits_adv.detach())


LOSSES = {"at": at_loss, "trades": trades_loss, "mart": mart_loss}


def training_loss(method: str, model: nn.Module, x: Tensor, y: Tensor,
                  budget: float | Tensor, attack: TrainingAttack, beta: float) -> StepResult:
    try:
        loss_fn = LOSSES[method]
    except KeyError:
        raise PartError(f"method {method!r} is not one of {', '.join(METHODS)}") from None
    return loss_fn(model, x, y, budget, attack, beta)
