"""Evaluation: what a trained model withstands, and the reports built from it.

- `evaluate`: every attack of the suite on a checkpoint (`evaluate_checkpoint`, `evaluate_model`),
  the per-example outcomes and the worst case.
- `outcomes`: the metrics with their per-example outcomes, the worst case, and their files.
- `rescore`: stored adversarial examples scored on a model, no attack run again.
- `statistics`: paired statistics over seeds (differences, intervals, McNemar), from SciPy.
- `report`: reports/ (the tables and the plot of the default run).
- `frontier`: natural against robust accuracy over an eps_low sweep.
- `export`: a checkpoint in RobustBench's layout.
- `weights`: plain weights this project did not write (a state_dict, the architecture given),
  normalised inputs wrapped so the attacks stay in pixel space.
"""

from part.evaluation.evaluate import evaluate_checkpoint, evaluate_model

__all__ = ["evaluate_checkpoint", "evaluate_model"]
