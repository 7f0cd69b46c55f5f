"""The real `dvc repro` end to end on a tiny config, in a temporary git repository.

Checks every declared output and the metrics keys, that a second repro does nothing, that
`dvc exp run -S` reruns exactly the stages that read the changed param, that bad params stop the
pipeline with their message, and that a stage killed halfway leaves no half-written output.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from _project import kill_once_written, ran, run
from conftest import copy_project

from part.data.prepared import load_prepared
from part.models.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow
METRIC_KEYS = {"natural", "fgsm", "pgd20", "cw20", "mma", "pgd_unimportant", "autoattack",
               "n_natural", "n_fgsm", "n_pgd20", "n_cw20", "n_mma", "n_pgd_unimportant",
               "n_autoattack"}
_run, _ran = run, ran


@pytest.fixture
def project(tiny_project) -> Path:
    """The shared tiny repro's copy (conftest.py): every test leaves it as it found it."""
    return tiny_project


def _reset(repo: Path) -> None:
    _run(["git", "checkout", "--", "."], repo)
    _run(["dvc", "checkout", "-q"], repo, check=False)


def test_every_declared_output_exists_with_the_metrics_keys(project):
    for path in ("data/prepared/train.safetensors", "data/prepared/val.safetensors",
                 "data/prepared/test.safetensors", "traces/baseline-0.safetensors",
                 "traces/part-0.safetensors",
                 "models/burnin-0.safetensors", "masks/burnin-0.safetensors",
                 "masks/gallery-0.png", "models/baseline-0.safetensors",
                 "models/part-0.safetensors", "models/baseline-0.best.safetensors",
                 "models/part-0.best.safetensors", "dvclive/burnin-0/metrics.json",
                 "dvclive/baseline-0/plots/metrics/val_pgd.tsv",
                 "dvclive/part-0/plots/metrics/important_fraction.tsv",
                 "metrics/baseline-0.json", "metrics/part-0.json",
                 "metrics/baseline-0.outcomes.safetensors", "metrics/part-0.outcomes.safetensors",
                 "budgets/baseline.json", "budgets/part.json", "reports/study.json",
                 "reports/results.md", "reports/accuracy_robustness.png", "dvc.lock"):
        assert (project / path).is_file(), path
    for variant in ("baseline-0", "part-0"):
        metrics = json.loads((project / f"metrics/{variant}.json").read_text())
        assert METRIC_KEYS <= metrics.keys()
        assert all(0.0 <= metrics[key] <= 1.0 for key in METRIC_KEYS if not key.startswith("n_"))
        assert metrics["n_natural"] == 60 and metrics["n_autoattack"] == 6
        # the prepared 60 are a subset of the data set's whole test split, whose size it records
        assert metrics["n_test"] == 60 < metrics["n_test_set"]
        # wall times vary run to run: they live beside the metrics, so `dvc metrics diff`
        # shows only results that changed
        assert not [key for key in metrics if key.startswith("seconds")]
        timings = json.loads((project / f"timings/evaluate-{variant}.json").read_text())
        assert set(timings) == {f"seconds_{key}" for key in metrics["attacks"]}
    report = (project / "reports/results.md").read_text()
    for row in ("Natural", "FGSM", "PGD-20", "CW-inf-20", "MMA (paper)", "PGD-20, unimportant",
                "AutoAttack", "Worst case"):
        assert f"| {row} |" in report
    assert (project / "reports/accuracy_robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_second_repro_does_nothing(project):
    again = _run(["dvc", "repro"], project)
    assert _ran(again) == set()
    assert _run(["dvc", "status"], project).stdout.strip().endswith("up to date.")


def test_part_cli_evaluate_in_the_project_reproduces_its_metrics_file(project):
    from part.evaluation.rescore import rescore_adversarial

    out, adversarial = project / "cli-part-0.json", project / "adv.safetensors"
    _run(["python", "-m", "part.cli", "evaluate", "models/part-0.safetensors", "--json",
          out.name, "--save-adv", adversarial.name], project)
    try:
        assert out.read_bytes() == (project / "metrics/part-0.json").read_bytes()
        # the saved examples, scored again, give every figure of the table
        metrics = json.loads(out.read_text())
        model, _ = load_checkpoint(project / "models/part-0.safetensors")
        rescored = rescore_adversarial(model, adversarial, batch_size=60)
        assert rescored["attacks"] == metrics["attacks"]
        for key in [*metrics["attacks"], "worst_case", "worst_case_autoattack"]:
            assert (rescored[key], rescored[f"n_{key}"]) == (metrics[key], metrics[f"n_{key}"])
        assert metrics["autoattack_version"] == "standard" and metrics["autoattack_seed"] == 0
        assert {"part", "torch", "torchvision", "numpy", "autoattack"} <= metrics["versions"].keys()
    finally:
        out.unlink()
        adversarial.unlink(missing_ok=True)


def test_dvc_exp_show_reads_the_training_logs(project):
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], project).stdout)
    metrics = next(entry for entry in shown if entry["rev"] == "workspace")["data"]["metrics"]
    for name, last_epoch in (("burnin-0", 1), ("baseline-0", 2), ("part-0", 2)):
        logged = metrics[f"dvclive/{name}/metrics.json"]["data"]
        assert logged["step"] == last_epoch and 0 <= logged["val_pgd"] <= 1
    assert "important_fraction" in metrics["dvclive/part-0/metrics.json"]["data"]


