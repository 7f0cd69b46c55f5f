"""Multi-attack evaluation: figures agree with independent implementations, the attacks are
ordered by strength on a trained model, results repeat under a seed, the worst case is the
per-example AND, AutoAttack runs on at most n_autoattack examples and agrees with its own report,
and the evaluate stage writes metrics/<variant>.json."""

from __future__ import annotations

import logging
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from part.attacks.linf import pgd
from part.attacks.suite import ATTACKS, EvaluationError, parse_attacks
from part.data.prepared import load_prepared, prepare_dataset
from part.evaluation.evaluate import attack_correctness, evaluate_checkpoint, evaluate_model
from part.evaluation.outcomes import worst_case_correctness, worst_cases, write_metrics
from part.models import build_model
from part.models.checkpoint import save_checkpoint

EPS = 8 / 255
STEP = 2 / 255
# PGD adversarial training in the fixture: one random-start step of 2.5 eps per batch (the
# cheapest PGD that gives real robustness on the synthetic stripes), 40 batches of 32.
TRAIN_BATCHES, TRAIN_BATCH_SIZE, TRAIN_LR = 40, 32, 0.05
N_TORCHATTACKS = 100  # one point = one example
# AutoAttack spends nearly all its time on the examples that survive APGD-CE (APGD-T and FAB-T
# try 9 target classes each, Square makes 5000 queries): on this CPU about 15 s for each survivor.
# So the AutoAttack test attacks 8 examples at 11/255, past the training budget, where one
# survives: about 20 s instead of minutes, and still a non-trivial figure.
N_AUTOATTACK = 8
AUTOATTACK_EPS = 11 / 255


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("evaluate")
    prepare_dataset("synthetic", root / "data", train_subset=500, test_subset=200, seed=0)
    train = load_prepared(root / "data" / "train.safetensors")
    test = load_prepared(root / "data" / "test.safetensors")
    torch.manual_seed(0)
    model = build_model("cnn_small", num_classes=10, in_channels=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=TRAIN_LR, momentum=0.9)
    order = torch.Generator().manual_seed(0)
    for _ in range(TRAIN_BATCHES):
        index = torch.randint(0, len(train), (TRAIN_BATCH_SIZE,), generator=order)
        x, y = train.images[index].float() / 255, train.labels[index]
        model.eval()
        x_adv = pgd(model, x, y, EPS, 2.5 * EPS, 1, random_start=True)
        model.train()
        loss = F.cross_entropy(model(x_adv), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    meta = {"model": "cnn_small", "num_classes": 10, "in_channels": 3, "image_size": 32,
            "dataset": "synthetic", "method": "at", "eps": EPS, "eps_low": EPS,
            "epoch": 1, "params_hash": "test"}
    path = save_checkpoint(root / "trained.safetensors", model, meta)
    return SimpleNamespace(model=model, path=path, data=root / "data" / "test.safetensors",
                           images=test.images, labels=test.labels, root=root)


def _figures(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if not key.startswith("seconds_")}


# --------------------------------------------------------------------------- arguments


def test_parse_attacks_keeps_canonical_order_and_rejects_unknown_keys():
    assert parse_attacks("pgd20, natural,pgd20") == ("natural", "pgd20")
    assert parse_attacks(list(reversed(ATTACKS))) == ATTACKS
    with pytest.raises(EvaluationError, match=f"unknown attack 'pgd7'; allowed: "
                                              f"{', '.join(ATTACKS)}"):
        parse_attacks("natural,pgd7")
    with pytest.raises(EvaluationError, match="no attacks given"):
        parse_attacks(" , ")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"eps": 1.5}, "eps must be a budget in"),
    ({"step_size": -0.1}, "step_size must be a number >= 0"),
    ({"batch_size": 0}, "batch_size must be a whole number >= 1"),
    ({"n": 0}, "n must be a positive whole number"),
    ({"n_autoattack": 0}, "n_autoattack must be a positive whole number"),
    ({"images": torch.full((4, 3, 32, 32), 2.0)}, r"float images must lie in \[0,1\]"),
    ({"images": torch.zeros(4, 32, 32)}, r"images must be a tensor \[N,C,H,W\]"),
    ({"labels": torch.zeros(3, dtype=torch.int64)}, r"labels must be an int64 tensor \[4\]"),
    ({"attacks": ("natural", "square")}, "unknown attack 'square'"),
    ({"autoattack_version": "fast"}, "unknown AutoAttack version 'fast'; allowed: standard, "
                                     "plus, rand"),
])
def test_bad_arguments_raise_one_clear_error(overrides, message):
    arguments = {"images": torch.zeros(4, 3, 32, 32, dtype=torch.uint8),
                 "labels": torch.zeros(4, dtype=torch.int64), "attacks": ("natural",),
                 "eps": EPS, "step_size": STEP, "progress": False, **overrides}
    model = build_model("cnn_small", 10, 3)
    with pytest.raises(EvaluationError, match=message):
        evaluate_model(model, arguments.pop("images"), arguments.pop("labels"), **arguments)


