"""`part-cli`: one-off commands for people (the pipeline stages live in stages/)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from part import __version__
from part.attacks.suite import ATTACKS, AUTOATTACK_VERSIONS
from part.importance.activation_maps import CAM_METHODS
from part.importance.mask_rules import MASK_RULES
from part.io.paths import FRONTIER_PLOT, FRONTIER_TABLE, TEST_SET
from part.ui import guarded, stdout

DEFAULT_TEST_SET = str(TEST_SET)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Pixel-reweighted Adversarial Training (PART): inspect the setup, evaluate checkpoints.",
)


def _print_version(value: bool) -> None:
    if value:
        stdout.print(f"part {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Pixel-reweighted Adversarial Training (PART)."""


@app.command()
@guarded
def info() -> None:
    """Versions, the compute device, and where each data set is found."""
    import torch
    import torchvision

    from part.data.sources import SOURCES, find_source_root

    table = Table(title="part", show_header=False)
    table.add_row("part", __version__)
    table.add_row("python", platform.python_version())
    table.add_row("torch", torch.__version__)
    table.add_row("torchvision", torchvision.__version__)
    cuda = torch.cuda.is_available()
    # Described, not resolved: resolving `auto` on a machine of several GPUs claims one.
    gpus = torch.cuda.device_count() if cuda else 0
    table.add_row("device (auto)", "cpu" if not gpus else "cuda" if gpus == 1 else
                  f"a free one of {gpus} GPUs, claimed per process (part/runtime/gpu_claim.py)")
    table.add_row("CUDA", f"{torch.version.cuda} ({torch.cuda.get_device_name(0)})" if cuda
                  else f"not available (build: {torch.version.cuda or 'cpu'})")
    for source in SOURCES:
        if source == "synthetic":
            table.add_row("data: synthetic", "generated on demand")
            continue
        root = find_source_root(source)
        table.add_row(f"data: {source}", str(root) if root else
                      "not found locally (downloaded on first use where a network exists)")
    stdout.print(table)



def _attack_label(key: str, metrics: dict[str, Any]) -> str:
    steps = metrics.get("steps", 20)
    return {"natural": "natural", "fgsm": "FGSM", "pgd20": f"PGD-{steps}",
            "cw20": f"CW-inf-{steps}", "mma": f"MMA-{steps} (paper, top-3)",
            "mma_max": f"MMA-max-{steps} (top-3)",
            "pgd_unimportant": f"PGD-{steps} on CAM-unimportant pixels",
            "autoattack": f"AutoAttack ({metrics.get('autoattack_version', 'standard')})",
            "worst_case": "worst case (all but AutoAttack)",
            "worst_case_autoattack": "worst case with AutoAttack"}.get(key, key)


def metrics_table(metrics: dict[str, Any], title: str) -> Table:
    """Accuracy (%) with its Wilson 95% interval, examples and seconds per attack, and the worst
    case."""
    from part.evaluation.statistics import wilson_interval

    table = Table(title=title)
    table.add_column("attack")
    table.add_column("accuracy", justify="right")
    table.add_column("95% interval", justify="right")
    table.add_column("n", justify="right")
    table.add_column("seconds", justify="right")
    worst = [key for key in ("worst_case", "worst_case_autoattack") if key in metrics]
    for key in [*metrics["attacks"], *worst]:
        seconds = metrics.get(f"seconds_{key}")
        n = int(metrics[f"n_{key}"])
        low, high = wilson_interval(round(metrics[key] * n), n)
        table.add_row(_attack_label(key, metrics), f"{100 * metrics[key]:.2f}%",
                      f"[{100 * low:.2f}, {100 * high:.2f}]", str(n),
                      "" if seconds is None else f"{seconds:.1f}")
    return table


_FROM_PARAMS = "default: params.yaml's, else"


