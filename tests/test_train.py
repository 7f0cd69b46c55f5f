"""Training: masks follow their images; runs are paired, deterministic and resumable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from part.data.sources import load_source
from part.importance.masks import MaskSettings, compute_masks
from part.importance.variants import EpochBudget, follows_part, mask_pass_order
from part.models.checkpoint import load_checkpoint
from part.params import TrainParams, params_from_dict
from part.runtime.distributed import World
from part.training.batches import epoch_order, training_batches
from part.training.schedule import learning_rate
from part.training.spec import TrainData
from part.training.train import RunSpec, train_run

CPU = torch.device("cpu")


def _tiny_data(n_train: int = 96, n_test: int = 32) -> TrainData:
    train = load_source("synthetic", "train")
    test = load_source("synthetic", "test")
    return TrainData(images=train.images[:n_train], labels=train.labels[:n_train],
                     monitor_images=test.images[:n_test], monitor_labels=test.labels[:n_test],
                     dataset="synthetic", num_classes=10)


def _tiny_params(**overrides):
    raw = {"dataset": "synthetic", "model": "cnn_small", "eps": "8/255", "eps_low": "4/255",
           "epochs": 3, "burn_in_epochs": 1, "seeds": [3],
           "train": {"batch_size": 32, "steps": 2, "step_size": "2/255", "monitor_subset": 32,
                     "monitor_steps": 2, "augment": "crop_flip"}}
    raw.update(overrides)
    return params_from_dict(raw)


def _state(path: Path) -> dict[str, torch.Tensor]:
    model, _ = load_checkpoint(path)
    return model.state_dict()


def _assert_same_weights(a: Path, b: Path) -> None:
    first, second = _state(a), _state(b)
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("augment", [{"crop_padding": 0, "flip": False},
                                     {"crop_padding": 4, "flip": True}])
def test_every_image_is_trained_with_its_own_mask(augment):
    data = _tiny_data(n_train=100)
    # A mask that is a function of its own image's pixels: any pairing with another sample's
    # mask, or any crop or flip applied to only one of the two, breaks the relation.
    masks = (data.images.float() / 255 > 0.5).any(dim=1, keepdim=True)
    order = torch.randperm(100, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    seen = []
    budget = EpochBudget(masks, 8 / 255, 4 / 255)
    for batch in training_batches(data, budget, order, 32, augment, generator):
        assert torch.equal(batch.masks, (batch.images > 0.5).any(dim=1, keepdim=True))
        seen.append(batch.labels)
    assert torch.equal(torch.cat(seen), data.labels[order])


@pytest.mark.parametrize("ranks", [2, 3])
def test_each_rank_builds_its_share_of_the_one_process_batch_and_nothing_else(ranks):
    """The share a rank builds alone (crop, flip, masks) is the single process's batch, sliced."""
    data = _tiny_data(n_train=100)
    masks = (data.images.float() / 255 > 0.5).any(dim=1, keepdim=True)
    order = torch.randperm(100, generator=torch.Generator().manual_seed(0))
    budget = EpochBudget(masks, 8 / 255, 4 / 255)
    augment = {"crop_padding": 4, "flip": True}

    def batches(world):
        return list(training_batches(data, budget, order, 32, augment,
                                     torch.Generator().manual_seed(1), world))

    whole = batches(World(0, 1))
    shares = [batches(World(rank, ranks)) for rank in range(ranks)]
    for index, batch in enumerate(whole):
        pieces = [share[index] for share in shares]
        assert all(piece.size == batch.size for piece in pieces)
        assert sum(piece.labels.shape[0] for piece in pieces) == batch.labels.shape[0]
        for field in ("images", "labels", "masks"):
            assert torch.equal(torch.cat([getattr(piece, field) for piece in pieces]),
                               getattr(batch, field)), field


def test_official_schedule_counts_part_epochs_and_piecewise_counts_global_epochs():
    official = TrainParams(lr=0.01, lr_schedule="official", lr_milestones=(60, 90))
    piecewise = TrainParams(lr=0.01, lr_schedule="piecewise", lr_milestones=(60, 90))
    # The paper's 80 epochs with a 20-epoch burn-in: 0.01 throughout, 0.001 in the last epoch.
    assert [learning_rate(official, e, 20) for e in (1, 20, 21, 79)] == [0.01] * 4
    assert learning_rate(official, 80, 20) == pytest.approx(0.001)
    assert learning_rate(piecewise, 59, 20) == 0.01
    assert learning_rate(piecewise, 60, 20) == pytest.approx(0.001)
    assert learning_rate(piecewise, 90, 20) == pytest.approx(0.0001)