# --------------------------------------------------------------------------- worst case


def test_worst_case_needs_every_attack_survived_over_the_shared_examples():
    correct = {"natural": torch.tensor([True, True, True, False, True]),
               "pgd20": torch.tensor([True, False, True, True, True]),
               "autoattack": torch.tensor([True, True, False])}
    assert worst_case_correctness(correct).tolist() == [True, False, False]


def test_the_headline_worst_case_keeps_every_example_autoattack_did_not_run_on():
    """AutoAttack on 3 of 5 examples: the worst case over the other attacks still covers all 5;
    the AutoAttack worst case covers its 3."""
    correct = {"natural": torch.tensor([True, True, True, False, True]),
               "pgd20": torch.tensor([True, False, True, True, True]),
               "autoattack": torch.tensor([True, True, False])}
    found = worst_cases(correct)
    assert found["worst_case"].tolist() == [True, False, True, False, True]
    assert found["worst_case_autoattack"].tolist() == [True, False, False]
    assert set(worst_cases({"autoattack": correct["autoattack"]})) == {"worst_case"}


def test_worst_case_and_figures_match_per_example_results_and_repeat(trained):
    attacks = ("natural", "fgsm", "pgd20", "cw20", "mma", "mma_max", "pgd_unimportant")
    settings = {"eps": EPS, "step_size": STEP, "steps": 5, "batch_size": 16, "seed": 3}
    first = evaluate_model(trained.model, trained.images, trained.labels, attacks=attacks, n=24,
                           progress=False, **settings)
    again = evaluate_model(trained.model, trained.images, trained.labels, attacks=attacks, n=24,
                           progress=False, **settings)
    assert _figures(first) == _figures(again)

    vectors = {name: attack_correctness(trained.model, trained.images[:24], trained.labels[:24],
                                        name, **settings) for name in attacks}
    for name in attacks:
        assert first[name] == vectors[name].sum().item() / 24
        assert first[f"n_{name}"] == 24
    worst = torch.stack(list(vectors.values())).all(dim=0)
    assert first["worst_case"] == worst.sum().item() / 24
    assert first["worst_case"] <= min(first[name] for name in attacks)
    assert first["n_worst_case"] == 24


@pytest.mark.parametrize("rule", ["official", "quantile"])
def test_pgd_unimportant_moves_only_what_the_evaluated_models_own_cam_calls_unimportant(
        trained, rule):
    from part.attacks.suite import AttackSettings, adversary
    from part.importance.masks import MaskSettings, compute_masks

    masks = MaskSettings("gradcam", rule, 0.5)
    attack = adversary("pgd_unimportant", AttackSettings(EPS, STEP, 5, 64, 0, masks))
    images, labels = trained.images[:64], trained.labels[:64]
    fresh = build_model("cnn_small", num_classes=10, in_channels=3).eval()
    moved_where = []
    for model in (trained.model, fresh):
        important = compute_masks(model, images, masks).expand(-1, 3, -1, -1)
        x = images.float() / 255
        delta = (attack(model, x, labels) - x).abs()
        assert (delta[important] == 0).all()  # no budget where the CAM says important
        assert (delta[~important] <= EPS).all() and (delta[~important] > 0).float().mean() > 0.5
        moved_where.append(delta > 0)
    # Each model is attacked where its own CAM points away, not where the other's does.
    assert not torch.equal(moved_where[0], moved_where[1])


def test_uint8_and_float_images_give_the_same_figures(trained):
    settings = {"attacks": ("natural", "fgsm"), "eps": EPS, "step_size": STEP, "n": 32,
                "progress": False}
    as_uint8 = evaluate_model(trained.model, trained.images, trained.labels, **settings)
    as_float = evaluate_model(trained.model, trained.images.float() / 255, trained.labels,
                              **settings)
    assert _figures(as_uint8) == _figures(as_float)


