"""N ranks train the one-process run. On a model without batch statistics (cnn_small_gn) in
float64, two epochs each of AT, PART (a budget map), TRADES and MART through the pipeline's own
epoch loop and monitor (tests/_ddp_float64.py) give, under 2 and 3 gloo processes, the one process's
weights, train loss and monitor accuracies to 1e-12. In float64 a different order of float sums
(a step's gradient summed over the ranks' shares, not over the whole batch) changes weights by
~1e-16; any random number drawn otherwise than the one process draws it (a start, an
augmentation) or a share counted twice moves them by more than 1e-6. Every rank runs as many
train-mode forwards as the others, a rank with an empty share of the last batch included.

In float32 the same runs differ by rounding that SGD amplifies: after four epochs of the tiny
stage runs, the weights of 1 and 2 processes differed by up to 2e-3 of a tensor's largest weight
(the float64 run of the same code agrees to 1e-16), which is why this test runs in float64."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _project import shipped_params_with
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tests" / "_ddp_float64.py"
CASES = ("at", "part", "trades", "mart")
PARAMS = {"eps": "8/255", "eps_low": "2/255", "seeds": [0],
          "train": {"batch_size": 19, "steps": 3, "step_size": "2/255", "monitor_steps": 2,
                    "augment": "crop_flip", "random_start": "budget"}}


def _params_file(folder: Path) -> Path:
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(shipped_params_with(PARAMS), sort_keys=False))
    return path


def _trained(folder: Path, nproc: int) -> dict[str, dict]:
    out = folder / f"nproc{nproc}"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc-per-node", str(nproc), str(HARNESS),
                             str(_params_file(folder)), str(out)],
                            capture_output=True, text=True, env=env, cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return {case: load_file(out / f"{case}.safetensors") for case in CASES}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[int, dict[str, dict]]:
    folder = tmp_path_factory.mktemp("ddp-float64")
    return {nproc: _trained(folder, nproc) for nproc in (1, 2, 3)}


@pytest.mark.parametrize("nproc", [2, 3])
@pytest.mark.parametrize("case", CASES)
def test_n_ranks_give_the_one_process_weights_and_logs(trained, case, nproc):
    one, many = trained[1][case], trained[nproc][case]
    assert one.keys() == many.keys()
    differences = {key: float((one[key] - many[key]).abs().max()) for key in one
                   if key != "forwards"}
    assert max(differences.values()) <= 1e-12, differences
    # the run learnt something: the check is not between two untouched initialisations
    logged = one["logged"]
    assert logged[1, 0] < logged[0, 0]


def test_every_rank_runs_as_many_training_forwards_as_the_others(trained):
    """Under SyncBatchNorm (CUDA) every train-mode forward all-gathers statistics: a rank that
    ran fewer would leave the others waiting in a collective at the epoch's last batch, in which
    1 or 2 ranks have no share (210 images in batches of 19)."""
    for nproc in (2, 3):
        for case in CASES:
            forwards = trained[nproc][case]["forwards"]
            assert forwards.shape == (nproc,) and forwards.min() > 0, (nproc, case, forwards)
            assert bool((forwards == forwards[0]).all()), (nproc, case, forwards.tolist())


def test_a_last_batch_smaller_than_the_ranks_logs_no_nan(trained):
    """210 images in batches of 19: the last batch's one image leaves 1 or 2 ranks no share."""
    for nproc in (2, 3):
        for case in CASES:
            assert bool(trained[nproc][case]["logged"].isfinite().all()), (nproc, case)
