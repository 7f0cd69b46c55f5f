"""Training and evaluation throughput per model, precision, memory layout and compilation, and
the projected wall time of the paper's 80-epoch CIFAR-10 PART run. Prints JSON.

For each configuration, on n synthetic images of CIFAR-10's shape (3x32x32, 10 classes), through
the pipeline's own code (part.train.train_epoch, part.variants.refreshed_masks,
part.evaluate.attack_correctness):

- at_images_per_s: one PGD-10 AT epoch (the baseline's);
- part_images_per_s: one PART epoch, its masks refreshed from the current model first;
- part_over_at: the ratio of the two epochs' times (pair by pair, median);
- masks_per_s: the mask refresh alone; pgd20_images_per_s: PGD-20 evaluation.

Each figure is the median of `repeats` timed runs after one warm-up run (CUDA synchronised).
Per-second figures scale to the full 50,000 images, so a GPU run times fewer by default.
The projection: burn_in_epochs AT epochs and (epochs - burn_in_epochs) PART epochs of 50,000
images (configs/cifar10-resnet18.yaml) at the fastest resnet18 configuration; per-epoch monitor
and final evaluation excluded.

    python bench/bench_gpu.py                        # on a GPU: resnet18 and wrn34_10, all configs
    python bench/bench_gpu.py --small                # CPU-sized: cnn_small, fp32, a few batches
    python bench/bench_gpu.py --out bench/results/h100-<commit>.json
"""

from __future__ import annotations

import copy
import itertools
import json
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch
import typer
import yaml

from part.device import resolve_device
from part.evaluate import attack_correctness
from part.masking import MaskSettings
from part.models import build_model
from part.params import params_from_dict
from part.precision import PRECISIONS
from part.train import TrainData, train_epoch
from part.variants import epoch_budget, refreshed_masks

ROOT = Path(__file__).resolve().parents[1]
CIFAR_TRAIN = 50_000
EPS = 8 / 255
PAPER_PRESET = ROOT / "configs" / "cifar10-resnet18.yaml"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(run: Callable[[int], object], repeat: int, device: torch.device) -> float:
    _sync(device)
    started = time.perf_counter()
    run(repeat)
    _sync(device)
    return time.perf_counter() - started


def _timed(run: Callable[[int], object], repeats: int, device: torch.device) -> list[float]:
    run(0)  # warm-up: kernels chosen, compiled, caches filled
    return [_seconds(run, repeat, device) for repeat in range(1, repeats + 1)]


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def bench_config(model_name: str, precision: str, channels_last: bool, compiled: bool,
                 data: TrainData, device: torch.device, repeats: int,
                 batch_size: int) -> dict:
    params = params_from_dict({
        "dataset": "synthetic", "model": model_name, "eps": EPS, "eps_low": 7 / 255,
        "train": {"batch_size": batch_size, "step_size": 2 / 255, "steps": 10,
                  "precision": precision, "augment": "crop_flip"}})
    torch.manual_seed(0)
    net = build_model(model_name, num_classes=10, in_channels=3).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    models = {name: copy.deepcopy(net) for name in ("at", "part")}
    optimizers = {name: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
                  for name, m in models.items()}
    runnable = {name: (torch.compile(m) if compiled else m) for name, m in models.items()}
    settings = MaskSettings("gradcam", "official", batch_size=256)
    uniform = epoch_budget("baseline", None, EPS, EPS)

    def at_epoch(epoch: int) -> None:
        train_epoch(runnable["at"], optimizers["at"], data, uniform, params, epoch, device)

    def masks(epoch: int) -> torch.Tensor:
        return refreshed_masks("part", models["part"], data.images, settings, 0, epoch, {})

    def part_epoch(epoch: int) -> None:
        budget = epoch_budget("part", masks(epoch), EPS, 7 / 255)
        train_epoch(runnable["part"], optimizers["part"], data, budget, params, epoch, device)

    def pgd20(epoch: int) -> None:
        attack_correctness(models["at"], data.monitor_images, data.monitor_labels, "pgd20",
                           eps=EPS, step_size=2 / 255, batch_size=2 * batch_size, seed=epoch)

    at_epoch(0)  # warm-up both
    part_epoch(0)
    at_s, part_s = [], []
    for repeat in range(1, repeats + 1):  # alternately, so a drifting clock hits both alike
        at_s.append(_seconds(at_epoch, repeat, device))
        part_s.append(_seconds(part_epoch, repeat, device))
    masks_s = _timed(masks, repeats, device)
    pgd_s = _timed(pgd20, repeats, device)
    n, n_eval = data.images.shape[0], data.monitor_images.shape[0]
    return {
        "model": model_name, "precision": precision, "channels_last": channels_last,
        "compile": compiled,
        "at_images_per_s": round(n / statistics.median(at_s), 1),
        "part_images_per_s": round(n / statistics.median(part_s), 1),
        "part_over_at": round(statistics.median(p / a for p, a in zip(part_s, at_s,
                                                                      strict=True)), 4),
        "masks_per_s": round(n / statistics.median(masks_s), 1),
        "pgd20_images_per_s": round(n_eval / statistics.median(pgd_s), 1),
    }


