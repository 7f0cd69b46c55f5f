#!/usr/bin/env bash
# Installs everything `part` needs into a project virtual environment, .venv, on a fresh Debian
# machine (CPU or CUDA): the Fashion-MNIST package, python3-venv where missing, and the Python
# packages. A venv because Debian's own python3 is externally managed (PEP 668) and refuses
# `pip install`. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${PART_VENV:-.venv}"

missing=()
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
"$PYTHON" -c "import ensurepip, venv" 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
  elif [[ " ${missing[*]} " == *" python3-venv "* ]]; then
    echo "setup: $PYTHON has no venv/ensurepip module; install your distribution's python3-venv" \
         "package (or set PYTHON=/path/to/python3), then run this again" >&2
    exit 2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# torch 2.14.1 with torchvision 0.29.1: the newest pair with a torchvision wheel that imports on a
# CPU-only machine; the same wheels use CUDA where a GPU is present.
"$VENV/bin/python" -m pip install --progress-bar off --disable-pip-version-check \
  "torch==2.14.1" "torchvision==0.29.1" -e ".[test]"
