"""The evaluation's attacks by name: the registry the params, the CLI and the evaluation read.

- ``natural``: clean accuracy.
- ``fgsm``: one signed-gradient step of size eps.
- ``pgd20``: PGD on cross-entropy, uniform random start, ``steps`` steps of ``step_size`` (the
  paper evaluates with the training step: 2/255, 1/255 on SVHN).
- ``cw20``: PGD on the CW margin max_{j != y} z_j - z_y, same schedule.
- ``mma``: the paper code's margin attack, exactly: from one shared random start, a hinged
  targeted margin PGD against each of the top-3 other classes; per example the run with the
  largest margin towards its own target class is kept.
- ``mma_max``: a stronger MMA: independent random starts, no hinge, and per example the run
  with the largest margin over all wrong classes is kept.
- ``pgd_unimportant``: PGD on cross-entropy (as ``pgd20``) with the full eps on the elements the
  evaluated model's own CAM calls unimportant (the pipeline's CAM method and mask rule) and no
  budget elsewhere: it attacks PART where PART trains with eps_low.
- ``autoattack``: AutoAttack, L-inf, run by `part.attacks.autoattack` on whole sets rather than
  batch by
  batch, so it has no adversary here. Its version (AUTOATTACK_VERSIONS) is AutoAttack's own:
  standard (APGD-CE, APGD-T, FAB-T, Square: the leaderboards' and the paper's), plus (adds
  APGD-DLR and untargeted FAB, more restarts) or rand (APGD-CE and APGD-DLR with 20 EOT
  iterations, for randomised defences).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from part.attacks.linf import cw_inf, fgsm, mma, mma_max, pgd
from part.errors import PartError
from part.importance.masks import MaskSettings, unimportant_budget

MMA_TOP_K = 3  # the paper's code attacks the 3 most likely wrong classes
AUTOATTACK = "autoattack"
AUTOATTACK_VERSIONS = ("standard", "plus", "rand")

Adversary = Callable[[nn.Module, Tensor, Tensor], Tensor]

# The CAM settings `pgd_unimportant` uses where the caller names none: the pipeline's defaults.
DEFAULT_MASK_SETTINGS = MaskSettings(method="gradcam", rule="official")


class EvaluationError(PartError):
    """Evaluation asked for with inputs or settings it cannot honour."""


@dataclass(frozen=True)
class AttackSettings:
    """What every evaluation attack shares: the budget, the PGD schedule, the batching, the seed,
    and how pgd_unimportant finds the unimportant elements."""

    eps: float
    step_size: float
    steps: int
    batch_size: int
    seed: int
    masks: MaskSettings = DEFAULT_MASK_SETTINGS
    autoattack_version: str = "standard"

    def __post_init__(self) -> None:
        def is_number(value: object) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        if not is_number(self.eps) or not 0.0 <= self.eps <= 1.0:
            raise EvaluationError(
                f"eps must be a budget in [0, 1] (a fraction of the pixel range, e.g. 8/255); "
                f"got {self.eps!r}")
        if not is_number(self.step_size) or not math.isfinite(self.step_size) \
                or self.step_size < 0:
            raise EvaluationError(f"step_size must be a number >= 0 (e.g. eps/4); "
                                  f"got {self.step_size!r}")
        for name, minimum in (("steps", 0), ("batch_size", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise EvaluationError(f"{name} must be a whole number >= {minimum}; "
                                      f"got {value!r}")
        if self.autoattack_version not in AUTOATTACK_VERSIONS:
            raise EvaluationError(f"unknown AutoAttack version {self.autoattack_version!r}; "
                                  f"allowed: {', '.join(AUTOATTACK_VERSIONS)}")


def _natural(model: nn.Module, x: Tensor, y: Tensor, s: AttackSettings) -> Tensor:
    return x


def _fgsm(model: nn.Module, x: Tensor, y: Tensor, s: AttackSettings) -> Tensor:
    return fgsm(model, x, y, s.eps)


def _pgd20(model: nn.Module, x: Tensor, y: Tensor, s: AttackSettings) -> Tensor:
    return pgd(model, x, y, s.eps, s.step_size, s.steps, random_start=True)


def _cw20(model: nn.Module, x: Tensor, y: Tensor, s: AttackSettings) -> Tensor:
    return cw_inf(model, x, y, s.eps, s.step_size, s.steps, random_start=True)


def _mma(model: nn.Module, x: Tensor, y: Tensor, s: AttackSettings) -> Tensor:
    return mma(model, x, y, s.eps, s.step_size, s.steps, k=MMA_TOP_K, random_start=True)


def _mma_max(model: nn.Module, x: Tensor, y: Tensor, s: AttackSettings) -> Tensor:
    return mma_max(model, x, y, s.eps, s.step_size, s.steps, k=MMA_TOP_K, random_start=True)


def _pgd_unimportant(model: nn.Module, x: Tensor, y: Tensor, s: AttackSettings) -> Tensor:
    budget = unimportant_budget(model, x, s.eps, s.masks)
    return pgd(model, x, y, budget, s.step_size, s.steps, random_start=True)


_ADVERSARIES: dict[str, Callable[[nn.Module, Tensor, Tensor, AttackSettings], Tensor]] = {
    "natural": _natural,
    "fgsm": _fgsm,
    "pgd20": _pgd20,
    "cw20": _cw20,
    "mma": _mma,
    "mma_max": _mma_max,
    "pgd_unimportant": _pgd_unimportant,
}
# Every attack's key, in the order the metrics and tables list them.
ATTACKS: tuple[str, ...] = (*_ADVERSARIES, AUTOATTACK)


def adversary(name: str, settings: AttackSettings) -> Adversary:
    """x -> x_adv for attack `name` (any of ATTACKS but autoattack) under `settings`."""
    if name == AUTOATTACK:
        raise EvaluationError("autoattack runs on a whole set through part.attacks.autoattack, not "
                              "batch by batch")
    attack = _ADVERSARIES[name]
    return lambda model, x, y: attack(model, x, y, settings)


def parse_attacks(attacks: str | Sequence[str]) -> tuple[str, ...]:
    """Attack keys from "natural,pgd20" or a sequence, validated, deduplicated, in ATTACKS order."""
    items = attacks.split(",") if isinstance(attacks, str) else list(attacks)
    names = [str(item).strip() for item in items if str(item).strip()]
    if not names:
        raise EvaluationError(f"no attacks given; choose from {', '.join(ATTACKS)}")
    unknown = [name for name in names if name not in ATTACKS]
    if unknown:
        raise EvaluationError(
            f"unknown attack {', '.join(repr(name) for name in unknown)}; "
            f"allowed: {', '.join(ATTACKS)}"
        )
    return tuple(name for name in ATTACKS if name in names)
