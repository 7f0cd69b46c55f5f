"""CAM masks per second: batched `cam` + `importance_mask("official")` vs the paper code's loop.

The paper code (bench/paper_cam_reference.py) runs one image at a time: a forward and a full
backward through the model, then PIL resize, matplotlib colormap and a numpy z-score on the
host. Ours is one batched forward, a backward that stops at the CAM layer, and tensor ops on
the device. Both end in the per-element budget map. Prints one JSON object.

    python3 bench/bench_cam.py [--batch 128] [--repeats 5] [--paper-repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper_cam_reference import paper_weighted_eps  # noqa: E402

from part.importance.activation_maps import cam  # noqa: E402
from part.importance.mask_rules import budget_map, importance_mask  # noqa: E402
from part.models import build_model  # noqa: E402

EPS, EPS_LOW = 8 / 255, 7 / 255


def _seconds(run: Callable[[], torch.Tensor], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    del result
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of ours")
    parser.add_argument("--paper-repeats", type=int, default=3, help="timed runs of the paper's")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--method", default="gradcam")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build_model("resnet18", num_classes=10, in_channels=3).to(device).eval()
    images = torch.rand(args.batch, 3, 32, 32, device=device)

    def batched() -> torch.Tensor:
        masks = importance_mask(cam(model, images, args.method), (3, 32, 32), "official")
        return budget_map(masks, EPS, EPS_LOW)

    def paper() -> torch.Tensor:
        with np.errstate(invalid="ignore", divide="ignore"):  # constant CAMs: the paper's 0/0
            return paper_weighted_eps(model, images, EPS, EPS_LOW, args.method, model.cam_layer)

    ours_budget, paper_budget = batched(), paper()  # warm-up, and a check that both agree
    agreement = (ours_budget == paper_budget).float().mean().item()
    model.zero_grad(set_to_none=True)

    ours_times = [_seconds(batched, device) for _ in range(args.repeats)]
    paper_times = [_seconds(paper, device) for _ in range(args.paper_repeats)]
    ours_rate = args.batch / statistics.median(ours_times)
    paper_rate = args.batch / statistics.median(paper_times)
    print(
        json.dumps(
            {
                "device": str(device) if device.type != "cpu" else f"cpu ({args.threads} threads)",
                "model": "resnet18",
                "method": args.method,
                "image": [3, 32, 32],
                "batch": args.batch,
                "batched_masks_per_s": round(ours_rate, 1),
                "paper_masks_per_s": round(paper_rate, 1),
                "speedup": round(ours_rate / paper_rate, 2),
                "batched_seconds": [round(t, 3) for t in ours_times],
                "paper_seconds": [round(t, 3) for t in paper_times],
                "budget_elements_equal": round(agreement, 6),
                "load_average_1min": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
