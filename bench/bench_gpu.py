"""Training and evaluation throughput per model, precision, memory layout and compilation, and
the projected wall time of the paper's 80-epoch CIFAR-10 PART run. Prints JSON.

Every configuration trains with the paper preset's settings (configs/cifar10-resnet18.yaml:
PGD-10, step 2/255, eps 8/255, eps_low 7/255, batch 128, GradCAM masks by the official rule,
crop and flip) on synthetic images of CIFAR-10's shape (3x32x32, 10 classes), through the
pipeline's own code:

- at_images_per_s: one PGD-10 AT epoch (part.training.train.train_epoch on the uniform budget);
- part_images_per_s: one PART epoch, its masks refreshed from the current model first
  (part.importance.variants.refreshed_masks, then train_epoch on the budget map);
- part_over_at: the ratio of the two epochs' times (pair by pair, median);
- masks_per_s: the mask refresh alone;
- monitor_images_per_s: the per-epoch monitor (clean + PGD-10 accuracy, part.training.train);
- pgd20_images_per_s: PGD-20 evaluation (part.evaluation.evaluate.attack_correctness, which runs
  part.attacks.linf.pgd; evaluation is always fp32, whatever train.precision).

Each figure is the median of `repeats` timed runs after a warm-up run (CUDA synchronised). On
CUDA the pipeline trains in channels_last (part.training.train); `channels_last: false` keeps the
model's
weights in the default layout (the batches are still channels_last). The pipeline does not
compile models: `compile: true` is what torch.compile would bring. `deterministic: true` runs
under train.deterministic's settings (part.runtime.device.make_deterministic; the pipeline's
default),
the other rows under torch's defaults (switched back after a deterministic row);
`deterministic_cost` compares the two.

A configuration that fails (out of memory, a compiler error), wholly or in one figure, is
recorded with its errors and `status: failed`, named in `failed` and on stderr, and the others
still run; the exit status is then 1. With --out the file is rewritten after each
configuration, so a cut-short run keeps what it measured.

--quick, the device check's profile (scripts/device_check.sh; about 3 minutes on one GPU):
resnet18 at bf16 and tf32 in channels_last, bf16 compiled too, and bf16 deterministic, on
fewer images. Without a GPU it is the CPU-sized run plus its deterministic row.

The projection: the preset's burn-in (AT epochs) then its PART epochs, masks refreshed as its
`mask.refresh_every` says, plus the per-epoch monitor, on 50,000 images, at the resnet18
configuration that gives the shortest run. The evaluate stage is not included.

    python bench/bench_gpu.py --out bench/results/<device>-<commit>.json  # a GPU: all configs
    python bench/bench_gpu.py --models resnet18 --n 10000     # a quicker look
    python bench/bench_gpu.py --small     # CPU-sized (the default without a GPU): cnn_small, fp32
    python bench/bench_gpu.py --quick --out <dir>/bench_quick.json  # the device check's profile
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch
import typer
import yaml
from typer import Exit

from part.data.augment import augmentation_for
from part.evaluation.evaluate import attack_correctness
from part.importance.variants import epoch_budget, refreshed_masks
from part.models import build_model
from part.params import Params, params_from_dict
from part.pipeline import mask_settings
from part.runtime.device import DETERMINISTIC_CUBLAS_WORKSPACES, make_deterministic, resolve_device
from part.runtime.precision import PRECISIONS
from part.training.monitor import monitor_accuracy
from part.training.spec import TrainData
from part.training.train import train_epoch

ROOT = Path(__file__).resolve().parents[1]
PAPER_PRESET = ROOT / "configs" / "cifar10-resnet18.yaml"
CIFAR_TRAIN = 50_000
IMAGE_SHAPE = (3, 32, 32)
CLASSES = 10
# Images per timed epoch on a GPU by default: CIFAR-10's training set for resnet18, fewer for
# the ten-times-slower wrn34_10 (per-second figures do not depend on it beyond warm caches).
GPU_IMAGES = {"resnet18": CIFAR_TRAIN, "wrn34_10": 10_000}
GPU_DEFAULT_IMAGES = 10_000
FIGURES = ("at_images_per_s", "part_images_per_s", "masks_per_s", "monitor_images_per_s",
           "pgd20_images_per_s")
# --quick on a GPU: (model, precision, channels_last, compile, deterministic), the compiled row
# last (its compilation takes longest: a run cut short keeps the others). Images per epoch, eval
# images, repeats: small enough for about 3 minutes in all with resnet18's compilation, large
# enough for steady kernels.
QUICK_GPU_CONFIGS = (("resnet18", "bf16", True, False, False),
                     ("resnet18", "tf32", True, False, False),
                     ("resnet18", "bf16", True, False, True),
                     ("resnet18", "bf16", True, True, False))
QUICK_GPU_IMAGES, QUICK_GPU_EVAL_IMAGES, QUICK_REPEATS = 8_192, 2_048, 2


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


def preset_params(model_name: str, precision: str, batch_size: int | None) -> Params:
    """The paper preset with this configuration's model and precision."""
    raw = yaml.safe_load(PAPER_PRESET.read_text())
    raw["model"] = model_name
    raw["train"]["precision"] = precision
    if batch_size is not None:
        raw["train"]["batch_size"] = batch_size
    return params_from_dict(raw)


