"""Scoring stored adversarial examples (a `part-cli evaluate --save-adv` file) on a model, with no
attack run again: the evaluated checkpoint gives back its own figures; another model, how well
the examples transfer to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from part.attacks.suite import AttackSettings, EvaluationError, adversary, parse_attacks
from part.evaluation.evaluate import batched_correctness, model_device
from part.evaluation.outcomes import ADVERSARIAL_FORMAT, CORRECT_SUFFIX, worst_cases
from part.models.eval_mode import eval_mode
from part.runtime.precision import precision_context

# Scoring stored inputs runs the `natural` adversary, which reads none of these settings.
DEFAULT_SCORING = AttackSettings(eps=0.0, step_size=0.0, steps=0, batch_size=1, seed=0)


def rescore_adversarial(model: nn.Module, path: str | Path, *, batch_size: int = 256,
                        device: str | torch.device | None = None) -> dict[str, Any]:
    """The accuracy of `model` on the adversarial examples of a write_adversarial file, in full
    float32 with the model in eval mode, as evaluate_model counts it: {key: accuracy, n_<key>}
    per attack, worst_case, n_worst_case and attacks. The evaluated checkpoint gives the
    figures it was evaluated with; another model, how well the examples transfer to it."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            if (file.metadata() or {}).get("format") != ADVERSARIAL_FORMAT:
                raise EvaluationError(f"{path} is not an adversarial-examples file "
                                      "(write it with part-cli evaluate --save-adv)")
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except (OSError, SafetensorError) as error:
        raise EvaluationError(f"cannot read {path}: {error}; write it again with part-cli "
                              "evaluate --save-adv") from None
    device = torch.device(device) if device is not None else model_device(model, tensors["labels"])
    labels = tensors.pop("labels").to(device)
    names = parse_attacks([key for key in tensors if not key.endswith(CORRECT_SUFFIX)])
    correct = {}
    with eval_mode(model, freeze=True), precision_context("fp32", device):
        for name in names:
            x_adv = tensors[name].to(device)
            correct[name] = batched_correctness(model, x_adv, labels[:x_adv.shape[0]],
                                                 adversary("natural", DEFAULT_SCORING),
                                                 batch_size, lambda _: None)
    results: dict[str, Any] = {"attacks": list(names)}
    for name, vector in {**correct, **worst_cases(correct)}.items():
        results[name] = float(vector.sum()) / vector.shape[0]
        results[f"n_{name}"] = int(vector.shape[0])
    return results