@pytest.fixture(scope="module")
def burnin(tmp_path_factory):
    root = tmp_path_factory.mktemp("burnin")
    params = _tiny_params()
    history = train_run(params, RunSpec("burnin", 1, 1), _tiny_data(), CPU,
                        out_path=root / "burnin.safetensors", log_dir=root / "logs" / "burnin",
                        state_dir=root / "runs", show_progress=False)
    assert [row["epoch"] for row in history] == [1]
    return root / "burnin.safetensors"


MASK_SETTINGS = MaskSettings("gradcam", "quantile", 0.5, 64)


PART_FOR_CONTROLS = "part-for-controls"


def _trace(root: Path, name: str) -> Path:
    return root / f"{name}.trace.safetensors"


def _part_trace(params, burnin_path, root, refresh_every=0, data=None,
                mask_settings=MASK_SETTINGS) -> Path:
    """The trace of a PART run in `root` that the controls there follow (trained once)."""
    trace = _trace(root, PART_FOR_CONTROLS)
    if not trace.exists():
        _continue(params, burnin_path, root, PART_FOR_CONTROLS, "part", refresh_every, data,
                  mask_settings)
    return trace


def _continue(params, burnin_path, root, name, variant="baseline", refresh_every=0, data=None,
              mask_settings=MASK_SETTINGS):
    follows = (_part_trace(params, burnin_path, root, refresh_every, data, mask_settings)
               if follows_part(variant) else None)
    spec = RunSpec(name, 2, params.epochs, variant=variant, init_checkpoint=burnin_path,
                   mask_settings=mask_settings if variant != "baseline" else None,
                   refresh_every=refresh_every, follows=follows)
    out = root / f"{name}.safetensors"
    history = train_run(params, spec, data if data is not None else _tiny_data(), CPU,
                        out_path=out, best_path=root / f"{name}.best.safetensors",
                        trace_path=_trace(root, name), log_dir=root / "logs" / name,
                        state_dir=root / "runs", show_progress=False)
    return out, history


