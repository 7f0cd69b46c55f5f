"""A training run's per-epoch log, written through DVCLive so that `dvc exp show`, `dvc plots` and
DVC's VS Code extension read it, during the run and after.

Each run logs into its own directory, dvclive/<run>/: `metrics.json` (the latest epoch) and one
`plots/metrics/<name>.tsv` per quantity (a row per epoch, step = the global epoch number).
The log is rebuilt from the run's own history whenever a run starts or resumes: the history
travels in the resume state (written atomically with the weights), so a resumed run's log holds
every epoch exactly once and is byte for byte the log of an uninterrupted run, whatever happened
to the files between. Wall times are not logged here: a declared output that held them would
differ on every run (they go to timings/).

DVCLive writes into a staging directory beside the resume state; after each epoch its files
replace the log's together through the atomic writer (none unless all are written), so a full
disk mid-epoch leaves the previous epoch's log whole and ends in one message naming the file.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from part.errors import PartError
from part.io.atomic import atomic_paths, write_error

# The per-epoch quantities, in the order they are logged. important_fraction exists only for
# the CAM variants; an epoch without one logs none.
LOGGED = ("lr", "train_loss", "train_adv_acc", "val_natural", "val_pgd", "important_fraction",
          "mean_budget")
STEP = "step"  # DVCLive's name for the x axis: here, the global epoch number


@contextlib.contextmanager
def _dvclive_writes(staging: Path) -> Iterator[None]:
    """DVCLive's own writes: an OSError (a full disk) becomes one WriteError naming the file."""
    try:
        yield
    except PartError:
        raise
    except OSError as error:
        raise write_error(Path(error.filename or staging), error) from None


def _loggable(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class TrainingLog:
    """DVCLive for one run. Never saves a DVC experiment nor writes a dvc.yaml of its own:
    dvc.yaml declares the log's files, and `dvc exp run` records them."""

    def __init__(self, directory: Path, earlier_epochs: Iterable[Mapping[str, Any]] = (),
                 staging: Path | None = None):
        # DVCLive reports at INFO ("Logging to experiment ...") on every start: keep it quiet.
        logging.getLogger("dvclive").setLevel(os.environ.get("DVCLIVE_LOGLEVEL", "WARNING"))
        from dvclive import Live

        self.directory = Path(directory)
        self.staging = (Path(staging) if staging is not None
                        else self.directory.with_name(f".{self.directory.name}.staging"))
        with _dvclive_writes(self.staging):
            shutil.rmtree(self.staging, ignore_errors=True)
            self._live = Live(dir=str(self.staging), resume=False, report=None,
                              save_dvc_exp=False, dvcyaml=False)
            earlier = [self._log(row) for row in earlier_epochs]
        if earlier:  # a fresh run leaves an earlier log in place until its first epoch
            self._publish()

    def _log(self, row: Mapping[str, Any]) -> None:
        self._live.step = int(row["epoch"])
        for name in LOGGED:
            if _loggable(row.get(name)):
                self._live.log_metric(name, row[name])
        self._live.make_summary()

    def _publish(self) -> None:
        """The staged log replaces the log's files, all of them or none; files of an earlier
        log that the staged one lacks go."""
        staged = {path.relative_to(self.staging): path.read_bytes()
                  for path in sorted(self.staging.rglob("*")) if path.is_file()}
        with atomic_paths([self.directory / name for name in staged]) as temps:
            for temp, content in zip(temps, staged.values(), strict=True):
                temp.write_bytes(content)
        if self.directory.is_dir():
            for path in sorted(self.directory.rglob("*"), reverse=True):
                if path.is_file() and path.relative_to(self.directory) not in staged:
                    path.unlink()

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        """One epoch's row (a history row: "epoch" and the LOGGED keys)."""
        with _dvclive_writes(self.staging):
            self._log(row)
        self._publish()

    def close(self) -> None:
        with _dvclive_writes(self.staging):
            self._live.end()
        self._publish()
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> TrainingLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
