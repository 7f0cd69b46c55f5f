"""Export a checkpoint where other tools can read it: RobustBench's layout, a plain state_dict
(`<name>.pt`, which `torch.load(..., weights_only=True)` reads into the matching architecture
built by `part.models.build_model`) and a `<name>.json` in the style of RobustBench's
`model_info` entries, filled from the checkpoint's metadata and, when given, its metrics.

The models take unnormalised images in [0, 1], as RobustBench feeds them.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from part.errors import PartError
from part.io.atomic import WriteError, atomic_paths

EXPORT_FORMATS = ("robustbench",)
THREAT_MODEL = "Linf"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ExportError(PartError):
    """An export asked for with inputs it cannot honour."""


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.2f}"


def _check_metrics_fit(metrics: Mapping[str, Any], checkpoint: Path, where: str) -> None:
    """The metrics must be those of this very checkpoint: its sha256, which the evaluation
    recorded, and nothing weaker (model, method and epoch agree between seeds and variants)."""
    from part.io.hashing import file_sha256

    recorded = metrics.get("checkpoint_sha256")
    if recorded is None:
        raise ExportError(f"{where} records no checkpoint_sha256, so nothing says which weights "
                          f"it scored; evaluate {checkpoint} again (dvc repro, or part-cli "
                          "evaluate --json) and export with that file")
    if recorded != file_sha256(checkpoint):
        raise ExportError(f"{where} scored another checkpoint (sha256 {recorded[:12]}…), not "
                          f"{checkpoint}; give the metrics file written for this checkpoint "
                          "(metrics/<variant>-<seed>.json of the same run)")


def _check_metrics_complete(metrics: Mapping[str, Any], meta: Mapping[str, Any],
                            where: str) -> None:
    """An entry states what it was measured on: the metrics must record the whole test set's
    size and the AutoAttack version, and the training eps they carry must be the checkpoint's."""
    needed = ("n_test_set", "autoattack_version") if "autoattack" in metrics else ("n_test_set",)
    missing = [key for key in needed if metrics.get(key) is None]
    if missing:
        raise ExportError(f"{where} records no {' or '.join(missing)}, so the entry could not say "
                          "what it was measured on; evaluate the checkpoint again with this "
                          "version (dvc repro, or part-cli evaluate --json) and export with that "
                          "file")
    train_eps = metrics.get("train_eps")
    if train_eps is not None and meta.get("eps") is not None and not math.isclose(
            float(train_eps), float(meta["eps"]), rel_tol=0, abs_tol=1e-12):
        raise ExportError(f"{where} says its checkpoint trained at eps {train_eps}, but the "
                          f"checkpoint records {meta['eps']}; give the metrics file written for "
                          "this checkpoint")


def _footnote(meta: Mapping[str, Any], metrics: Mapping[str, Any]) -> str | None:
    """What a reader must know beside the figures, as RobustBench's own footnotes say it:
    accuracies on fewer than the data set's whole test set, an AutoAttack other than the
    standard one, an evaluation eps other than the training eps, a test-selected epoch."""
    from part.evaluation.frontier import budget_text

    notes = []
    whole = metrics.get("n_test_set")
    for accuracy, name, first in (("natural", "clean accuracy", ""),
                                  ("autoattack", "AutoAttack accuracy", "the first ")):
        count = metrics.get(f"n_{accuracy}")
        if metrics.get(accuracy) is not None and whole is not None and count is not None \
                and count < whole:
            notes.append(f"{name} on {first}{count} of the {whole} test examples")
    version = metrics.get("autoattack_version")
    if metrics.get("autoattack") is not None and version not in (None, "standard"):
        notes.append(f"AutoAttack version {version!r}, not the standard one")
    if "eps" in metrics and meta.get("eps") is not None and not math.isclose(
            float(metrics["eps"]), float(meta["eps"]), rel_tol=0, abs_tol=1e-12):
        notes.append(f"evaluated at eps {budget_text(float(metrics['eps']))}, trained at "
                     f"{budget_text(float(meta['eps']))}")
    if meta.get("selected_on") == "test":
        notes.append("the epoch was selected on test examples (data.val_subset: 0)")
    return "; ".join(notes) + "." if notes else None


