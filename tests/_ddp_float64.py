"""`torchrun --nproc-per-node N tests/_ddp_float64.py PARAMS OUT`: two epochs of AT, of PART (a
per-sample budget map), of TRADES and of MART on a float64 cnn_small_gn (no batch statistics),
through the pipeline's own part.training.train.train_epoch and monitor_accuracy, as train_run
drives them (the model wrapped by part.runtime.distributed.data_parallel). Rank 0 writes
OUT/<case>.safetensors: the weights, per epoch the logged train loss and accuracy and the
monitor's accuracies, and each rank's count of train-mode forwards.

In float64 the order of float sums no longer hides a difference: N processes must give the one
process's numbers to ~1e-12 (tests/test_ddp_equivalence.py)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

from part.importance.variants import EpochBudget
from part.io.tensorfile import write_safetensors
from part.models import build_model
from part.params import load_params
from part.runtime.distributed import data_parallel, join, leave, sum_across, world_from_env
from part.training.monitor import monitor_accuracy
from part.training.spec import TrainData
from part.training.train import train_epoch

CASES = {"at": ("at", False), "part": ("at", True), "trades": ("trades", False),
         "mart": ("mart", False)}
N_TRAIN, N_MONITOR = 210, 30  # batches of 19: the last holds one image, an empty share for one rank


def _data() -> TrainData:
    generator = torch.Generator().manual_seed(11)
    labels = torch.randint(0, 10, (N_TRAIN + N_MONITOR,), generator=generator)
    # an image whose brightness says its class, plus noise: a model learns something in 2 epochs
    images = (torch.rand(N_TRAIN + N_MONITOR, 1, 28, 28, generator=generator) * 128
              + labels.view(-1, 1, 1, 1) * 12).to(torch.uint8)
    return TrainData(images[:N_TRAIN], labels[:N_TRAIN], images[N_TRAIN:], labels[N_TRAIN:],
                     "synthetic", 10)


def _count_training_forwards(model: torch.nn.Module, counts: torch.Tensor, rank: int) -> None:
    def count(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        if module.training:
            counts[rank] += 1

    model.register_forward_hook(count)


def main() -> None:
    params_path, out = sys.argv[1], Path(sys.argv[2])
    device = torch.device("cpu")
    world = world_from_env()
    join(world, device)
    data = _data()
    # importance masks that are a function of each image: the PART case trains a budget map
    masks = data.images > data.images.flatten(1).median(dim=1).values.view(-1, 1, 1, 1)
    for case, (method, masked) in CASES.items():
        params = load_params(params_path).for_seed(0)
        params = dataclasses.replace(params, method=method)
        torch.manual_seed(0)
        model = build_model("cnn_small_gn", 10, 1).double()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9,
                                    weight_decay=5e-4)
        trainer = data_parallel(model, world, device)
        # train-mode forwards of this rank: under SyncBatchNorm each one is a collective, so
        # every rank must run as many as the others, an empty share included
        forwards = torch.zeros(world.size, dtype=torch.float64)
        _count_training_forwards(model, forwards, world.rank)
        budget = EpochBudget(masks if masked else None, params.eps, params.eps_low)
        logged = []
        for epoch in (1, 2):
            running = train_epoch(model, optimizer, data, budget, params, epoch, device,
                                  world=world, trainer=trainer)
            running.combine(lambda sums: sum_across(sums, world))
            loss, accuracy = running.final()
            natural, robust = monitor_accuracy(model, data, params, device, epoch, world)
            logged.append([loss, accuracy, natural, robust])
        sum_across(forwards, world)
        if world.is_main:
            tensors = {key: value.detach().clone() for key, value in model.state_dict().items()}
            tensors["logged"] = torch.tensor(logged, dtype=torch.float64)
            tensors["forwards"] = forwards
            write_safetensors(out / f"{case}.safetensors", tensors, {"ranks": str(world.size)})
    leave(world)


if __name__ == "__main__":
    main()
