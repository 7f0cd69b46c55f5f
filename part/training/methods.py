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

from part.attacks.linf import GLOBAL_DRAWS, pgd
from part.errors import PartError
from part.models.eval_mode import eval_mode
from part.runtime.random_draws import BatchDraws

METHODS = ("at", "trades", "mart")


@dataclass(frozen=True)
class TrainingAttack:
    """How the training examples are attacked: PGD's schedule and its start rule ("budget":
    within each pixel's budget; "paper": U(-eps, eps) with the full eps, unprojected)."""

    step_size: float
    steps: int
    eps: float  # the full budget: the paper start's scale
    start: str = "budget"


@dataclass(frozen=True)
class StepInputs:
    """Where a step's attack runs and draws: `attack_model` the plain module (under DDP the
    wrapper serves the training loss's forwards only), `draws` this rank's share of the global
    batch's random numbers."""

    attack_model: nn.Module | None = None  # None: the model itself
    draws: BatchDraws = GLOBAL_DRAWS


PLAIN_STEP = StepInputs()


@dataclass
class StepResult:
    loss: Tensor  # scalar, differentiable
    logits_adv: Tensor  # detached logits on the adversarial examples, for the train accuracy


def _generate(model: nn.Module, x: Tensor, y: Tensor, budget: float | Tensor,
              attack: TrainingAttack, start: str, loss: str, inputs: StepInputs) -> Tensor:
    attacked = inputs.attack_model if inputs.attack_model is not None else model
    with eval_mode(attacked):
        return pgd(attacked, x, y, budget, attack.step_size, attack.steps,
                   random_start=start, loss=loss, start=attack.start, start_eps=attack.eps,
                   draws=inputs.draws)


def _for_loss(logits: Tensor) -> Tensor:
    """Logits in float32 for the loss (autocast's bf16 ones too), float64 ones as they are."""
    return logits if logits.dtype == torch.float64 else logits.float()


def at_loss(model: nn.Module, x: Tensor, y: Tensor, budget: float | Tensor,
            attack: TrainingAttack, beta: float = 0.0,
            inputs: StepInputs = PLAIN_STEP) -> StepResult:
    """Madry AT: PGD on cross-entropy from a uniform random start, train on CE(f(x_adv), y)."""
    x_adv = _generate(model, x, y, budget, attack, start="uniform", loss="ce", inputs=inputs)
    logits_adv = _for_loss(model(x_adv))
    return StepResult(F.cross_entropy(logits_adv, y), logits_adv.detach())


def trades_loss(model: nn.Module, x: Tensor, y: Tensor, budget: float | Tensor,
                attack: TrainingAttack, beta: float = 6.0,
                inputs: StepInputs = PLAIN_STEP) -> StepResult:
    """TRADES: CE(f(x), y) + beta * KL(f(x_adv) || f(x)), PGD on the KL from x + 0.001 N(0,1)."""
    x_adv = _generate(model, x, y, budget, attack, start="normal", loss="kl", inputs=inputs)
    # Two forwards, not one on the concatenation: batch-norm statistics stay per batch, as in the
    # reference code.
    logits_nat, logits_adv = _for_loss(model(x)), _for_loss(model(x_adv))
    natural = F.cross_entropy(logits_nat, y)
    robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_nat, dim=1),
                      reduction="sum") / x.shape[0]
    return StepResult(natural + beta * robust, logits_adv.detach())


def mart_loss(model: nn.Module, x: Tensor, y: Tensor, budget: float | Tensor,
              attack: TrainingAttack, beta: float = 6.0,
              inputs: StepInputs = PLAIN_STEP) -> StepResult:
    """MART: boosted CE on x_adv plus beta * KL(f(x) || f(x_adv)) weighted by 1 - p_y(x)."""
    x_adv = _generate(model, x, y, budget, attack, start="normal", loss="ce", inputs=inputs)
    # Two forwards, not one on the concatenation: batch-norm statistics stay per batch, as in the
    # reference code.
    logits_nat, logits_adv = _for_loss(model(x)), _for_loss(model(x_adv))
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
                  budget: float | Tensor, attack: TrainingAttack, beta: float,
                  inputs: StepInputs = PLAIN_STEP) -> StepResult:
    try:
        loss_fn = LOSSES[method]
    except KeyError:
        raise PartError(f"method {method!r} is not one of {', '.join(METHODS)}") from None
    return loss_fn(model, x, y, budget, attack, beta, inputs)
