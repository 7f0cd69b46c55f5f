"""A training run's per-epoch log, written through DVCLive so that `dvc exp show`, `dvc plots` and
DVC's VS Code extension read it, during the run and after.

Each run logs into its own directory, dvclive/<run>/: `metrics.json` (the latest epoch) and one
`plots/metrics/<name>.tsv` per quantity (a row per epoch, step = the global epoch number).
The log is rebuilt from the run's own history whenever a run starts or resumes: the history
travels in the resume state (written atomically with the weights), so a resumed run's log holds
every epoch exactly once and is byte for byte the log of an uninterrupted run, whatever happened
to the files between. Wall times are not logged here: a declared output that held them would
differ on every run (they go to timings/).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# The per-epoch quantities, in the order they are logged. important_fraction exists only for
# the CAM variants; an epoch without one logs none.
LOGGED = ("lr", "train_loss", "train_adv_acc", "val_natural", "val_pgd", "important_fraction",
          "mean_budget")
STEP = "step"  # DVCLive's name for the x axis: here, the global epoch number


def _loggable(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class TrainingLog:
    """DVCLive for one run. Never saves a DVC experiment nor writes a dvc.yaml of its own:
    dvc.yaml declares the log's files, and `dvc exp run` records them."""

    def __init__(self, directory: Path, earlier_epochs: Iterable[Mapping[str, Any]] = ()):
        # DVCLive reports at INFO ("Logging to experiment ...") on every start: keep it quiet.
        logging.getLogger("dvclive").setLevel(os.environ.get("DVCLIVE_LOGLEVEL", "WARNING"))
        from dvclive import Live

        self.directory = Path(directory)
        self._live = Live(dir=str(self.directory), resume=False, report=None,
                          save_dvc_exp=False, dvcyaml=False)
        for row in earlier_epochs:
            self.log_epoch(row)

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        """One epoch's row (a history row: "epoch" and the LOGGED keys)."""
        self._live.step = int(row["epoch"])
        for name in LOGGED:
            if _loggable(row.get(name)):
                self._live.log_metric(name, row[name])
        self._live.make_summary()

    def close(self) -> None:
        self._live.end()

    def __enter__(self) -> TrainingLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
