#!/usr/bin/env bash
# Installs everything `part` needs on a fresh Debian machine (CPU or CUDA): the Fashion-MNIST
# package and the Python packages. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist
fi

# torch 2.14.1 with torchvision 0.29.1: the newest pair with a torchvision wheel that imports on a
# CPU-only machine; the same wheels use CUDA where a GPU is present.
python3 -m pip install --progress-bar off --disable-pip-version-check \
  "torch==2.14.1" "torchvision==0.29.1" -e ".[test]"