@app.command()
@guarded
def evaluate(
    checkpoint: Path = typer.Argument(
        ..., help="a part checkpoint, or with --arch plain weights (.safetensors or .pt)"),
    data: Path = typer.Option(DEFAULT_TEST_SET, "--data", help="a prepared test split"),
    dataset: str | None = typer.Option(
        None, "--dataset", help="instead of --data: this data set's test split, from its source"),
    data_root: str | None = typer.Option(None, "--data-root",
                                         help="where --dataset's files are (default: searched)"),
    arch: str | None = typer.Option(
        None, "--arch", help="plain weights: a registered model or an import path module:factory"),
    num_classes: int | None = typer.Option(None, "--num-classes", min=1,
                                           help="with --arch (default: the data's)"),
    in_channels: int | None = typer.Option(None, "--in-channels", min=1,
                                           help="with --arch (default: the data's)"),
    mean: str | None = typer.Option(None, "--mean", help="with --arch, a model that expects "
                                    "normalised inputs: per-channel means, e.g. 0.49,0.48,0.45"),
    std: str | None = typer.Option(None, "--std", help="with --mean: per-channel std devs"),
    cam_layer: str | None = typer.Option(None, "--cam-layer",
                                         help="with --arch: the submodule CAM reads"),
    attacks: str | None = typer.Option(
        None, "--attacks",
        help=f"comma-separated, from: {', '.join(ATTACKS)} ({_FROM_PARAMS} all)"),
    n: int | None = typer.Option(
        None, "--n", min=1,
        help=f"test examples per attack, AutoAttack aside ({_FROM_PARAMS} all)"),
    n_autoattack: int | None = typer.Option(
        None, "--n-autoattack", min=1,
        help=f"test examples for AutoAttack, the first ones ({_FROM_PARAMS} 1000)"),
    cam: str | None = typer.Option(
        None, "--cam", help=f"pgd_unimportant's CAM: {', '.join(CAM_METHODS)} ({_FROM_PARAMS} "
                            "gradcam)"),
    mask_rule: str | None = typer.Option(
        None, "--mask-rule", help=f"pgd_unimportant's mask rule: {', '.join(MASK_RULES)} "
                                  f"({_FROM_PARAMS} official)"),
    quantile: float | None = typer.Option(
        None, "--quantile", min=0.0, max=1.0,
        help=f"the kept fraction under --mask-rule quantile ({_FROM_PARAMS} 0.5)"),
    eps: str | None = typer.Option(
        None, "--eps", help=f"L-inf budget such as 8/255 ({_FROM_PARAMS} the checkpoint's)"),
    step_size: str | None = typer.Option(
        None, "--step-size", help=f"PGD / CW / MMA step ({_FROM_PARAMS} eps/4)"),
    steps: int | None = typer.Option(
        None, "--steps", min=0, help=f"PGD / CW / MMA iterations ({_FROM_PARAMS} 20)"),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1,
                                          help=f"({_FROM_PARAMS} 256)"),
    device: str | None = typer.Option(None, "--device",
                                      help=f"auto, cpu, cuda or cuda:N ({_FROM_PARAMS} auto)"),
    seed: int | None = typer.Option(
        None, "--seed", min=0, help=f"seeds every attack, AutoAttack included ({_FROM_PARAMS} 0)"),
    aa_version: str | None = typer.Option(
        None, "--aa-version",
        help=f"AutoAttack's version: {', '.join(AUTOATTACK_VERSIONS)} ({_FROM_PARAMS} standard)"),
    save_adv: Path | None = typer.Option(
        None, "--save-adv",
        help="also write every attack's adversarial examples (float32) and per-example outcomes "
             "to this .safetensors file, to inspect or re-score (part-cli rescore)"),
    params_path: Path = typer.Option(
        Path("params.yaml"), "--params",
        help="the project's params file: where it exists, its evaluation settings are the "
             "defaults, so evaluating a pipeline checkpoint reproduces its metrics file"),
    json_path: Path | None = typer.Option(None, "--json", help="also write the metrics here"),
) -> None:
    """Robust accuracy of a checkpoint under natural, FGSM, PGD-20, CW-inf-20, MMA, PGD on the
    CAM-unimportant pixels, AutoAttack: each with its n and Wilson 95% interval. With --arch,
    plain weights (a state_dict) of that architecture; --dataset reads a data set's test split
    from its source instead of a prepared file."""
    _evaluate_command(dict(locals()))