def projection(results: list[dict]) -> dict | None:
    preset = yaml.safe_load(PAPER_PRESET.read_text())
    candidates = [r for r in results if r["model"] == "resnet18"]
    if not candidates:
        return None
    best = max(candidates, key=lambda r: r["part_images_per_s"])
    burn_in, total = int(preset["burn_in_epochs"]), int(preset["epochs"])
    seconds = (burn_in * CIFAR_TRAIN / best["at_images_per_s"]
               + (total - burn_in) * CIFAR_TRAIN / best["part_images_per_s"])
    return {"epochs": total, "burn_in_epochs": burn_in, "images_per_epoch": CIFAR_TRAIN,
            "configuration": {k: best[k] for k in ("precision", "channels_last", "compile")},
            "minutes": round(seconds / 60, 1)}


def main(small: bool | None = typer.Option(None, help="CPU-sized run (default: without a GPU)"),
         models: str | None = typer.Option(None, help="comma-separated registry names"),
         n: int | None = typer.Option(None, help="training images timed per epoch"),
         n_eval: int | None = typer.Option(None, help="images for the PGD-20 figure"),
         repeats: int = 3, batch_size: int = 128, device: str = "auto",
         compile_models: bool | None = typer.Option(
             None, "--compile/--no-compile", help="also time torch.compile (default: on a GPU)"),
         out: Path | None = typer.Option(None, help="also write the JSON here")) -> None:
    target = resolve_device(device)
    small = target.type != "cuda" if small is None else small
    names = models.split(",") if models else (["cnn_small"] if small
                                              else ["resnet18", "wrn34_10"])
    n = n or (256 if small else 10_000)
    n_eval = n_eval or (128 if small else 2_000)
    precisions = ["fp32"] if target.type != "cuda" else list(PRECISIONS)
    layouts = [False, True] if target.type == "cuda" else [False]
    compile_models = target.type == "cuda" if compile_models is None else compile_models
    compiles = [False, True] if compile_models else [False]

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    data = TrainData(images=images.to(target), labels=labels.to(target),
                     monitor_images=images[:n_eval].to(target),
                     monitor_labels=labels[:n_eval].to(target), dataset="synthetic",
                     num_classes=10)
    results = [bench_config(name, precision, layout, compiled, data, target, repeats,
                            batch_size)
               for name, precision, layout, compiled
               in itertools.product(names, precisions, layouts, compiles)]
    report = {
        "benchmark": "gpu_throughput", "device": _device_name(target),
        "device_type": target.type, "torch": torch.__version__, "commit": _commit(),
        "threads": torch.get_num_threads(), "small": small, "images": n,
        "eval_images": n_eval, "batch_size": batch_size, "repeats": repeats,
        "image_shape": [3, 32, 32], "results": results, "paper_run_projection": projection(results),
    }
    text = json.dumps(report, indent=2)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    typer.run(main)
