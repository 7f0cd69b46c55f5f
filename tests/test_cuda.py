"""The GPU paths against the CPU, run where a CUDA GPU is (scripts/device_check.sh runs them with
`pytest -m cuda`); skipped without one.

Tolerances. The CPU and CUDA compute the same float32 arithmetic in other orders (other
kernels, other reductions), so values agree to a few float32 ulps per layer, not bit for bit;
CUDA runs here in strict IEEE fp32 (numerics("fp32")) unless a test says otherwise. PGD follows
the sign of the input gradient: a last-bit difference flips the step of an element whose
gradient is near zero, so adversarial examples are compared by the share of elements that agree,
and losses, which average over a batch, loosely.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _budget_batch import budget_batch
from safetensors.torch import load_file

from part.attacks.linf import pgd
from part.importance.activation_maps import cam
from part.importance.mask_rules import importance_mask
from part.models import build_model
from part.runtime.precision import numerics, precision_context
from part.training.methods import METHODS, TrainingAttack, training_loss

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
CUDA = torch.device("cuda")
EPS, EPS_LOW = 8 / 255, 4 / 255


@pytest.fixture(scope="module")
def batch():
    x, y, budget = budget_batch(16, 0, EPS, EPS_LOW)
    return x, y, budget.contiguous()


@pytest.fixture(scope="module", params=["cnn_small", "resnet18"])
def models(request):
    torch.manual_seed(0)
    model = build_model(request.param, num_classes=10, in_channels=3).eval()
    return model, copy.deepcopy(model).to(CUDA)


def _exactly_within(x_adv, x, budget) -> bool:
    return bool(((x_adv.double() - x.double()).abs() <= budget.double()).all()
                and ((x_adv - x).abs() <= budget).all() and ((x_adv >= 0) & (x_adv <= 1)).all())


def test_pgd_on_cuda_agrees_with_the_cpu(models, batch):
    cpu_model, cuda_model = models
    x, y, budget = batch
    # From x itself (no random start: the CPU's and CUDA's generators differ).
    ours = pgd(cpu_model, x, y, budget, 2 / 255, 10, random_start=False)
    with numerics("fp32"):
        theirs = pgd(cuda_model, x.to(CUDA), y.to(CUDA), budget.to(CUDA), 2 / 255, 10,
                     random_start=False)
    assert _exactly_within(theirs, x.to(CUDA), budget.to(CUDA))
    # Flipped sign steps move an element by up to 2 steps; most elements never see one.
    assert (theirs.cpu() == ours).float().mean() >= 0.95


def test_cams_and_the_official_rules_masks_on_cuda_agree_with_the_cpu(models, batch):
    cpu_model, cuda_model = models
    x, _, _ = batch
    ours = cam(cpu_model, x)
    with numerics("fp32"):
        theirs = cam(cuda_model, x.to(CUDA))
    # Maps in [0, 1] per image, after a max-normalisation: float32 rounding, a few ulps per layer.
    torch.testing.assert_close(theirs.cpu(), ours, rtol=1e-4, atol=1e-4)
    masks_cpu = importance_mask(ours, (3, 32, 32), rule="official")
    masks_cuda = importance_mask(theirs, (3, 32, 32), rule="official")
    # The official rule thresholds the jet colours of the upsampled map: a pixel whose value
    # sits on a colour bin's edge may land in the other bin. Measured agreement is printed.
    agreement = (masks_cuda.cpu() == masks_cpu).float().mean().item()
    print(f"official-rule mask agreement CUDA vs CPU: {agreement:.4%}")
    assert agreement >= 0.995


@pytest.mark.parametrize("method", METHODS)
def test_one_training_step_of_each_method_on_cuda_agrees_with_the_cpu(models, batch, method,
                                                                      monkeypatch):
    import part.attacks.linf

    cpu_model, cuda_model = models
    x, y, budget = batch
    # Every attack starts at x itself (the CPU's and CUDA's generators draw other starts), and
    # steps by 1e-6: what remains to compare is the arithmetic of the forward and backward
    # passes. Loss: float32 sums in other orders, ~1e-6 relative; gradient: also max pooling's
    # choice between near-equal values, measured up to 5e-3 relative between CPU kernels.
    monkeypatch.setattr(part.attacks.linf, "_start_point",
                        lambda x_in, *args, **kwargs: x_in.clone())
    attack = TrainingAttack(step_size=1e-6, steps=2, eps=EPS)

    def step(model, device):
        model = copy.deepcopy(model).train()
        with numerics("fp32"):
            result = training_loss(method, model, x.to(device), y.to(device), budget.to(device),
                                   attack, beta=6.0)
            result.loss.backward()
        return result.loss.item(), torch.cat([p.grad.flatten().cpu() for p in model.parameters()])

    loss_cpu, grad_cpu = step(cpu_model, CPU)
    loss_cuda, grad_cuda = step(cuda_model, CUDA)
    assert loss_cuda == pytest.approx(loss_cpu, rel=1e-4)
    assert ((grad_cuda - grad_cpu).norm() / grad_cpu.norm()).item() <= 2e-2


def test_the_budget_holds_exactly_under_bf16_autocast_and_channels_last_on_cuda(models, batch):
    _, cuda_model = models
    x, y, budget = batch
    model = copy.deepcopy(cuda_model).to(memory_format=torch.channels_last)
    x_cuda = x.to(CUDA).contiguous(memory_format=torch.channels_last)
    budget_cuda = budget.to(CUDA)
    with precision_context("bf16", CUDA):
        for start in ("budget", "paper"):
            x_adv = pgd(model, x_cuda, y.to(CUDA), budget_cuda, 2 / 255, 10, start=start,
                        start_eps=EPS)
            assert _exactly_within(x_adv, x_cuda, budget_cuda)
        for method in METHODS:
            attack = TrainingAttack(step_size=2 / 255, steps=3, eps=EPS)
            result = training_loss(method, model.train(), x_cuda, y.to(CUDA), budget_cuda,
                                   attack, beta=6.0)
            assert torch.isfinite(result.loss)
    model.eval()


@pytest.mark.skipif(torch.cuda.device_count() < 2,
                    reason="needs 2 CUDA GPUs: SyncBatchNorm synchronises only across processes")
def test_sync_batch_norm_over_two_gpus_is_batch_norm_over_the_whole_batch(tmp_path):
    out = tmp_path / "sync_batch_norm.safetensors"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc-per-node", "2", str(ROOT / "tests" / "_sync_batch_norm.py"),
                             str(out)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    tensors = load_file(out)
    torch.testing.assert_close(tensors["synced"], tensors["whole"], rtol=1e-4, atol=1e-4)
    running = [name[len("plain."):] for name in tensors if name.startswith("plain.")]
    assert running
    for name in running:
        torch.testing.assert_close(tensors[f"synced.{name}"], tensors[f"plain.{name}"],
                                   rtol=1e-4, atol=1e-5, msg=name)


def test_device_auto_takes_one_of_the_visible_gpus():
    from part.runtime.device import resolve_device

    device = resolve_device("auto")
    assert device.type == "cuda"
    count = torch.cuda.device_count()
    assert device.index is None if count == 1 else 0 <= device.index < count


RERUN = r"""
import hashlib, sys, tempfile
from pathlib import Path
import torch
from part.data.sources import load_source
from part.params import params_from_dict
from part.training.spec import TrainData
from part.training.train import RunSpec, train_run