def _evaluate_command(options: dict[str, Any]) -> None:
    from part.attacks.suite import parse_attacks
    from part.evaluation.evaluate import evaluate_checkpoint
    from part.evaluation.frontier import budget_text
    from part.evaluation.outcomes import write_adversarial, write_metrics
    from part.params import parse_budget

    given = {"attacks": None if options["attacks"] is None else parse_attacks(options["attacks"]),
             "eps": None if options["eps"] is None else parse_budget(options["eps"], "--eps"),
             "step_size": (None if options["step_size"] is None
                           else parse_budget(options["step_size"], "--step-size")),
             **{key: options[key] for key in ("n", "n_autoattack", "steps", "batch_size", "seed",
                                              "device")},
             "autoattack_version": options["aa_version"]}  # a typo in --attacks fails first
    settings = _evaluation_settings(given, options["params_path"], {
        "method": options["cam"], "rule": options["mask_rule"], "quantile": options["quantile"]})
    keep = options["save_adv"] is not None
    if options["arch"] is None and options["checkpoint"].suffix == ".pt":
        from part.evaluation.weights import WeightsError

        raise WeightsError(f"{options['checkpoint']}: a .pt file holds plain weights; give their "
                           "architecture with --arch (and --dataset or --data for the test split)")
    if options["arch"] is None and options["dataset"] is None:
        metrics = evaluate_checkpoint(options["checkpoint"], options["data"], **settings,
                                      keep_adversarial=keep)
    else:  # plain weights: no training eps or step to default to
        metrics = _evaluate_plain(options, {**settings, "eps": given["eps"],
                                      "step_size": given["step_size"], "keep_adversarial": keep})
    if options["json_path"] is not None:
        write_metrics(options["json_path"], metrics)
    if keep:
        write_adversarial(options["save_adv"], metrics)
    made = (f"{metrics['method']}, epoch {metrics['epoch']}" if options["arch"] is None
            else "architecture from the command line")
    params_path = options["params_path"]
    title = (f"{options['checkpoint'].name}: {metrics['model']} {made}, eps "
             f"{budget_text(metrics['eps'])}, step {budget_text(metrics['step_size'])} "
             "(settings not given: "
             f"{params_path if params_path.is_file() else 'built-in defaults'})")
    stdout.print(metrics_table(metrics, title))


def _channel_values(option: str, text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(value) for value in text.split(",")]
    except ValueError:
        from part.evaluation.weights import WeightsError

        raise WeightsError(f"{option}: give comma-separated numbers such as 0.5,0.5,0.5, got "
                           f"{text!r}") from None


def _evaluate_plain(options: dict[str, Any], settings: dict[str, Any]) -> Any:
    """`evaluate` on plain weights (--arch), on a prepared file or --dataset's test split."""
    from part.evaluation.weights import WeightsError, evaluate_weights, read_test_split

    if options["arch"] is None:
        raise WeightsError("--dataset evaluates plain weights: give their architecture with "
                           "--arch (a part checkpoint is evaluated on a prepared --data file)")
    images, labels, source = read_test_split(None if options["dataset"] else options["data"],
                                             options["dataset"], options["data_root"])
    return evaluate_weights(options["checkpoint"], options["arch"], images, labels, source,
                            num_classes=options["num_classes"], in_channels=options["in_channels"],
                            cam_layer=options["cam_layer"],
                            mean=_channel_values("--mean", options["mean"]),
                            std=_channel_values("--std", options["std"]), **settings)