def model_info(meta: Mapping[str, Any], name: str,
               metrics: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """RobustBench `model_info` fields (accuracies as percent strings, as its files write them)
    plus what RobustBench leaves to the author and this project knows: the method, eps_low,
    the number of examples behind each accuracy."""
    from part.evaluation.frontier import budget_text

    metrics = metrics or {}
    # The accuracies were measured at the evaluation's eps, which need not be the training eps.
    eps = float(metrics["eps"]) if "eps" in metrics else float(meta["eps"])
    return {
        "name": name,
        "link": "",
        "authors": "",
        "venue": "",
        "additional_data": False,
        "number_forward_passes": 1,
        "dataset": meta["dataset"],
        "architecture": meta["model"],
        "threat_model": THREAT_MODEL,
        "eps": budget_text(eps),
        "clean_acc": _percent(metrics.get("natural")),
        "n_clean": metrics.get("n_natural"),
        "autoattack_acc": _percent(metrics.get("autoattack")),
        "n_autoattack": metrics.get("n_autoattack"),
        "autoattack_package": metrics.get("autoattack_package"),
        "autoattack_version": metrics.get("autoattack_version"),
        "n_test_set": metrics.get("n_test_set"),
        "reported": "",
        "footnote": _footnote(meta, metrics),
        "method": meta.get("method"),
        "variant": meta.get("variant"),
        "train_eps": budget_text(float(meta["eps"])),
        "eps_low": meta.get("eps_low"),
        "epoch": meta.get("epoch"),
        "train_examples": meta.get("train_examples"),
        "selected_on": meta.get("selected_on"),
        "part_version": meta.get("part_version"),
    }


def export_robustbench(checkpoint: str | Path, out_dir: str | Path, *, name: str | None = None,
                       metrics: str | Path | None = None) -> tuple[Path, Path]:
    """Write out_dir/<name>.pt (the weights as a plain state_dict) and out_dir/<name>.json
    (model_info), together or not at all; returns their paths. `name` defaults to the
    checkpoint's file name without its suffix."""
    from part.models.checkpoint import load_checkpoint

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    name = name or checkpoint.stem
    if not _NAME.match(name):
        raise ExportError(f"--name {name!r}: use letters, digits, '_', '-' and '.' only "
                          "(RobustBench names look like Author2024Title)")
    model, meta = load_checkpoint(checkpoint, device="cpu")
    found: Mapping[str, Any] | None = None
    if metrics is not None:
        try:
            found = json.loads(Path(metrics).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ExportError(f"{metrics}: not a readable metrics file ({error}); give the JSON "
                              "the evaluate stage or `part-cli evaluate --json` writes") from None
        if not isinstance(found, dict):
            raise ExportError(f"{metrics}: not a metrics object; give the JSON the evaluate stage "
                              "writes")
        _check_metrics_fit(found, checkpoint, str(metrics))
        _check_metrics_complete(found, meta, str(metrics))
    state = {key: tensor.detach().cpu().contiguous() for key, tensor in
             model.state_dict().items()}
    weights = io.BytesIO()
    torch.save(state, weights)
    info = json.dumps(model_info(meta, name, found), indent=2) + "\n"
    targets = [out_dir / f"{name}.pt", out_dir / f"{name}.json"]
    try:
        with atomic_paths(targets) as (weights_tmp, info_tmp):
            weights_tmp.write_bytes(weights.getvalue())
            info_tmp.write_text(info)
    except WriteError:  # already names the file and the fix
        raise
    except OSError as error:
        raise ExportError(f"cannot write into {out_dir}: {error}; check that it can be created "
                          "and its permissions") from None
    return targets[0], targets[1]
