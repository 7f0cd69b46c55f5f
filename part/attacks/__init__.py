"""Adversarial attacks under a per-pixel budget, and the evaluation's attacks by name.

- `linf`: the one PGD (`pgd`, eps a float or a per-element budget tensor) and the attacks built
  on it: FGSM, CW-inf, the paper's MMA and a stronger MMA.
- `suite`: the registry of the evaluation's attacks (natural, fgsm, pgd20, cw20, mma, mma_max,
  pgd_unimportant, autoattack) that params, the CLI and the evaluation read.
- `autoattack`: AutoAttack through the upstream package or pyautoattack.

Training (`part.training`) and evaluation (`part.evaluation`) both attack through `linf`.
"""

from part.attacks.linf import AttackError, cw_inf, fgsm, mma, mma_max, pgd

__all__ = ["AttackError", "cw_inf", "fgsm", "mma", "mma_max", "pgd"]