device = torch.device("cuda")
train, test = load_source("synthetic", "train"), load_source("synthetic", "test")
data = TrainData(train.images[:256].to(device), train.labels[:256].to(device),
                 test.images[:64].to(device), test.labels[:64].to(device), "synthetic", 10)
params = params_from_dict({"dataset": "synthetic", "model": "resnet18", "eps": "8/255",
                           "eps_low": "7/255", "epochs": 2, "burn_in_epochs": 1, "seeds": [0],
                           "train": {"batch_size": 64, "steps": 3, "step_size": "2/255",
                                     "monitor_subset": 64, "monitor_steps": 2,
                                     "precision": sys.argv[1], "deterministic": True}})
digests = []
for run in range(2):
    root = Path(tempfile.mkdtemp())
    train_run(params, RunSpec("burnin-0", 1, 1), data, device, out_path=root / "m.safetensors",
              log_dir=root / "log", state_dir=root / "state", show_progress=False)
    digests.append(hashlib.sha256((root / "m.safetensors").read_bytes()).hexdigest())
print(" ".join(digests))
"""


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_a_deterministic_rerun_on_cuda_writes_the_same_bytes(precision):
    # In its own process: deterministic mode is process-wide, and the cuBLAS workspace must be
    # fixed before the process's first matmul.
    result = subprocess.run([sys.executable, "-c", RERUN, precision], cwd=ROOT,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = result.stdout.strip().splitlines()[-1].split()
    assert first == second
