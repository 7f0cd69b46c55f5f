"""What each DVC stage does, given the params; the stage scripts only parse arguments.

Paths are the contract of DESIGN section 4 and of dvc.yaml. Each step imports what it runs
inside its function, so a stage executes only the modules its `deps` in dvc.yaml declare (a test
compares the two): a change to the evaluation code does not invalidate the trained models.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from part.errors import PartError
from part.params import Params
from part.ui import console

if TYPE_CHECKING:
    from part.masking import MaskSettings
    from part.train import TrainData

PREPARED_DIR = Path("data/prepared")
TRAIN_SET = PREPARED_DIR / "train.safetensors"
TEST_SET = PREPARED_DIR / "test.safetensors"
BURNIN_MODEL = Path("models/burnin.safetensors")
MASKS_FILE = Path("masks/burnin.safetensors")
MASK_GALLERY = Path("masks/gallery.png")
HISTORY_DIR = Path("plots/history")
STATE_DIR = Path("runs")
VARIANTS = ("baseline", "part")


def model_path(variant: str) -> Path:
    return Path("models") / f"{variant}.safetensors"


def metrics_path(variant: str) -> Path:
    return Path("metrics") / f"{variant}.json"


TIMINGS_DIR = Path("timings")  # wall times: not results, not declared in dvc.yaml, not in git


def timings_path(stage: str, name: str) -> Path:
    return TIMINGS_DIR / f"{stage}-{name}.json"


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise PartError(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")


def mask_settings(params: Params) -> MaskSettings:
    from part.masking import MaskSettings

    return MaskSettings(method=params.cam, rule=params.mask_rule, quantile=params.mask.quantile,
                        batch_size=params.mask.batch_size)


def run_prepare(params: Params) -> dict:
    from part.data import prepare_dataset

    summary = prepare_dataset(params.dataset, PREPARED_DIR, root=params.data.root,
                              train_subset=params.data.train_subset,
                              test_subset=params.data.test_subset, seed=params.seed,
                              download=params.data.download)
    console.print(f"prepared {params.dataset}: {summary}")
    return summary


def load_train_data(params: Params, device) -> TrainData:
    from part.data import load_prepared
    from part.train import TrainData, monitor_subset

    train = load_prepared(TRAIN_SET, device=device)
    test = load_prepared(TEST_SET, device=device)
    if train.meta["dataset"] != params.dataset:
        raise PartError(
            f"{TRAIN_SET} holds {train.meta['dataset']!r} but params.yaml asks for "
            f"{params.dataset!r}; run `dvc repro prepare`"
        )
    chosen = monitor_subset(test.labels, params.train.monitor_subset, params.seed)
    return TrainData(images=train.images, labels=train.labels,
                     monitor_images=test.images[chosen], monitor_labels=test.labels[chosen],
                     dataset=params.dataset, num_classes=int(train.meta["num_classes"]))


def run_burnin(params: Params, *, show_progress: bool = True) -> list[dict]:
    from part.device import resolve_device
    from part.train import RunSpec, train_run

    device = resolve_device(params.device)
    data = load_train_data(params, device)
    spec = RunSpec(name="burnin", first_epoch=1, last_epoch=params.burn_in_epochs)
    return train_run(params, spec, data, device, out_path=BURNIN_MODEL,
                     history_path=HISTORY_DIR / "burnin.csv", state_dir=STATE_DIR,
                     timings_path=timings_path("train", "burnin"),
                     show_progress=show_progress)


def run_masks(params: Params) -> float:
    from part.checkpoint import load_checkpoint
    from part.data import load_prepared
    from part.device import resolve_device
    from part.gallery import save_mask_gallery
    from part.masking import compute_masks, save_masks

    device = resolve_device(params.device)
    train = load_prepared(TRAIN_SET, device=device)
    model, _ = load_checkpoint(BURNIN_MODEL, device=device, expect={
        "model": params.model, "in_channels": train.images.shape[1],
        "image_size": train.images.shape[2], "num_classes": int(train.meta["num_classes"])})
    settings = mask_settings(params)
    masks = compute_masks(model, train.images, settings)
    save_masks(MASKS_FILE, masks, settings, source=str(BURNIN_MODEL))
    save_mask_gallery(MASK_GALLERY, train.images[:16].cpu(), masks[:16].cpu(),
                      train.labels[:16].cpu(), train.meta["class_names"],
                      title=f"{params.cam} / {params.mask_rule}")
    fraction = float(masks.float().mean())
    console.print(f"masks: {tuple(masks.shape)}, {fraction:.1%} of elements keep eps")
    return fraction


def run_train(params: Params, variant: str, *, show_progress: bool = True) -> list[dict]:
    from part.device import resolve_device
    from part.masking import load_masks
    from part.train import RunSpec, train_run

    check_variant(variant)
    device = resolve_device(params.device)
    data = load_train_data(params, device)
    masks = None
    if variant == "part":
        masks = load_masks(MASKS_FILE, expected_shape=tuple(data.images.shape))
    spec = RunSpec(name=variant, first_epoch=params.burn_in_epochs + 1, last_epoch=params.epochs,
                   init_checkpoint=BURNIN_MODEL, masks=masks,
                   mask_settings=mask_settings(params) if variant == "part" else None,
                   refresh_every=params.mask.refresh_every if variant == "part" else 0)
    return train_run(params, spec, data, device, out_path=model_path(variant),
                     history_path=HISTORY_DIR / f"{variant}.csv", state_dir=STATE_DIR,
                     timings_path=timings_path("train", variant),
                     show_progress=show_progress)


def run_evaluate(params: Params, variant: str) -> dict:
    from part.evaluate import evaluate_with_params, write_metrics, write_timings

    check_variant(variant)
    metrics = evaluate_with_params(params, model_path(variant), TEST_SET)
    write_metrics(metrics_path(variant), metrics)
    write_timings(timings_path("evaluate", variant), metrics)
    return metrics


REPORT = Path("reports/results.md")
TRADEOFF_PLOT = Path("reports/accuracy_robustness.png")


def run_report(params: Params) -> Path:
    from part.report import read_metrics, write_report

    baseline = read_metrics(metrics_path("baseline"))
    part = read_metrics(metrics_path("part"))
    path = write_report(REPORT, TRADEOFF_PLOT, baseline, part, params)
    console.print(f"wrote {path} and {TRADEOFF_PLOT}")
    return path