def test_eval_checkpoint_best_reruns_only_the_evaluations_and_records_the_epoch(project):
    result = _run(["dvc", "exp", "run", "-S", "eval.checkpoint=best"], project)
    assert _ran(result) == {"evaluate@baseline-0", "evaluate@part-0", "report"}
    for variant in ("baseline-0", "part-0"):
        metrics = json.loads((project / f"metrics/{variant}.json").read_text())
        _, meta = load_checkpoint(project / f"models/{variant}.best.safetensors")
        assert metrics["checkpoint"] == f"models/{variant}.best.safetensors"
        assert metrics["epoch"] == meta["epoch"] and "val_pgd" in metrics["selected_by"]
        # chosen on the validation split held out of the training set, never on the test set
        assert metrics["selected_on"] == meta["selected_on"] == "validation"
        assert metrics["monitor_split"] == "validation" and metrics["train_examples"] == 200
    _reset(project)


def test_outcome_files_hold_the_metrics_example_by_example(project):
    from safetensors.torch import load_file

    for variant in ("baseline-0", "part-0"):
        metrics = json.loads((project / f"metrics/{variant}.json").read_text())
        outcomes = load_file(str(project / f"metrics/{variant}.outcomes.safetensors"))
        assert set(outcomes) == {*metrics["attacks"], "worst_case", "worst_case_autoattack"}
        # the headline worst case covers every test example; AutoAttack's its own 6
        assert (metrics["n_worst_case"], metrics["n_worst_case_autoattack"]) == (60, 6)
        for key, correct in outcomes.items():
            assert correct.dtype == torch.bool and correct.shape == (metrics[f"n_{key}"],)
            assert int(correct.sum()) / correct.numel() == pytest.approx(metrics[key], abs=1e-12)
        # natural accuracy recomputed from the model and the test set, example by example
        model, _ = load_checkpoint(project / f"models/{variant}.safetensors")
        test = load_prepared(project / "data/prepared/test.safetensors")
        with torch.no_grad():
            clean = model.eval()(test.images.float() / 255).argmax(1) == test.labels
        assert torch.equal(outcomes["natural"], clean)


def test_eps_low_reruns_only_the_part_branch(experiment_alone):
    result = experiment_alone("6/255").result  # test_sweep compares a queued run with it
    assert _ran(result) == {"budgets", "train@part-0", "evaluate@part-0", "report"}


def test_another_test_subset_retrains_nothing_while_a_validation_split_is_held_out(project,
                                                                                 tmp_path):
    """The training stages read the validation split, not the test file: a new test subset
    changes what prepare writes and what the evaluations (and the report, which records the
    data params) read, and no training stage's deps."""
    project = copy_project(project, tmp_path / "repo")
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["data"]["val_subset"] > 0
    params["data"]["test_subset"] = 50
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _ran(_run(["dvc", "repro", "--single-item", "prepare"], project)) == {"prepare"}
    status = _run(["dvc", "status"], project).stdout
    changed = {line.rstrip(":") for line in status.splitlines()
               if line and not line[0].isspace() and line.endswith(":")}
    assert changed == {"evaluate@baseline-0", "evaluate@part-0", "report"}, status


