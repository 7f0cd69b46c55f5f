"""Training: burn-in, baseline, PART and the controls, one epoch loop for all.

- `spec`: what a run trains (`TrainData`, `RunSpec`).
- `train`: a run from its starting checkpoint to its last epoch (`train_run`), as named steps:
  start, resume, the epoch's budget, the epoch, the monitor, the best epoch, the outputs.
- `batches`: the epoch's shuffle, its random streams and each rank's share of every batch.
- `methods`: the AT, TRADES and MART losses, given a float or a per-pixel budget.
- `schedule`: the learning-rate schedules.
- `monitor`: the per-epoch clean and PGD accuracy on held-out examples.
- `outputs`: the checkpoints' metadata, the best epoch, the trace's metadata, the wall times.
- `resume`: the resumable state written after every epoch, and reading it back.
- `log`: the per-epoch DVCLive log.

It reads `part.params`, attacks through `part.attacks` and takes its budgets from
`part.importance`; only `part.pipeline` and the evaluation sit above it.
"""