def test_evaluation_leaves_model_mode_gradients_and_rng_as_found():
    model = build_model("cnn_small", 10, 3).train()
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(6) % 10
    rng_before = torch.random.get_rng_state()
    evaluate_model(model, images, labels, attacks=("natural", "pgd20"), eps=EPS, step_size=STEP,
                   steps=2, seed=5, progress=False)
    assert model.training
    assert all(parameter.requires_grad for parameter in model.parameters())
    assert all(parameter.grad is None for parameter in model.parameters())
    assert torch.equal(torch.random.get_rng_state(), rng_before)


# --------------------------------------------------------------------------- oracles


@pytest.mark.slow
def test_pgd20_agrees_with_torchattacks_within_one_point(trained):
    torchattacks = pytest.importorskip("torchattacks")
    images, labels = trained.images[:N_TORCHATTACKS], trained.labels[:N_TORCHATTACKS]
    ours = evaluate_model(trained.model, images, labels, attacks=("natural", "pgd20"), eps=EPS,
                          step_size=STEP, steps=20, batch_size=N_TORCHATTACKS, seed=0,
                          progress=False)
    attack = torchattacks.PGD(trained.model, eps=EPS, alpha=STEP, steps=20, random_start=True)
    torch.manual_seed(0)
    x_adv = attack(images.float() / 255, labels)
    with torch.no_grad():
        reference = int((trained.model(x_adv).argmax(dim=1) == labels).sum())
    # Counted in examples: a float fraction of 100 is 0.71 and 0.7200000286, whose difference
    # exceeds 0.01 by a rounding error though the two attacks differ by one example.
    assert abs(round(ours["pgd20"] * N_TORCHATTACKS) - reference) <= 1
    assert ours["pgd20"] < ours["natural"]  # the comparison is not between two no-ops


class _LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _logged_percent(messages: list[str], prefix: str) -> float:
    (match,) = [re.fullmatch(rf"{prefix}: ([0-9.]+)%", message) for message in messages
                if re.fullmatch(rf"{prefix}: ([0-9.]+)%", message)]
    return float(match.group(1))


@pytest.mark.slow
def test_attacks_are_ordered_and_autoattack_agrees_with_its_own_report(trained):
    capture = _LogCapture()
    logger = logging.getLogger("auto-attack")
    logger.addHandler(capture)
    try:
        metrics = evaluate_checkpoint(trained.path, trained.data, attacks=ATTACKS, n=N_AUTOATTACK,
                                      n_autoattack=N_AUTOATTACK, eps=AUTOATTACK_EPS,
                                      batch_size=64, seed=0, device="cpu", progress=False)
    finally:
        logger.removeHandler(capture)

    assert metrics["eps"] == AUTOATTACK_EPS and metrics["step_size"] == AUTOATTACK_EPS / 4
    assert metrics["natural"] >= metrics["pgd20"] >= metrics["autoattack"] >= \
        metrics["worst_case_autoattack"]
    assert metrics["worst_case_autoattack"] <= min(metrics[key] for key in ATTACKS)
    assert metrics["worst_case"] <= min(metrics[key] for key in ATTACKS if key != "autoattack")
    assert 0 < metrics["autoattack"] < metrics["natural"]  # a non-trivial comparison
    assert all(metrics[f"n_{key}"] == N_AUTOATTACK
               for key in [*ATTACKS, "worst_case", "worst_case_autoattack"])
    # Our figure (the model on AutoAttack's x_adv) against the package's own verdicts and log.
    assert metrics["autoattack"] == metrics["autoattack_reported"]
    assert _logged_percent(capture.messages, "robust accuracy") == \
        pytest.approx(100 * metrics["autoattack"], abs=0.005)
    # AutoAttack saw exactly our first N_AUTOATTACK examples: its clean accuracy is ours.
    assert _logged_percent(capture.messages, "initial accuracy") == \
        pytest.approx(100 * metrics["natural"], abs=0.005)
    assert metrics["autoattack_package"].startswith("pyautoattack")
    for key in ("model", "method", "eps_low", "epoch"):
        assert key in metrics


# --------------------------------------------------------------------------- AutoAttack plumbing


