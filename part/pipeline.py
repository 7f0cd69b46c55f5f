"""What each DVC stage does, given the params; the stage scripts only parse arguments.

The files each stage reads and writes are named in `part.io.paths`. Each step imports what it runs
inside its function, so a stage executes only the modules its `deps` in dvc.yaml declare (a test
compares the two): a change to the evaluation code does not invalidate the trained models.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from part.errors import PartError
from part.io.paths import (
    PREPARED_DIR,
    REPORT,
    STATE_DIR,
    STUDY,
    TEST_SET,
    TRADEOFF_PLOT,
    TRAIN_SET,
    VAL_SET,
    best_model_path,
    budget_spec_path,
    burnin_path,
    gallery_path,
    masks_path,
    metrics_path,
    model_path,
    outcomes_path,
    run_name,
    scored_model_path,
    timings_path,
    trace_path,
    training_log_dir,
)
from part.params import Params
from part.ui import console

if TYPE_CHECKING:
    from part.importance.masks import MaskSettings
    from part.training.spec import TrainData


def check_variant(variant: str, params: Params) -> None:
    from part.importance.variants import CONTROLS, VARIANTS

    if variant not in VARIANTS:
        raise PartError(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")
    key = "controls" if variant in CONTROLS else "variants"
    listed = params.controls if variant in CONTROLS else params.variants
    if variant not in listed:
        raise PartError(f"variant {variant!r} is not in `{key}` ({', '.join(listed) or 'empty'})"
                        " in params.yaml; add it there")


def budget_spec(params: Params, variant: str) -> dict[str, Any]:
    """The settings that make `variant`'s budget, beyond those every run shares: none for the
    baseline, so that its file (and so its training) ignores eps_low and the CAM settings."""
    from part.importance.variants import BASELINE

    if variant == BASELINE:
        return {"variant": variant}
    return {"variant": variant, "eps_low": params.eps_low, "cam": params.cam,
            "mask_rule": params.mask_rule, "mask": dataclasses.asdict(params.mask)}


def _spec_text(params: Params, variant: str) -> str:
    return json.dumps(budget_spec(params, variant), indent=2, sort_keys=True) + "\n"


def run_budgets(params: Params) -> list[Path]:
    """budgets/<variant>.json for every variant: the train stages depend on their own file rather
    than on the CAM params, which DVC cannot give to some items of a matrix and not others."""
    from part.importance.variants import VARIANTS
    from part.io.atomic import atomic_write_text

    paths = []
    for variant in VARIANTS:
        atomic_write_text(budget_spec_path(variant), _spec_text(params, variant))
        paths.append(budget_spec_path(variant))
    return paths


def _check_budget_spec(params: Params, variant: str) -> None:
    path = budget_spec_path(variant)
    if not path.is_file() or path.read_text() != _spec_text(params, variant):
        raise PartError(f"{path} does not match params.yaml; run `dvc repro budgets` (or "
                        "`dvc repro`) so that the training stages see the current settings")


def mask_settings(params: Params) -> MaskSettings:
    from part.importance.masks import MaskSettings

    return MaskSettings(method=params.cam, rule=params.mask_rule, quantile=params.mask.quantile,
                        batch_size=params.mask.batch_size, alignment=params.mask.alignment)


# The params prepare reads (its `params` in dvc.yaml; a test checks): the only ones it checks
# against their owners' registries, so that the owners (attacks, models, ...) are not its code.
PREPARE_PARAMS = ("dataset", "data")


def run_prepare(params: Params) -> dict:
    from part.data.prepared import prepare_dataset

    summary = prepare_dataset(params.dataset, PREPARED_DIR, root=params.data.root,
                              train_subset=params.data.train_subset,
                              val_subset=params.data.val_subset,
                              test_subset=params.data.test_subset, seed=params.data.seed,
                              download=params.data.download,
                              image_size=params.data.image_size)
    console.print(f"prepared {params.dataset}: {summary}")
    return summary


def _monitor_split(params: Params) -> str:
    # The monitor (and so the best epoch) runs on the validation split held out of the training
    # set; only with data.val_subset: 0 on the test subset, as the paper code does. Either way
    # prepare writes it to VAL_SET, so training reads (and depends on) no test file otherwise.
    return "validation" if params.data.val_subset else "test"


def _join_with(inputs: list[Path], device) -> None:
    """Join torchrun's ranks (if any), and stop every rank with one message if any lacks one of
    `inputs`: on several machines each reads its own copy of them."""
    from part.runtime.distributed import join, require_everywhere, world_from_env

    world = world_from_env()
    join(world, device)
    require_everywhere(inputs, world, device)


def load_train_data(params: Params, device) -> TrainData:
    from part.data.prepared import load_prepared
    from part.training.monitor import monitor_subset
    from part.training.spec import TrainData

    train = load_prepared(TRAIN_SET, device=device)
    if train.meta["dataset"] != params.dataset:
        raise PartError(
            f"{TRAIN_SET} holds {train.meta['dataset']!r} but params.yaml asks for "
            f"{params.dataset!r}; run `dvc repro prepare`"
        )
    split_name = _monitor_split(params)
    monitor = load_prepared(VAL_SET, device=device)
    held = "validation" if monitor.meta.get("split") == "val" else monitor.meta.get("split")
    if monitor.meta["dataset"] != params.dataset or held != split_name or len(monitor) == 0:
        raise PartError(f"{VAL_SET} does not hold the {split_name} split of {params.dataset} "
                        "that params.yaml asks for; run `dvc repro prepare`")
    chosen = monitor_subset(monitor.labels, params.train.monitor_subset, params.data.seed)
    return TrainData(images=train.images, labels=train.labels,
                     monitor_images=monitor.images[chosen], monitor_labels=monitor.labels[chosen],
                     dataset=params.dataset, num_classes=int(train.meta["num_classes"]),
                     monitor_split=split_name)


def run_burnin(params: Params, *, show_progress: bool = True) -> list[dict]:
    from part.runtime.device import resolve_device
    from part.training.train import RunSpec, train_run

    device = resolve_device(params.device)
    _join_with([TRAIN_SET, VAL_SET], device)
    data = load_train_data(params, device)
    name = run_name("burnin", params.seed)
    spec = RunSpec(name=name, first_epoch=1, last_epoch=params.burn_in_epochs)
    return train_run(params, spec, data, device, out_path=burnin_path(params.seed),
                     log_dir=training_log_dir(name), state_dir=STATE_DIR,
                     timings_path=timings_path("train", name), show_progress=show_progress)


def run_masks(params: Params) -> float:
    """The burn-in model's masks and a gallery of them, to inspect; training computes the same
    masks itself from the same weights, so it does not wait for (or depend on) this file."""
    from part.data.prepared import load_prepared
    from part.importance.gallery import save_mask_gallery
    from part.importance.masks import compute_masks, save_masks
    from part.models.checkpoint import load_checkpoint
    from part.runtime.device import make_deterministic, resolve_device
    from part.runtime.distributed import gather_masks, leave, world_from_env
    from part.runtime.precision import effective_precision, numerics

    device = resolve_device(params.device)
    make_deterministic(device, params.train.deterministic)
    source = burnin_path(params.seed)
    _join_with([TRAIN_SET, source], device)
    train = load_prepared(TRAIN_SET, device=device)
    model, _ = load_checkpoint(source, device=device, expect={
        "model": params.model, "in_channels": train.images.shape[1],
        "image_size": train.images.shape[2], "num_classes": int(train.meta["num_classes"])})
    settings = mask_settings(params)
    world = world_from_env()  # under torchrun each rank computes its share of the masks
    # at the precision training computes its masks at (train.precision), so they are the same
    with numerics(effective_precision(params.train.precision, device)):
        masks = gather_masks(world, lambda share: compute_masks(model, share, settings),
                             train.images, settings.batch_size)
    leave(world)
    if not world.is_main:
        return float(masks.float().mean())
    save_masks(masks_path(params.seed), masks, settings, source=str(source))
    save_mask_gallery(gallery_path(params.seed), train.images[:16].cpu(), masks[:16].cpu(),
                      train.labels[:16].cpu(), train.meta["class_names"],
                      title=f"{params.cam} / {params.mask_rule}")
    fraction = float(masks.float().mean())
    console.print(f"masks: {tuple(masks.shape)}, {fraction:.1%} of elements keep eps")
    return fraction


def run_train(params: Params, variant: str, *, show_progress: bool = True) -> list[dict]:
    from part.importance.variants import PART, follows_part, uses_cam
    from part.runtime.device import resolve_device
    from part.training.train import RunSpec, train_run

    check_variant(variant, params)
    device = resolve_device(params.device)
    follows = trace_path(PART, params.seed) if follows_part(variant) else None
    _join_with([TRAIN_SET, VAL_SET, burnin_path(params.seed),
                budget_spec_path(variant), *([follows] if follows else [])], device)
    _check_budget_spec(params, variant)
    data = load_train_data(params, device)
    name = run_name(variant, params.seed)
    reweighted = uses_cam(variant)
    spec = RunSpec(name=name, variant=variant, first_epoch=params.burn_in_epochs + 1,
                   last_epoch=params.epochs, init_checkpoint=burnin_path(params.seed),
                   mask_settings=mask_settings(params) if reweighted else None,
                   refresh_every=params.mask.refresh_every if reweighted else 0,
                   follows=follows)
    return train_run(params, spec, data, device, out_path=model_path(variant, params.seed),
                     best_path=best_model_path(variant, params.seed),
                     trace_path=trace_path(variant, params.seed),
                     log_dir=training_log_dir(name), state_dir=STATE_DIR,
                     timings_path=timings_path("train", name), show_progress=show_progress)


def run_evaluate(params: Params, variant: str) -> dict:
    from part.evaluation.evaluate import evaluate_with_params
    from part.evaluation.outcomes import write_metrics, write_outcomes, write_timings

    check_variant(variant, params)
    name = run_name(variant, params.seed)
    checkpoint = scored_model_path(variant, params.seed, params.eval.checkpoint)
    metrics = evaluate_with_params(params, checkpoint, TEST_SET)
    write_outcomes(outcomes_path(variant, params.seed), metrics)
    write_metrics(metrics_path(variant, params.seed), metrics)
    write_timings(timings_path("evaluate", name), metrics)
    return metrics


def run_report(params: Params) -> Path:
    from part.evaluation.report import write_report
    from part.evaluation.statistics import load_study_inputs, study

    inputs = load_study_inputs(params.seeds, params.runs, metrics_path, outcomes_path)
    summary = study(inputs, params.seeds, params.runs)
    path = write_report(REPORT, STUDY, TRADEOFF_PLOT, summary, params)
    console.print(f"wrote {path}, {STUDY} and {TRADEOFF_PLOT}")
    return path
