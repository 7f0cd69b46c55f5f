"""Evaluation throughput: examples per second for each attack, as `part.evaluation.evaluate`
runs them.

The model is `resnet18` (the paper's CIFAR-10 model) on 3x32x32 inputs with RANDOM, untrained
weights, so the figures measure compute, not robustness. The labels are the model's own clean
predictions, so every example starts correctly classified and no attack gets a free pass.

AutoAttack's cost depends on the model, not only on n: it attacks only the examples that survive
its previous sub-attacks, and each survivor costs APGD-T and FAB-T (9 target classes x 100
iterations each) and Square (5000 queries). An untrained resnet18's prediction hardly depends on
its input, so many examples survive; `autoattack.survivors` reports how many did, and seconds
per survivor is the figure to extrapolate with. Keep --n-autoattack small on a CPU.

Prints one JSON object. Usage: python bench/bench_evaluate.py [--n 32] [--n-autoattack 4] ...
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from part.attacks.suite import ATTACKS, parse_attacks
from part.evaluation.evaluate import evaluate_model
from part.models import build_model
from part.runtime.device import resolve_device

EPS = 8 / 255
STEP = 2 / 255


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--n", type=int, default=32, help="examples for each of our attacks")
    parser.add_argument("--n-autoattack", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    model = build_model(args.model, num_classes=10, in_channels=3).to(device).eval()
    count = max(args.n, args.n_autoattack)
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, device=device)
    with torch.no_grad():  # also warms up the kernels before anything is timed
        labels = model(images.float() / 255).argmax(dim=1)
    started = time.perf_counter()
    metrics = evaluate_model(model, images, labels, attacks=parse_attacks(args.attacks),
                             eps=EPS, step_size=STEP, steps=args.steps, n=args.n,
                             n_autoattack=args.n_autoattack, batch_size=args.batch_size,
                             seed=args.seed, device=device, progress=False)
    total = time.perf_counter() - started
    per_attack = {
        name: {"n": metrics[f"n_{name}"], "seconds": metrics[f"seconds_{name}"],
               "examples_per_second": round(metrics[f"n_{name}"] / metrics[f"seconds_{name}"], 2),
               "accuracy": metrics[name]}
        for name in metrics["attacks"]}
    if "autoattack" in per_attack:
        per_attack["autoattack"]["survivors"] = round(metrics["autoattack"]
                                                      * metrics["n_autoattack"])
    report = {
        "benchmark": "evaluate",
        "model": args.model,
        "weights": "random (untrained); labels = the model's clean predictions",
        "input": [3, 32, 32],
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "steps": args.steps,
        "eps": EPS,
        "step_size": STEP,
        "attacks": per_attack,
        "total_seconds": round(total, 2),
        "note": "autoattack: its time grows with the examples that survive (see survivors)",
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
