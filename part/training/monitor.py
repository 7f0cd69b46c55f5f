"""The per-epoch monitor: clean and PGD accuracy on a fixed subset of held-out examples, which
picks a run's best epoch.

The subset is the validation split held out of the training set (`data.val_subset`), the test
subset only where that is 0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from part.attacks.linf import pgd
from part.data.subset import balanced_subset
from part.models.eval_mode import eval_mode
from part.params import Params
from part.runtime.distributed import SINGLE, World, sum_across
from part.runtime.precision import autocast, effective_precision, numerics
from part.runtime.random_draws import BatchDraws, epoch_generator
from part.training.batches import epoch_seed, input_dtype
from part.training.spec import TrainData

MONITOR_SPLITS = ("validation", "test")  # where the per-epoch monitor (and the best epoch) runs


def monitor_subset(labels: Tensor, n: int, seed: int) -> Tensor:
    n = min(n, labels.shape[0])
    classes = int(labels.max()) + 1
    if n < classes:
        return torch.arange(n, device=labels.device)
    return balanced_subset(labels, n, seed).to(labels.device)


@torch.no_grad()
def _accuracy_counts(model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    return (model(images).argmax(dim=1) == labels).sum()


def monitor_accuracy(model: nn.Module, data: TrainData, params: Params, device: torch.device,
                     epoch: int = 0, world: World = SINGLE) -> tuple[float, float]:
    """Clean and PGD accuracy on the fixed monitor subset, uniform budget eps. Under several
    ranks each attacks its share of every monitor batch (with the one process's random starts)
    and the counts are summed."""
    counts = torch.zeros(2, device=device, dtype=torch.long)  # natural, robust
    batch = 2 * params.train.batch_size  # no gradients w.r.t. weights: room for larger batches
    precision = effective_precision(params.train.precision, device)
    starts = epoch_generator(epoch_seed(params.seed, epoch, "monitor"), device)
    dtype = input_dtype(model)
    with eval_mode(model):
        for start in range(0, data.monitor_images.shape[0], batch):
            size = min(batch, data.monitor_images.shape[0] - start)
            rows = world.share(size)
            if rows.stop == rows.start:
                continue  # only the last batch can be smaller than the ranks
            x = data.monitor_images[start:start + size][rows].to(dtype).div_(255)
            y = data.monitor_labels[start:start + size][rows]
            with numerics(precision), autocast(precision, device):
                counts[0] += _accuracy_counts(model, x, y)
                x_adv = pgd(model, x, y, params.eps, params.train.step_size,
                            params.train.monitor_steps, random_start="uniform", loss="ce",
                            draws=BatchDraws(starts, size, rows))
                counts[1] += _accuracy_counts(model, x_adv, y)
    natural, robust = sum_across(counts, world).tolist()
    total = max(data.monitor_images.shape[0], 1)
    return natural / total, robust / total
