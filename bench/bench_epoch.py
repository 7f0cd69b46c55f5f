"""PART epoch time / baseline epoch time: same model, data, device; masks refreshed every epoch.

A PART epoch = recomputing every training sample's CAM mask from the current model + one epoch
of AT on the budget map; a baseline epoch = one epoch of AT on the uniform budget. The two are
timed alternately (B, P, B, P, ...) and the ratio is taken pair by pair; the median is printed.

    python bench/bench_epoch.py --model cnn_small --data fashion-mnist --n 2048
    python bench/bench_epoch.py --model resnet18 --data synthetic --n 256
"""

from __future__ import annotations

import copy
import json
import statistics
import time

import torch
import typer

from part.data.sources import load_source
from part.data.subset import balanced_subset
from part.importance.masks import MaskSettings, compute_masks
from part.importance.variants import epoch_budget
from part.models import build_model
from part.params import params_from_dict
from part.runtime.device import resolve_device
from part.training.spec import TrainData
from part.training.train import train_epoch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(model: str = "cnn_small", data: str = "fashion-mnist", n: int = 2048,
         repeats: int = 3, batch_size: int = 128, device: str = "auto",
         cam: str = "gradcam", mask_rule: str = "official") -> None:
    target = resolve_device(device)
    source = load_source(data, "train")
    chosen = balanced_subset(source.labels, n, seed=0)
    train = TrainData(images=source.images[chosen].to(target),
                      labels=source.labels[chosen].to(target),
                      monitor_images=source.images[:0].to(target),
                      monitor_labels=source.labels[:0].to(target), dataset=data,
                      num_classes=len(source.class_names))
    eps = 0.1 if data == "fashion-mnist" else 8 / 255
    params = params_from_dict({"dataset": data, "model": model, "eps": eps, "eps_low": 0.875 * eps,
                               "cam": cam, "mask_rule": mask_rule,
                               "train": {"batch_size": batch_size, "step_size": eps / 4}})
    torch.manual_seed(0)
    net = build_model(model, num_classes=train.num_classes,
                      in_channels=train.images.shape[1]).to(target)
    if target.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    settings = MaskSettings(method=cam, rule=mask_rule, batch_size=256)

    def baseline_epoch(net, optimizer, epoch):
        train_epoch(net, optimizer, train, epoch_budget("baseline", None, params.eps, params.eps),
                    params, epoch, target)

    def part_epoch(net, optimizer, epoch):
        masks = compute_masks(net, train.images, settings)
        budget = epoch_budget("part", masks, params.eps, params.eps_low)
        train_epoch(net, optimizer, train, budget, params, epoch, target)

    runs = {}
    for name in ("baseline", "part"):
        model_copy = copy.deepcopy(net)
        runs[name] = (model_copy, torch.optim.SGD(model_copy.parameters(), lr=0.01, momentum=0.9))
    seconds = {"baseline": [], "part": []}
    for epoch in range(repeats + 1):  # epoch 0 warms up both
        for name, run in (("baseline", baseline_epoch), ("part", part_epoch)):
            _sync(target)
            started = time.perf_counter()
            run(*runs[name], epoch)
            _sync(target)
            if epoch > 0:
                seconds[name].append(time.perf_counter() - started)
    ratios = [p / b for p, b in zip(seconds["part"], seconds["baseline"], strict=True)]
    print(json.dumps({
        "benchmark": "part_epoch_over_baseline_epoch", "model": model, "data": data, "n": n,
        "image_shape": list(train.images.shape[1:]), "device": str(target),
        "threads": torch.get_num_threads(), "repeats": repeats,
        "baseline_epoch_s_median": round(statistics.median(seconds["baseline"]), 3),
        "part_epoch_s_median": round(statistics.median(seconds["part"]), 3),
        "ratio_median": round(statistics.median(ratios), 4),
        "ratios": [round(r, 4) for r in ratios],
    }))


if __name__ == "__main__":
    typer.run(main)