def test_autoattack_never_sees_more_than_n_autoattack_examples(trained, monkeypatch):
    import pyautoattack

    seen = {}

    def fake_run(self, x, y, *, batch_size=250, state_path=None):
        seen.update(n=x.shape[0], dtype=x.dtype, eps=self.epsilon, seed=self.seed,
                    version=self.version, norm=self.norm, batch_size=batch_size)
        with torch.no_grad():
            return x.clone(), self.model(x).argmax(dim=1)

    monkeypatch.setattr(pyautoattack.AutoAttack, "run_standard_evaluation", fake_run)
    metrics = evaluate_model(trained.model, trained.images, trained.labels,
                             attacks=("natural", "autoattack"), eps=EPS, step_size=STEP, n=40,
                             n_autoattack=7, batch_size=32, seed=11, progress=False)
    assert seen == {"n": 7, "dtype": torch.float32, "eps": EPS, "seed": 11,
                    "version": "standard", "norm": "Linf", "batch_size": 32}
    assert (metrics["n_natural"], metrics["n_autoattack"]) == (40, 7)
    # the headline worst case keeps all 40 examples; AutoAttack's own covers its 7
    assert (metrics["n_worst_case"], metrics["n_worst_case_autoattack"]) == (40, 7)
    assert metrics["worst_case"] == metrics["natural"]
    with torch.no_grad():
        clean = trained.model(trained.images[:7].float() / 255).argmax(dim=1) == trained.labels[:7]
    assert metrics["autoattack"] == clean.sum().item() / 7 == metrics["autoattack_reported"]


@pytest.mark.parametrize("version, subattacks", [
    ("standard", ["apgd-ce", "apgd-t", "fab-t", "square"]),
    ("plus", ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]),
    ("rand", ["apgd-ce", "apgd-dlr"]),
])
def test_the_autoattack_version_is_autoattacks_own_and_recorded(trained, monkeypatch, version,
                                                                 subattacks):
    import pyautoattack

    seen = {}

    def fake_run(self, x, y, *, batch_size=250, state_path=None):
        seen.update(version=self.version, attacks=list(self.attacks_to_run), seed=self.seed)
        with torch.no_grad():
            return x.clone(), self.model(x).argmax(dim=1)

    monkeypatch.setattr(pyautoattack.AutoAttack, "run_standard_evaluation", fake_run)
    metrics = evaluate_model(trained.model, trained.images, trained.labels,
                             attacks=("autoattack",), eps=EPS, step_size=STEP, n_autoattack=4,
                             seed=5, autoattack_version=version, progress=False)
    assert seen == {"version": version, "attacks": subattacks, "seed": 5}
    assert (metrics["autoattack_version"], metrics["autoattack_seed"]) == (version, 5)
    assert metrics["versions"]["autoattack"] == f"pyautoattack {pyautoattack.__version__}"
    assert metrics["versions"]["torch"] == torch.__version__


def test_saved_adversarial_examples_rescore_to_the_tables_figures(trained, tmp_path):
    from safetensors.torch import load_file

    from part.evaluation.outcomes import write_adversarial
    from part.evaluation.rescore import rescore_adversarial

    metrics = evaluate_model(trained.model, trained.images, trained.labels,
                             attacks=("natural", "fgsm", "pgd20", "pgd_unimportant"), eps=EPS,
                             step_size=STEP, n=40, batch_size=16, seed=3,
                             keep_adversarial=True, progress=False)
    path = write_adversarial(tmp_path / "adv.safetensors", metrics)
    saved = load_file(str(path))
    clean = trained.images[:40].float() / 255
    assert torch.equal(saved["natural"], clean) and torch.equal(saved["labels"],
                                                                 trained.labels[:40])
    for key in ("fgsm", "pgd20", "pgd_unimportant"):
        assert saved[key].dtype == torch.float32  # uint8 would move examples off their attack
        assert (saved[key] - clean).abs().max() <= EPS + 1e-6
        assert not torch.equal(saved[key], clean)
        assert torch.equal(saved[f"{key}.correct"], metrics.outcomes[key])
    rescored = rescore_adversarial(trained.model, path, batch_size=16)
    for key in ("natural", "fgsm", "pgd20", "pgd_unimportant", "worst_case"):
        assert (rescored[key], rescored[f"n_{key}"]) == (metrics[key], metrics[f"n_{key}"])


def test_rescoring_refuses_a_file_that_holds_no_adversarial_examples(trained):
    from part.evaluation.rescore import rescore_adversarial

    with pytest.raises(EvaluationError, match="not an adversarial-examples file"):
        rescore_adversarial(trained.model, trained.path)  # a checkpoint


