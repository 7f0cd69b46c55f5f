"""`part.evaluate`, a documented import path (docs/api.md); the code lives in
part.evaluation.evaluate."""

from part.evaluation.evaluate import evaluate_checkpoint, evaluate_model

__all__ = ["evaluate_checkpoint", "evaluate_model"]
