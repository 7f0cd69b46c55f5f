"""The learning-rate schedules, by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from part.params import TrainParams

LR_SCHEDULES = ("official", "piecewise")


def learning_rate(train: TrainParams, epoch: int, burn_in_epochs: int) -> float:
    """lr for a global epoch (1-based).

    `official` reproduces the paper code: its milestones are compared with the PART-epoch counter,
    which starts after the burn-in, so no decay ever happens during the burn-in.
    `piecewise` compares the milestones with the global epoch.
    """
    counter = epoch - burn_in_epochs if train.lr_schedule == "official" else epoch
    decays = sum(counter >= milestone for milestone in train.lr_milestones)
    return train.lr * train.lr_gamma**decays