def synthetic_data(n: int, n_monitor: int, device: torch.device) -> TrainData:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, *IMAGE_SHAPE), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, CLASSES, (n,), generator=generator)
    return TrainData(images=images.to(device), labels=labels.to(device),
                     monitor_images=images[:n_monitor].to(device),
                     monitor_labels=labels[:n_monitor].to(device), dataset="cifar10",
                     num_classes=CLASSES)


def _short(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"


def bench_config(model_name: str, precision: str, channels_last: bool, compiled: bool,
                 data: TrainData, eval_images: int, device: torch.device, repeats: int,
                 batch_size: int | None, deterministic: bool = False) -> dict:
    """One configuration's figures; a figure that fails is left out, its error recorded and the
    row's status `failed`."""
    row = _bench_config(model_name, precision, channels_last, compiled, data, eval_images,
                        device, repeats, batch_size, deterministic)
    row["status"] = "failed" if row.get("errors") else "ok"
    return row


def _bench_config(model_name: str, precision: str, channels_last: bool, compiled: bool,
                  data: TrainData, eval_images: int, device: torch.device, repeats: int,
                  batch_size: int | None, deterministic: bool) -> dict:
    row: dict = {"model": model_name, "precision": precision, "channels_last": channels_last,
                 "compile": compiled, "deterministic": deterministic,
                 "images": data.images.shape[0],
                 "monitor_images": data.monitor_images.shape[0], "eval_images": eval_images}
    errors: dict[str, str] = {}
    try:
        if deterministic:
            make_deterministic(device)
        params = preset_params(model_name, precision, batch_size)
        torch.manual_seed(0)
        net = build_model(model_name, num_classes=CLASSES, in_channels=IMAGE_SHAPE[0]).to(device)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        models = {name: copy.deepcopy(net) for name in ("at", "part")}
        optimizers = {name: torch.optim.SGD(m.parameters(), lr=params.train.lr,
                                            momentum=params.train.momentum,
                                            weight_decay=params.train.weight_decay)
                      for name, m in models.items()}
        # CAM hooks need the plain module: masks come from it, it shares the compiled weights
        runnable = {name: (torch.compile(m) if compiled else m) for name, m in models.items()}
        settings = mask_settings(params)
        uniform = epoch_budget("baseline", None, params.eps, params.eps)
    except Exception as error:  # noqa: BLE001 (recorded, and the next configuration runs)
        return {**row, "errors": {"setup": _short(error)}}

    def at_epoch(epoch: int) -> None:
        train_epoch(runnable["at"], optimizers["at"], data, uniform, params, epoch, device)

    def masks(epoch: int) -> torch.Tensor:
        return refreshed_masks(models["part"], data.images, settings, params.seed,
                               epoch, augmentation_for(params.train.augment, params.dataset))

    def part_epoch(epoch: int) -> None:
        budget = epoch_budget("part", masks(epoch), params.eps, params.eps_low,
                              params.mask.alignment)
        train_epoch(runnable["part"], optimizers["part"], data, budget, params, epoch, device)

    def monitor(_: int) -> None:
        monitor_accuracy(runnable["at"], data, params, device)

    def pgd20(epoch: int) -> None:
        attack_correctness(runnable["at"], data.images[:eval_images], data.labels[:eval_images],
                           "pgd20", eps=params.eps, step_size=params.train.step_size,
                           batch_size=params.eval.batch_size, seed=epoch)

    n = data.images.shape[0]
    try:
        at_epoch(0)  # warm-up both
        part_epoch(0)
        at_s, part_s = [], []
        for repeat in range(1, repeats + 1):  # alternately, so a drifting clock hits both alike
            at_s.append(_seconds(at_epoch, repeat, device))
            part_s.append(_seconds(part_epoch, repeat, device))
        row["at_images_per_s"] = round(n / statistics.median(at_s), 1)
        row["part_images_per_s"] = round(n / statistics.median(part_s), 1)
        row["part_over_at"] = round(statistics.median(
            p / a for p, a in zip(part_s, at_s, strict=True)), 4)
    except Exception as error:  # noqa: BLE001
        errors["epochs"] = _short(error)
    for figure, run, count in (("masks_per_s", masks, n),
                               ("monitor_images_per_s", monitor, data.monitor_images.shape[0]),
                               ("pgd20_images_per_s", pgd20, eval_images)):
        try:
            row[figure] = round(count / statistics.median(_timed(run, repeats, device)), 1)
        except Exception as error:  # noqa: BLE001
            errors[figure] = _short(error)
    if errors:
        row["errors"] = errors
    if device.type == "cuda":
        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        torch.cuda.reset_peak_memory_stats(device)
    return row


def refresh_count(part_epochs: int, refresh_every: int) -> int:
    """Mask computations in a PART run: its first epoch's masks, then one every
    `refresh_every` epochs (0: never again), as part.training.train.train_run refreshes them."""
    if part_epochs <= 0:
        return 0
    return 1 + (0 if refresh_every <= 0 else (part_epochs - 1) // refresh_every)


def projected_minutes(row: dict, preset: Params) -> float:
    """The preset's training run (burn-in, then PART) on CIFAR_TRAIN images at `row`'s rates."""
    at_epoch = CIFAR_TRAIN / row["at_images_per_s"]
    part_epoch = CIFAR_TRAIN / row["part_images_per_s"]  # masks refreshed in it
    mask_pass = CIFAR_TRAIN / row["masks_per_s"]
    monitor = preset.train.monitor_subset / row["monitor_images_per_s"]
    burn_in = preset.burn_in_epochs
    part_epochs = preset.epochs - burn_in
    unrefreshed = part_epochs - refresh_count(part_epochs, preset.mask.refresh_every)
    seconds = (burn_in * at_epoch + part_epochs * part_epoch - unrefreshed * mask_pass
               + preset.epochs * monitor)
    return seconds / 60


CONFIGURATION = ("precision", "channels_last", "compile", "deterministic")


def deterministic_cost(results: list[dict]) -> dict | None:
    """How much slower train.deterministic's settings train: each deterministic row against the
    row of the same configuration under torch's defaults (AT and PART epoch times' ratios)."""
    def key(row: dict) -> tuple:
        return tuple(row.get(k) for k in ("model", "precision", "channels_last", "compile"))

    free = {key(row): row for row in results if not row.get("deterministic")}
    costs = []
    for row in results:
        other = free.get(key(row))
        if not row.get("deterministic") or other is None:
            continue
        ratios = {f"{kind}_epoch_ratio": round(other[f"{kind}_images_per_s"]
                                               / row[f"{kind}_images_per_s"], 4)
                  for kind in ("at", "part")
                  if f"{kind}_images_per_s" in row and f"{kind}_images_per_s" in other}
        costs.append({**dict(zip(("model", "precision", "channels_last", "compile"), key(row),
                                 strict=True)), **ratios})
    return {"deterministic_over_default": costs} if costs else None


def projection(results: list[dict]) -> dict | None:
    """The paper's CIFAR-10 PART run at the fastest complete resnet18 configuration."""
    preset = params_from_dict(yaml.safe_load(PAPER_PRESET.read_text()))
    complete = [row for row in results if row["model"] == preset.model
                and all(figure in row for figure in FIGURES)]
    if not complete:
        return None
    best = min(complete, key=lambda row: projected_minutes(row, preset))
    part_epochs = preset.epochs - preset.burn_in_epochs
    return {"preset": str(PAPER_PRESET.relative_to(ROOT)), "model": preset.model,
            "epochs": preset.epochs, "burn_in_epochs": preset.burn_in_epochs,
            "mask_refreshes": refresh_count(part_epochs, preset.mask.refresh_every),
            "images_per_epoch": CIFAR_TRAIN, "monitor_images": preset.train.monitor_subset,
            "configuration": {k: best.get(k, False) for k in CONFIGURATION},
            "minutes": round(projected_minutes(best, preset), 1),
            "excludes": "the evaluate stage (PGD-20, CW, AutoAttack on the test set)"}


def main(small: bool | None = typer.Option(None, help="CPU-sized run (default: without a GPU)"),
         quick: bool = typer.Option(False, help="the device check's profile (~3 min on a GPU)"),
         models: str | None = typer.Option(None, help="comma-separated registry names"),
         n: int | None = typer.Option(None, help="training images per timed epoch"),
         n_eval: int | None = typer.Option(None, help="images for the PGD-20 figure"),
         repeats: int | None = typer.Option(None, min=1, help="default: 3 (--quick: 2)"),
         batch_size: int | None = typer.Option(None, help="default: the preset's (128)"),
         device: str = "auto",
         compile_models: bool | None = typer.Option(
             None, "--compile/--no-compile", help="also time torch.compile (default: on a GPU)"),
         out: Path | None = typer.Option(None, help="also write the JSON here")) -> None:
    target = resolve_device(device)
    on_gpu = target.type == "cuda"
    small = not on_gpu if small is None else small
    names = models.split(",") if models else (["cnn_small"] if small
                                              else ["resnet18", "wrn34_10"])
    n_eval = n_eval or (128 if small else QUICK_GPU_EVAL_IMAGES if quick else 2_000)
    repeats = repeats or (QUICK_REPEATS if quick else 3)
    precisions = list(PRECISIONS) if on_gpu else ["fp32"]  # the CPU runs every one as fp32
    layouts = [True, False] if on_gpu else [False]  # the pipeline's own first
    compiles = [False, True] if (on_gpu if compile_models is None else compile_models) else [False]
    configs = [(*config, False) for config in itertools.product(names, precisions, layouts,
                                                                compiles)]
    if quick:
        configs = (list(QUICK_GPU_CONFIGS) if on_gpu and not small and models is None
                   else [*configs, (*configs[0][:4], True)])
        names = list(dict.fromkeys(config[0] for config in configs))
    if any(config[4] for config in configs):
        # torch sizes its cuBLAS workspace at the first matmul: the deterministic one from the
        # start, as in a training stage (the rows under torch's defaults do not depend on it)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", DETERMINISTIC_CUBLAS_WORKSPACES[0])
    monitor = preset_params(names[0], "fp32", None).train.monitor_subset

    def images_for(name: str) -> int:
        if n:
            return n
        if small:
            return 256
        return QUICK_GPU_IMAGES if quick else GPU_IMAGES.get(name, GPU_DEFAULT_IMAGES)

    report = {
        "benchmark": "gpu_throughput", "device": _device_name(target),
        "device_type": target.type, "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "commit": _commit(), "threads": torch.get_num_threads(), "small": small, "quick": quick,
        "images": {name: images_for(name) for name in names}, "eval_images": n_eval,
        "image_shape": list(IMAGE_SHAPE), "classes": CLASSES, "synthetic": True,
        "repeats": repeats, "preset": str(PAPER_PRESET.relative_to(ROOT)),
        "batch_size": batch_size or preset_params(names[0], "fp32", None).train.batch_size,
        "results": [], "failed": [], "paper_run_projection": None, "deterministic_cost": None,
    }

    def write() -> str:
        text = json.dumps(report, indent=2)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text + "\n")
        return text

    data: TrainData | None = None
    for name, precision, layout, compiled, deterministic in configs:
        if data is None or data.images.shape[0] != images_for(name):
            count = images_for(name)
            data = synthetic_data(count, min(monitor, count), target)
        row = bench_config(name, precision, layout, compiled, data,
                           min(n_eval, data.images.shape[0]), target, repeats, batch_size,
                           deterministic)
        report["results"].append(row)
        if row["status"] == "failed":
            described = {k: row[k] for k in ("model", *CONFIGURATION)}
            report["failed"].append({**described, "errors": row["errors"]})
            typer.echo(f"bench_gpu: configuration {described} failed: {row['errors']}",
                       err=True)
        report["paper_run_projection"] = projection(report["results"])
        report["deterministic_cost"] = deterministic_cost(report["results"])
        write()
        if compiled:
            torch._dynamo.reset()  # the next configuration compiles afresh, memory freed
        if deterministic:  # the next configuration runs under torch's defaults again
            torch.use_deterministic_algorithms(False)
            torch.backends.cudnn.deterministic = False
    print(write())
    if report["failed"]:
        raise Exit(1)


if __name__ == "__main__":
    typer.run(main)
