"""Where and how a computation runs: device, precision, processes, GPUs.

- `device`: the `device` param to a torch device, and CUDA determinism.
- `precision`: fp32 / tf32 / bf16, and what each means on the CPU.
- `distributed`: data parallelism over torchrun's ranks (gloo on the CPU, NCCL on GPUs).
- `random_draws`: the random numbers of one global batch, identical on every rank.
- `launch`: the stages' command (`python -m part.launch`): one process in-process, N through
  torchrun; `gpu_claim`: one GPU per process on a machine with several.
- `progress`: the live display of training and evaluation, without host syncs.
- `device_check`, `wheels`: the prepared check run on a lent GPU machine, and the wheels it carries.

It depends only on `part.io`, `part.ui` and `part.errors`; everything that computes sits above it.
"""
