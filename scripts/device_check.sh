#!/usr/bin/env bash
# The device check, run once from the repo root on a bare GPU machine (and in CI on the CPU):
# installs the carried wheels (.device_wheels/, from scripts/device_wheels.sh), then within 5
# minutes records the versions, runs the CUDA tests, a tiny real `dvc repro` and a forced rerun
# of one training stage (same bytes?), and the benchmark's quick profile. Everything lands in
# OUTDIR: device_check.json (each part's result, written as it ends) and one log per part.
# The logic is in part/runtime/device_check.py.
#   scripts/device_check.sh OUTDIR [--budget SECONDS]     PYTHON=... to choose the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" -m part.runtime.device_check "$@"
