"""Data-parallel step time on this machine: a PGD-10 AT epoch of
part.training.train.train_epoch under
torchrun with 1 and with N processes (gloo on the CPU, NCCL on GPUs), for one or more checkouts
of this project (to compare the code before and after a change in one run).

    python bench/bench_ddp.py                                  # this checkout, nproc 1 and 2
    python bench/bench_ddp.py --checkout /tmp/old --checkout . --out bench/results/ddp.json

Each configuration runs in a fresh torchrun: one warm-up epoch, then `--repeats` timed epochs;
rank 0 reports the median epoch time (after a barrier, so the slowest rank counts). The
checkouts and nproc values are interleaved round by round (`--rounds`), so a drift of the
machine's speed hits all of them alike; the JSON gives each configuration's median over rounds,
each checkout's speed-up (nproc 1 time / nproc N time) and the ratio of checkouts' times. On a
2-core CPU, 2 processes get one core each (torchrun sets OMP_NUM_THREADS=1) where 1 process
uses both, so the speed-up says what sharding costs or gains there, not what it does on GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WORKER = r'''
import inspect, json, statistics, sys, time
import torch
import torch.distributed as dist
from part.runtime.distributed import join, leave, world_from_env
from part.models import build_model
from part.params import load_params
from part.training.spec import TrainData
from part.training.train import train_epoch
from part.importance.variants import epoch_budget

n_images, repeats, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
world = world_from_env()
device = torch.device("cpu")
join(world, device)
params = load_params(sys.argv[4]).for_seed(0)
generator = torch.Generator().manual_seed(0)
images = (torch.rand(n_images, 1, 28, 28, generator=generator) * 255).to(torch.uint8)
labels = torch.randint(0, 10, (n_images,), generator=generator)
data = TrainData(images, labels, images[:8], labels[:8], "fashion-mnist", 10)
torch.manual_seed(0)
model = build_model(params.model, 10, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
budget = epoch_budget("baseline", None, params.eps, params.eps)
extra = {}
if "trainer" in inspect.signature(train_epoch).parameters:  # DDP code: the wrapper trains
    from part.runtime.distributed import data_parallel
    extra["trainer"] = data_parallel(model, world, device)
times = []
for epoch in range(repeats + 1):
    if world.size > 1:
        dist.barrier()
    started = time.perf_counter()
    train_epoch(model, optimizer, data, budget, params, epoch + 1, device, world=world, **extra)
    if world.size > 1:
        dist.barrier()
    times.append(time.perf_counter() - started)
if world.rank == 0:
    json.dump({"epoch_seconds": times[1:]}, open(out, "w"))
leave(world)
'''


def _params_file(folder: Path, checkout: Path) -> Path:
    import yaml

    params = yaml.safe_load((checkout / "params.yaml").read_text())
    params["model"] = "cnn_small"
    params["train"].update({"batch_size": 128, "steps": 10, "step_size": 2 / 255})
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _run(checkout: Path, nproc: int, n_images: int, repeats: int, folder: Path) -> float:
    worker = folder / "worker.py"
    worker.write_text(WORKER)
    out = folder / f"out-{nproc}.json"
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    env.pop("OMP_NUM_THREADS", None)  # torchrun's own choice (1 per process when nproc > 1)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc-per-node", str(nproc), str(worker), str(n_images), str(repeats),
                    str(out), str(_params_file(folder, checkout))],
                   check=True, env=env, cwd=folder, capture_output=True)
    return statistics.median(json.loads(out.read_text())["epoch_seconds"])


def _commit(checkout: Path) -> str:
    result = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", action="append", type=Path,
                        help="a checkout of this project (repeatable; default: this one)")
    parser.add_argument("--nproc", type=int, default=2, help="the N beside 1 (default 2)")
    parser.add_argument("--n", type=int, default=512, help="training images per epoch")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--out", type=Path, help="write the JSON here too")
    args = parser.parse_args()
    checkouts = [path.resolve() for path in (args.checkout or [Path(__file__).parents[1]])]
    seconds: dict[str, dict[int, list[float]]] = {str(c): {1: [], args.nproc: []}
                                                  for c in checkouts}
    for _ in range(args.rounds):
        for checkout in checkouts:
            for nproc in (1, args.nproc):
                with tempfile.TemporaryDirectory() as folder:
                    seconds[str(checkout)][nproc].append(
                        _run(checkout, nproc, args.n, args.repeats, Path(folder)))
    report = {"what": f"median seconds of a PGD-10 AT epoch of {args.n} images (cnn_small, "
                      "batch 128, 1x28x28) under torchrun on the CPU (gloo)",
              "cpus": os.cpu_count(), "rounds": args.rounds, "repeats": args.repeats,
              "checkouts": {}}
    for checkout in checkouts:
        runs = seconds[str(checkout)]
        medians = {nproc: statistics.median(times) for nproc, times in runs.items()}
        report["checkouts"][str(checkout)] = {
            "commit": _commit(checkout),
            "ddp": _has_ddp(checkout),
            "epoch_seconds": {str(nproc): times for nproc, times in runs.items()},
            "median_seconds": {str(nproc): round(value, 4) for nproc, value in medians.items()},
            f"speedup_nproc1_over_nproc{args.nproc}": round(medians[1] / medians[args.nproc], 4)}
    if len(checkouts) == 2:
        first, second = (report["checkouts"][str(c)]["median_seconds"] for c in checkouts)
        report["second_over_first"] = {nproc: round(second[nproc] / first[nproc], 4)
                                       for nproc in first}
    text = json.dumps(report, indent=2) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


def _has_ddp(checkout: Path) -> bool:
    """Whether the checkout's train_epoch trains through DistributedDataParallel (`trainer`),
    read in a subprocess so that this process imports no checkout."""
    code = ("import inspect, part.training.train as t; "
            "print('trainer' in inspect.signature(t.train_epoch).parameters)")
    # run in the checkout: `python -c` puts the working directory first on sys.path
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(checkout)}, check=True,
                            cwd=checkout)
    return result.stdout.strip() == "True"


if __name__ == "__main__":
    main()