def test_upstream_autoattack_package_is_preferred_when_installed(trained, monkeypatch):
    calls = {}

    class UpstreamAutoAttack:  # the signature of fra31/auto-attack
        def __init__(self, model, norm="Linf", eps=0.3, seed=None, verbose=True,
                     attacks_to_run=(), version="standard", is_tf_model=False, device="cuda",
                     log_path=None):
            calls["init"] = {"norm": norm, "eps": eps, "seed": seed, "version": version,
                             "device": str(device), "verbose": verbose}
            self.model = model
            self.attacks_to_run = ["apgd-ce", "apgd-t", "fab-t", "square"]  # set_version's
            self.apgd_targeted = SimpleNamespace(n_target_classes=9)
            self.fab = SimpleNamespace(n_target_classes=9)

        def run_standard_evaluation(self, x_orig, y_orig, bs=250, return_labels=False):
            calls["run"] = {"n": x_orig.shape[0], "bs": bs, "return_labels": return_labels}
            with torch.no_grad():
                labels = self.model(x_orig).argmax(dim=1)
            return (x_orig, labels) if return_labels else x_orig

    upstream = ModuleType("autoattack")
    upstream.AutoAttack = UpstreamAutoAttack
    upstream.__version__ = "0.1"
    monkeypatch.setitem(sys.modules, "autoattack", upstream)
    metrics = evaluate_model(trained.model, trained.images, trained.labels,
                             attacks=("autoattack",), eps=EPS, step_size=STEP, n_autoattack=5,
                             batch_size=8, seed=2, device="cpu", progress=False)
    assert calls["init"] == {"norm": "Linf", "eps": EPS, "seed": 2, "version": "standard",
                             "device": "cpu", "verbose": False}
    assert calls["run"] == {"n": 5, "bs": 8, "return_labels": True}
    assert metrics["autoattack_package"] == "autoattack 0.1"


# --------------------------------------------------------------------------- files and the stage


def test_write_metrics_replaces_the_file_atomically(tmp_path):
    path = tmp_path / "metrics" / "part.json"
    write_metrics(path, {"natural": 0.5})
    write_metrics(path, {"natural": 0.75, "n_natural": 4})
    assert path.read_text() == '{\n  "natural": 0.75,\n  "n_natural": 4\n}\n'
    assert [entry.name for entry in path.parent.iterdir()] == ["part.json"]


def _stage_workspace(trained, root: Path, model: str = "cnn_small") -> Path:
    (root / "models").mkdir(parents=True)
    (root / "data" / "prepared").mkdir(parents=True)
    shutil.copy(trained.path, root / "models" / "part-0.safetensors")
    shutil.copy(trained.data, root / "data" / "prepared" / "test.safetensors")
    (root / "params.yaml").write_text(
        f"dataset: synthetic\nmodel: {model}\neps: 8/255\neps_low: 7/255\ndevice: cpu\n"
        "train:\n  step_size: 1/255\n"
        "eval:\n  attacks: [natural, fgsm, pgd20]\n  n: 24\n  steps: 3\n  batch_size: 32\n")
    return root


def test_evaluate_stage_writes_the_metrics_json(trained, tmp_path, monkeypatch):
    import json

    from stages.evaluate import app

    monkeypatch.chdir(_stage_workspace(trained, tmp_path))
    result = CliRunner().invoke(app, ["part", "--seed", "0"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(Path("metrics/part-0.json").read_text())
    assert metrics["attacks"] == ["natural", "fgsm", "pgd20"]
    assert metrics["eps"] == pytest.approx(EPS)
    assert metrics["step_size"] == pytest.approx(1 / 255)  # the training step, as params say
    assert metrics["steps"] == 3
    for key in ("natural", "fgsm", "pgd20", "worst_case"):
        assert 0.0 <= metrics[key] <= 1.0
        assert metrics[f"n_{key}"] == 24
    for key in ("model", "method", "eps_low", "epoch"):
        assert key in metrics
    assert sorted(entry.name for entry in Path("metrics").iterdir()) == [
        "part-0.json", "part-0.outcomes.safetensors"]


@pytest.mark.parametrize(("variant", "model", "message"), [
    ("fancy", "cnn_small", "unknown variant 'fancy'; use one of baseline, part"),
    ("random_mask", "cnn_small", "variant 'random_mask' is not in `controls` (empty)"),
    ("part", "resnet18", "'model' expected 'resnet18', found 'cnn_small'"),
])
def test_evaluate_stage_refuses_bad_runs_with_exit_code_2(trained, tmp_path, monkeypatch,
                                                         variant, model, message):
    from stages.evaluate import app

    monkeypatch.chdir(_stage_workspace(trained, tmp_path, model=model))
    result = CliRunner().invoke(app, [variant])
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())
    assert not Path("metrics").exists()
