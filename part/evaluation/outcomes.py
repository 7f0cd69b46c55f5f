"""What an evaluation leaves behind: the metrics, with the per-example outcomes they were
counted from and, where asked for, the attacks' inputs; the worst case over attacks; and the
files they are written to (metrics JSON, outcomes and adversarial examples as canonical
safetensors, wall times beside the metrics).

The metrics file's bytes depend only on the code, params and data: wall times go to a file of
their own. The outcomes let paired statistics (McNemar) run without any attack running again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from part.attacks.suite import AUTOATTACK, EvaluationError
from part.io.atomic import WriteError, atomic_write_text
from part.io.tensorfile import write_safetensors

OUTCOMES_FORMAT = "part-outcomes/1"
ADVERSARIAL_FORMAT = "part-adversarial/1"
CORRECT_SUFFIX = ".correct"  # <key>.correct beside <key> in an adversarial-examples file


class Metrics(dict):
    """The metrics dict, carrying the per-example outcomes it was counted from: `outcomes[key]`
    is a bool tensor [n_<key>] on the CPU, true where the model classifies that test example
    (the first n_<key> of the set, in order) correctly under that attack; also `worst_case`.
    Where asked for, `adversarial[key]` holds the attack's inputs themselves (float32 in [0, 1],
    [n_<key>, C, H, W], on the CPU) and `labels` the true labels of the first examples."""

    def __init__(self, *args: Any, outcomes: Mapping[str, Tensor] | None = None,
                 adversarial: Mapping[str, Tensor] | None = None,
                 labels: Tensor | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, Tensor] = dict(outcomes or {})
        self.adversarial: dict[str, Tensor] = dict(adversarial or {})
        self.labels = labels

    def carried_by(self, results: Mapping[str, Any]) -> Metrics:
        """`results` as Metrics holding this one's tensors."""
        return Metrics(results, outcomes=self.outcomes, adversarial=self.adversarial,
                       labels=self.labels)


WORST_CASE = "worst_case"
WORST_CASE_AUTOATTACK = "worst_case_autoattack"


def worst_case_correctness(correct: Mapping[str, Tensor]) -> Tensor:
    """An example is robust only if it survives every attack given; over the first min(n)
    examples (every attack ran on those)."""
    if not correct:
        raise EvaluationError("worst case needs at least one attack's results")
    count = min(vector.shape[0] for vector in correct.values())
    vectors = [vector[:count] for vector in correct.values()]
    return torch.stack(vectors).all(dim=0)


def worst_cases(correct: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """`worst_case` over every attack but AutoAttack (every example they all ran on; AutoAttack
    alone where it is the only attack) and, where AutoAttack ran beside others,
    `worst_case_autoattack` over every attack on the AutoAttack subset."""
    others = {name: vector for name, vector in correct.items() if name != AUTOATTACK}
    found = {WORST_CASE: worst_case_correctness(others or correct)}
    if others and AUTOATTACK in correct:
        found[WORST_CASE_AUTOATTACK] = worst_case_correctness(correct)
    return found


TIMING_PREFIX = "seconds_"


def split_timings(metrics: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(results, timings): wall times differ from run to run, so they stay out of the metrics
    file, whose bytes must depend only on the code, params and data."""
    results = {key: value for key, value in metrics.items() if not key.startswith(TIMING_PREFIX)}
    timings = {key: value for key, value in metrics.items() if key.startswith(TIMING_PREFIX)}
    return results, timings


def _write_json(path: str | Path, content: Mapping[str, Any], what: str) -> Path:
    path = Path(path)
    try:
        atomic_write_text(path, json.dumps(dict(content), indent=2) + "\n")
    except WriteError:  # already names the file and the fix
        raise
    except OSError as error:
        raise EvaluationError(f"cannot write {what} to {path}: {error}; check the directory "
                              "exists or can be created, and its permissions") from None
    return path


def write_metrics(path: str | Path, metrics: Mapping[str, Any]) -> Path:
    """The results as indented JSON, atomically; the timings are left out (see split_timings)."""
    return _write_json(path, split_timings(metrics)[0], "metrics")


def write_outcomes(path: str | Path, metrics: Metrics) -> Path:
    """metrics.outcomes as bool tensors named by their metrics keys, canonically and atomically,
    so that paired statistics (McNemar) never need the attacks to run again."""
    missing = [key for key in metrics.outcomes if f"n_{key}" not in metrics]
    if missing or not metrics.outcomes:
        raise EvaluationError(f"no per-example outcomes for {missing or 'any attack'}; these "
                              "metrics did not come from evaluate_model")
    meta = {"format": OUTCOMES_FORMAT, "checkpoint": str(metrics.get("checkpoint", "")),
            "data": str(metrics.get("data", "")),
            "order": "the first n_<key> examples of the test set, in order"}
    try:
        return write_safetensors(path, {key: vector.contiguous()
                                        for key, vector in metrics.outcomes.items()}, meta)
    except WriteError:  # already names the file and the fix
        raise
    except OSError as error:
        raise EvaluationError(f"cannot write outcomes to {path}: {error}; check the directory "
                              "and its permissions") from None


def write_adversarial(path: str | Path, metrics: Metrics) -> Path:
    """Every attack's inputs as float32 tensors named by their keys (natural: the clean images),
    each beside its outcomes (<key>.correct), and the true labels, canonically and atomically:
    a result can be inspected, and re-scored with rescore_adversarial, without running any
    attack again."""
    if not metrics.adversarial or metrics.labels is None:
        raise EvaluationError("these metrics kept no adversarial examples; evaluate with "
                              "keep_adversarial=True (part-cli evaluate --save-adv FILE)")
    tensors = {"labels": metrics.labels.contiguous()}
    for key, x_adv in metrics.adversarial.items():
        tensors[key] = x_adv.float().contiguous()
        tensors[key + CORRECT_SUFFIX] = metrics.outcomes[key].contiguous()
    meta = {"format": ADVERSARIAL_FORMAT, "checkpoint": str(metrics.get("checkpoint", "")),
            "data": str(metrics.get("data", "")), "eps": repr(float(metrics["eps"])),
            "order": "the first n_<key> examples of the test set, in order; labels are theirs"}
    try:
        return write_safetensors(path, tensors, meta)
    except WriteError:  # already names the file and the fix
        raise
    except OSError as error:
        raise EvaluationError(f"cannot write adversarial examples to {path}: {error}; check the "
                              "directory and its permissions") from None


def write_timings(path: str | Path, metrics: Mapping[str, Any]) -> Path:
    """The seconds each attack took, as plain JSON beside (not among) the metrics."""
    return _write_json(path, split_timings(metrics)[1], "timings")