def _interrupt_after_first_epoch(monkeypatch, params, burnin_path, root, name, **kwargs) -> None:
    """Run until epoch 2 is checkpointed, then die in epoch 3: a resume state is left."""
    import part.training.train as train_module

    if follows_part(kwargs.get("variant", "baseline")):  # PART's own run is not interrupted
        _part_trace(params, burnin_path, root, kwargs.get("refresh_every", 0),
                    kwargs.get("data"), kwargs.get("mask_settings", MASK_SETTINGS))
    real_monitor = train_module.monitor_accuracy
    calls = {"n": 0}

    def monitor_then_die(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_monitor(*args, **kw)

    with monkeypatch.context() as patch:
        patch.setattr(train_module, "monitor_accuracy", monitor_then_die)
        with pytest.raises(KeyboardInterrupt):
            _continue(params, burnin_path, root, name, **kwargs)
    assert not (root / f"{name}.safetensors").exists()
    assert (root / "runs" / f"{name}.safetensors").exists()


@pytest.mark.parametrize("variant", ["part", "uniform_matched", "random_mask"])
def test_every_variant_with_eps_low_equal_to_eps_is_exactly_the_baseline(burnin, tmp_path,
                                                                          variant):
    """Same burn-in, seed, batches, augmentations and random starts: the runs are paired, so
    with nothing to reweight every variant is the baseline bit for bit."""
    params = _tiny_params(eps_low="8/255")
    baseline, _ = _continue(params, burnin, tmp_path, "baseline")
    other, history = _continue(params, burnin, tmp_path, variant, variant, refresh_every=1)
    _assert_same_weights(baseline, other)
    assert [row["mean_budget"] for row in history] == pytest.approx([8 / 255] * 2, abs=1e-8)


def test_a_run_that_reads_no_budget_params_writes_the_same_bytes_whatever_they_are(tmp_path):
    """The burn-in and the baseline do not declare eps_low, cam, mask_rule or mask in dvc.yaml,
    so DVC keeps their cached outputs when these change: a fresh run under other values must
    write those very bytes (checkpoints and trace), or the cache would not be the result."""
    data = _tiny_data(n_train=64, n_test=32)
    written = {}
    for name, budget in (("a", {}), ("b", {"eps_low": "2/255", "cam": "layercam",
                                           "mask_rule": "quantile", "mask": {"quantile": 0.25}})):
        params, root = _tiny_params(epochs=2, **budget), tmp_path / name
        train_run(params, RunSpec("burnin", 1, 1), data, CPU, out_path=root / "burnin.safetensors",
                  log_dir=root / "logs" / "burnin", state_dir=root / "runs", show_progress=False)
        for variant in ("baseline", "part"):
            spec = RunSpec(variant, 2, 2, variant=variant,
                           init_checkpoint=root / "burnin.safetensors",
                           mask_settings=MASK_SETTINGS if variant == "part" else None)
            train_run(params, spec, data, CPU, out_path=root / f"{variant}.safetensors",
                      best_path=root / f"{variant}.best.safetensors",
                      trace_path=root / f"{variant}.trace.safetensors",
                      log_dir=root / "logs" / variant, state_dir=root / "runs", show_progress=False)
        written[name] = {path.name: path.read_bytes() for path in root.glob("*.safetensors")}
    for file in ("burnin.safetensors", "baseline.safetensors", "baseline.best.safetensors",
                 "baseline.trace.safetensors"):
        assert written["a"][file] == written["b"][file], file
    assert written["a"]["part.safetensors"] != written["b"]["part.safetensors"]


@pytest.mark.parametrize("alignment", ["sample", "paper"])
def test_under_paper_alignment_an_image_trains_with_the_mask_of_its_position_in_the_mask_pass(
        burnin, tmp_path, monkeypatch, alignment):
    """`sample`: the image at position p of the epoch gets its own mask. `paper`: it gets the
    mask of the image at position p of the earlier mask pass, which was shuffled apart."""
    import dataclasses

    import part.training.train as train_module

    params = _tiny_params(epochs=2, mask={"alignment": alignment},
                          train={"batch_size": 32, "steps": 1, "step_size": "2/255",
                                 "monitor_subset": 32, "monitor_steps": 1, "augment": "none"})
    data = _tiny_data()
    model, _ = load_checkpoint(burnin)
    own_masks = compute_masks(model, data.images, MASK_SETTINGS)  # keyed by sample index
    budgets = []
    real_loss = train_module.training_loss

    def recording_loss(method, model, x, y, budget, *args):
        budgets.append(budget.clone())
        return real_loss(method, model, x, y, budget, *args)

    monkeypatch.setattr(train_module, "training_loss", recording_loss)
    settings = dataclasses.replace(MASK_SETTINGS, alignment=alignment)
    _continue(params, burnin, tmp_path, "part", "part", data=data, mask_settings=settings)

    count = data.images.shape[0]
    trained_order = epoch_order(count, params.seed, 2, CPU)
    mask_order = mask_pass_order(count, params.seed, 2)
    assert not torch.equal(trained_order, mask_order)
    source = mask_order if alignment == "paper" else trained_order
    expected = torch.where(own_masks[source], params.eps, params.eps_low)
    assert torch.equal(torch.cat(budgets), expected)
    if alignment == "paper":  # most images train with another image's mask
        assert not torch.equal(own_masks[trained_order], own_masks[mask_order])


def test_the_paper_start_changes_part_but_not_at_whose_paper_start_is_ours(burnin, tmp_path):
    """The paper code's AT (torchattacks) draws U(-eps, eps) and clips it: our start for one
    eps. Its part_pgd draws U(-eps, eps) on every pixel and does not project: not ours."""
    train = {"batch_size": 32, "steps": 2, "step_size": "2/255", "monitor_subset": 32,
             "monitor_steps": 2, "augment": "crop_flip"}
    runs = {}
    for start in ("budget", "paper"):
        params = _tiny_params(train={**train, "random_start": start})
        for variant in ("baseline", "part"):
            runs[variant, start], _ = _continue(params, burnin, tmp_path / start,
                                                variant, variant)
    _assert_same_weights(runs["baseline", "budget"], runs["baseline", "paper"])
    with pytest.raises(AssertionError):
        _assert_same_weights(runs["part", "budget"], runs["part", "paper"])
    _, meta = load_checkpoint(runs["part", "paper"])
    assert meta["random_start"] == "paper" and meta["precision"] == "fp32"  # the CPU's


def test_the_first_masks_are_the_burn_in_models_own(burnin, tmp_path):
    params = _tiny_params()
    _, history = _continue(params, burnin, tmp_path, "part", "part")
    model, _ = load_checkpoint(burnin)
    expected = compute_masks(model, _tiny_data().images, MASK_SETTINGS).float().mean().item()
    assert history[0]["important_fraction"] == pytest.approx(expected, abs=1e-6)


def test_part_differs_from_the_baseline_when_eps_low_is_lower(burnin, tmp_path):
    params = _tiny_params(eps_low=0.0)
    baseline, _ = _continue(params, burnin, tmp_path, "baseline")
    part, _ = _continue(params, burnin, tmp_path, "part", "part")
    assert not torch.equal(_state(baseline)["fc.weight"], _state(part)["fc.weight"])


def test_training_is_deterministic_on_the_cpu(burnin, tmp_path):
    params = _tiny_params()
    first, _ = _continue(params, burnin, tmp_path / "a", "baseline")
    second, _ = _continue(params, burnin, tmp_path / "b", "baseline")
    _assert_same_weights(first, second)


def test_an_interrupted_run_resumes_from_its_last_completed_epoch(burnin, tmp_path, monkeypatch):
    params = _tiny_params()
    reference, reference_history = _continue(params, burnin, tmp_path / "whole", "part",
                                             "random_mask", refresh_every=1)
    root = tmp_path / "interrupted"
    _interrupt_after_first_epoch(monkeypatch, params, burnin, root, "part",
                                 variant="random_mask", refresh_every=1)
    resumed, history = _continue(params, burnin, root, "part", "random_mask", refresh_every=1)
    assert [row["epoch"] for row in history] == [2, 3]
    _assert_same_weights(reference, resumed)
    assert [r["val_pgd"] for r in history] == [r["val_pgd"] for r in reference_history]
    # the outputs hold the finished run: no state is left that could resume it again
    assert not (root / "runs" / "part.safetensors").exists()
    # the DVCLive log holds every epoch once, as the uninterrupted run's does, byte for byte
    assert _files(root / "logs" / "part") == _files(tmp_path / "whole" / "logs" / "part")
    _assert_same_weights(tmp_path / "whole" / "part.best.safetensors",
                         root / "part.best.safetensors")


def _files(directory: Path) -> dict[str, bytes]:
    return {path.relative_to(directory).as_posix(): path.read_bytes()
            for path in sorted(directory.rglob("*")) if path.is_file()}


def test_the_training_log_is_dvclives_one_row_per_epoch(burnin, tmp_path):
    _, history = _continue(_tiny_params(), burnin, tmp_path, "part", "part", refresh_every=1)
    log = tmp_path / "logs" / "part"
    latest = json.loads((log / "metrics.json").read_text())
    assert latest["step"] == 3 and latest["val_pgd"] == history[-1]["val_pgd"]
    for quantity in ("lr", "train_loss", "train_adv_acc", "val_natural", "val_pgd",
                     "important_fraction", "mean_budget"):
        rows = (log / "plots" / "metrics" / f"{quantity}.tsv").read_text().splitlines()
        assert rows[0] == f"step\t{quantity}"
        assert [row.split("\t") for row in rows[1:]] == [
            [str(r["epoch"]), str(r[quantity])] for r in history]
    # wall times would make the declared log differ on every run
    assert not (log / "plots" / "metrics" / "seconds.tsv").exists()


def _monitor_scores(monkeypatch, pgd_scores):
    """Monitor PGD accuracy reads pgd_scores, epoch after epoch; training itself is untouched."""
    import part.training.train as train_module

    scores = iter(pgd_scores)
    monkeypatch.setattr(train_module, "monitor_accuracy", lambda *args, **kw: (0.5, next(scores)))


def test_the_best_checkpoint_is_the_epoch_with_the_best_monitor_pgd_accuracy(
        burnin, tmp_path, monkeypatch):
    params = _tiny_params(epochs=4)  # epochs 2, 3 and 4 after the burn-in
    _monitor_scores(monkeypatch, [0.25, 0.5, 0.5])  # the best is epoch 3: the earlier of a tie
    last, history = _continue(params, burnin, tmp_path / "full", "baseline")
    best = tmp_path / "full" / "baseline.best.safetensors"
    _, meta = load_checkpoint(best)
    assert meta["epoch"] == 3 and "val_pgd" in meta["selected_by"]
    assert json.loads(meta["mean_budget_per_epoch"]).keys() == {"2", "3"}
    # the same weights as a run of the same schedule that stopped after epoch 3
    _monitor_scores(monkeypatch, [0.0] * 2)
    stopped = _continue_until(params, burnin, tmp_path / "stopped", last_epoch=3)
    _assert_same_weights(stopped, best)
    assert not torch.equal(_state(last)["fc.weight"], _state(best)["fc.weight"])


def _continue_until(params, burnin_path, root, last_epoch):
    spec = RunSpec("baseline", 2, last_epoch, init_checkpoint=burnin_path)
    out = root / "baseline.safetensors"
    train_run(params, spec, _tiny_data(), CPU, out_path=out, log_dir=root / "logs",
              state_dir=root / "runs", show_progress=False)
    return out


def _other_images(data: TrainData) -> TrainData:
    """The same number and shape of images, other content (a data file replaced in place)."""
    return TrainData(images=255 - data.images, labels=data.labels,
                     monitor_images=data.monitor_images, monitor_labels=data.monitor_labels,
                     dataset=data.dataset, num_classes=data.num_classes)


@pytest.mark.parametrize("change", ["params", "data", "code"])
def test_a_resume_state_of_another_computation_is_not_used(burnin, tmp_path, monkeypatch,
                                                           change):
    """A state left by an interrupted run, then a change of params, data content or code: the
    state is not resumed, and the run ends exactly like one that never saw it."""
    import part.training.resume

    params, data = _tiny_params(), _tiny_data()
    changed_params = _tiny_params(seeds=[4]) if change == "params" else params
    changed_data = _other_images(data) if change == "data" else data
    fresh, _ = _continue(changed_params, burnin, tmp_path / "fresh", "baseline",
                         data=changed_data)

    root = tmp_path / "stale"
    _interrupt_after_first_epoch(monkeypatch, params, burnin, root, "baseline", data=data)
    if change == "code":
        monkeypatch.setattr(part.training.resume, "code_digest", lambda: "another version of part/")
    resumed = []
    real_try_resume = part.training.resume.try_resume

    def recording_try_resume(*args):
        resumed.append(real_try_resume(*args))
        return resumed[-1]

    monkeypatch.setattr(part.training.resume, "try_resume", recording_try_resume)
    rerun, history = _continue(changed_params, burnin, root, "baseline", data=changed_data)
    assert resumed == [None]
    assert [row["epoch"] for row in history] == [2, 3]
    _assert_same_weights(fresh, rerun)


def test_masks_are_refreshed_at_the_declared_precision(burnin, tmp_path, monkeypatch):
    # The CAM pass of a mask refresh runs under the same numerics as the training attacks: with
    # train.precision fp32 (what the CPU runs), matmuls and convolutions in strict IEEE fp32
    # even where TF32 was switched on before.
    import part.training.train

    seen = []
    compute = part.training.train.refreshed_masks

    def recording(*args, **kwargs):
        seen.append((torch.backends.cuda.matmul.fp32_precision,
                     torch.backends.cudnn.conv.fp32_precision))
        return compute(*args, **kwargs)

    monkeypatch.setattr(part.training.train, "refreshed_masks", recording)
    before = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = torch.backends.cudnn.conv.fp32_precision = "tf32"
    try:
        _continue(_tiny_params(), burnin, tmp_path, "part", "part", refresh_every=1)
    finally:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = \
            before
    assert seen == [("ieee", "ieee")] * 2  # epochs 2 and 3, each refreshed


@pytest.mark.slow  # inductor compiles the graphs: about 30 s on 2 cores without its cache
def test_train_compile_runs_the_loss_and_its_attack_compiled_and_matches_eager(burnin, tmp_path):
    """train.compile: the epoch loop's loss and its PGD run through torch.compile (dynamo
    compiles graphs), and a PART epoch lands on eager's weights up to float reassociation.
    A PGD step of 1e-6 keeps the examples all but the random start, so no sign flip of a
    near-zero gradient moves them apart (tests/test_fast_paths.py explains the tolerance);
    a rerun compiled is byte-identical."""
    from torch._dynamo.utils import counters

    raw_train = {"batch_size": 32, "steps": 2, "step_size": 1e-6, "monitor_subset": 32,
                 "monitor_steps": 2, "augment": "crop_flip"}
    eager_params = _tiny_params(epochs=2, train=raw_train)
    compiled_params = _tiny_params(epochs=2, train={**raw_train, "compile": True})
    eager, _ = _continue(eager_params, burnin, tmp_path / "eager", "part", "part")
    graphs_before = counters["stats"]["unique_graphs"]
    compiled, _ = _continue(compiled_params, burnin, tmp_path / "compiled", "part", "part")
    assert counters["stats"]["unique_graphs"] > graphs_before
    for name, value in _state(eager).items():
        torch.testing.assert_close(_state(compiled)[name], value, rtol=1e-4, atol=1e-5,
                                   msg=name)
    again, _ = _continue(compiled_params, burnin, tmp_path / "again", "part", "part")
    assert again.read_bytes() == compiled.read_bytes()