def _changed_stages(project: Path, **overrides) -> set[str]:
    """The stages `dvc status` lists once params.yaml takes `overrides`: those whose own deps,
    params or outputs differ from dvc.lock (a new stage has no entry there)."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params.update(overrides)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = _run(["dvc", "status"], project).stdout
    finally:
        _reset(project)
    return {line.rstrip(":") for line in status.splitlines()
            if line and not line[0].isspace() and line.endswith(":")}


def test_cam_changes_the_cam_branch_and_evaluations_never_prepare_burnin_or_baseline(project):
    # pgd_unimportant attacks every model where its own CAM points away: the baseline's
    # evaluation reads `cam` too, its training does not. DVC's status names the stages whose
    # own params changed; train@part-0 follows them through budgets/part.json, which records
    # the CAM settings (test_eps_low_reruns_only_the_part_branch runs that chain end to end).
    assert _changed_stages(project, cam="layercam") == {
        "masks@0", "budgets", "evaluate@part-0", "evaluate@baseline-0", "report"}


def test_adding_a_seed_or_a_control_changes_only_its_own_stages(project):
    """Seed 0's stages stay as dvc.lock has them; the new seed's are new, and the report reads
    the seeds. (The tiny study, tests/test_study_pipeline.py, runs several seeds and both
    controls through the report; here DVC's own status says what would run.)"""
    assert _changed_stages(project, seeds=[0, 1]) == {
        "burnin@1", "masks@1", "train@baseline-1", "train@part-1", "evaluate@baseline-1",
        "evaluate@part-1", "report"}
    # a control follows PART's trace: its stages come after PART's, which stay as they are
    assert _changed_stages(project, controls=["random_mask"]) == {
        "train_control@random_mask-0", "evaluate_control@random_mask-0", "report"}


def test_eps_given_as_a_fraction_reaches_the_models(experiment_alone):
    """`-S eps_low=6/255` on the command line: the trained model's metrics record 6/255."""
    metrics = json.loads(experiment_alone("6/255").part_metrics)
    assert metrics["eps_low"] == pytest.approx(6 / 255)
    assert metrics["eps"] == metrics["train_eps"] == pytest.approx(8 / 255)


def test_the_frontier_draws_each_experiments_result_once_from_dvc_exp_show(project,
                                                                          experiment_alone):
    """Real `dvc exp show --json` output: the commit and the experiments the tests above ran."""
    experiment_alone("6/255")
    result = _run(["python", "-m", "part.cli", "frontier"], project)
    assert (project / "reports/frontier.png").read_bytes()[:4] == b"\x89PNG", result.stdout
    rows = [line.split(" | ") for line in
            (project / "reports/frontier.md").read_text().splitlines()
            if line.startswith("| ") and "---" not in line][1:]
    budgets = {(row[1], row[2], row[3], row[4]) for row in rows}
    assert ("part", "8/255", "6/255", "0") in budgets
    # The baseline at eps 8/255 is the same result in every eps_low or cam experiment: one row.
    assert sum(row[1:5] == ["baseline", "8/255", "8/255", "0"] for row in rows) == 1
    committed = json.loads(_run(["git", "show", "HEAD:metrics/part-0.json"], project).stdout)
    natural = f"{100 * committed['natural']:.2f} ["
    assert any(row[1:5] == ["part", "8/255", "7/255", "0"] and row[5].startswith(natural)
               for row in rows)
    assert all(row[-1].strip(" |").startswith(str(committed["n_natural"])) for row in rows)


def test_invalid_params_stop_at_the_first_stage_with_the_message(project):
    result = _run(["dvc", "exp", "run", "-S", "eps_low=9/255"], project, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "eps_low" in output and "must not exceed eps" in output
    assert "Traceback" not in output
    assert _ran(result) == {"budgets"}
    _reset(project)


def test_a_stage_killed_halfway_leaves_no_output_and_the_next_repro_recovers(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["epochs"] = 3  # two epochs after the burn-in: room to die after the first one
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    state = project / "runs" / "baseline-0.safetensors"
    state.unlink(missing_ok=True)
    kill_once_written(project, ["dvc", "repro", "train@baseline-0"], state)
    leftovers = [p.name for p in (project / "models").iterdir() if p.name.endswith(".tmp")]
    assert not (project / "models/baseline-0.safetensors").exists()
    assert leftovers == []

    recovered = _run(["dvc", "repro", "train@baseline-0"], project)
    assert "resuming after epoch 2" in recovered.stdout + recovered.stderr
    assert (project / "models/baseline-0.safetensors").is_file()
    logged = (project / "dvclive/baseline-0/plots/metrics/val_pgd.tsv").read_text()
    assert [line.split("\t")[0] for line in logged.splitlines()[1:]] == ["2", "3"]
    _reset(project)