def _evaluation_settings(given: dict[str, Any], params_path: Path,
                         mask_options: dict[str, Any]) -> dict[str, Any]:
    """evaluate_checkpoint's keywords: the options given, else the project's evaluation settings
    (where params_path exists), else evaluate_checkpoint's defaults."""
    import dataclasses

    from part.attacks.suite import DEFAULT_MASK_SETTINGS, EvaluationError
    from part.evaluation.evaluate import settings_from_params
    from part.params import load_params

    settings = settings_from_params(load_params(params_path)) if params_path.is_file() else {}
    settings.update({key: value for key, value in given.items() if value is not None})
    masks = dataclasses.replace(settings.get("masks", DEFAULT_MASK_SETTINGS), **{
        field: value for field, value in mask_options.items() if value is not None})
    for option, value, allowed in (("--cam", masks.method, CAM_METHODS),
                                   ("--mask-rule", masks.rule, MASK_RULES)):
        if value not in allowed:
            raise EvaluationError(f"{option} {value!r} is not one of {', '.join(allowed)}")
    return {**settings, "masks": masks}


@app.command()
@guarded
def rescore(
    checkpoint: Path = typer.Argument(..., help="a part checkpoint (.safetensors)"),
    adversarial: Path = typer.Argument(..., help="a file of part-cli evaluate --save-adv"),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N"),
) -> None:
    """Accuracy of a checkpoint on saved adversarial examples, with n and Wilson 95% intervals:
    the evaluated checkpoint gives its evaluation's figures; another one, their transfer."""
    from part.evaluation.rescore import rescore_adversarial
    from part.models.checkpoint import load_checkpoint
    from part.runtime.device import resolve_device

    target = resolve_device(device)
    model, _ = load_checkpoint(checkpoint, device=target)
    results = rescore_adversarial(model, adversarial, batch_size=batch_size, device=target)
    stdout.print(metrics_table(results, f"{checkpoint.name} on {adversarial.name}"))


@app.command()
@guarded
def frontier(
    metrics: list[Path] | None = typer.Argument(
        None, help="metrics JSON files (metrics/<variant>-<seed>.json); default: every "
                   "experiment of `dvc exp show --json` in this project"),
    exp_json: Path | None = typer.Option(None, "--exp-json",
                                         help="a saved `dvc exp show --json` output to read"),
    plot: Path = typer.Option(FRONTIER_PLOT, "--plot", help="the plot to write"),
    table: Path = typer.Option(FRONTIER_TABLE, "--table",
                               help="the table to write (markdown)"),
) -> None:
    """The eps_low frontier: natural against PGD-20 and AutoAttack accuracy, one point per
    experiment (PART across eps_low, uniform AT across eps), with n and 95% intervals."""
    import json

    from part.evaluation.frontier import (
        FrontierError,
        dvc_exp_show,
        points_from_experiments,
        points_from_files,
        write_frontier,
    )

    if metrics:
        points = points_from_files(metrics)
    elif exp_json is not None:
        try:
            points = points_from_experiments(json.loads(exp_json.read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise FrontierError(f"{exp_json}: not readable as `dvc exp show --json` output "
                                f"({error}); save it with dvc exp show --json > FILE") from None
    else:
        points = points_from_experiments(dvc_exp_show())
    write_frontier(points, plot, table)
    stdout.print(f"{len(points)} points -> {plot}, {table}")
    stdout.print(table.read_text(), markup=False, highlight=False, soft_wrap=True)


@app.command()
@guarded
def export(
    checkpoint: Path = typer.Argument(..., help="a part checkpoint (.safetensors)"),
    out_dir: Path = typer.Argument(..., help="the directory to write <name>.pt and <name>.json"),
    export_format: str = typer.Option("robustbench", "--format", help="robustbench"),
    metrics: Path | None = typer.Option(
        None, "--metrics", help="the checkpoint's metrics JSON (clean and AutoAttack accuracy)"),
    name: str | None = typer.Option(None, "--name",
                                    help="the model's name (default: the checkpoint's stem)"),
) -> None:
    """Export a checkpoint for RobustBench: a plain state_dict that torch.load(weights_only=True)
    reads, and a model_info JSON filled from its metadata and metrics."""
    from part.evaluation.export import EXPORT_FORMATS, ExportError, export_robustbench

    if export_format not in EXPORT_FORMATS:
        raise ExportError(f"--format {export_format!r} is not one of {', '.join(EXPORT_FORMATS)}")
    weights, info = export_robustbench(checkpoint, out_dir, name=name, metrics=metrics)
    stdout.print(f"wrote {weights} and {info}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
