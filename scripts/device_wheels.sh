#!/usr/bin/env bash
# Downloads, on a machine with the package registry, the wheels the GPU machine lacks (python
# 3.12, manylinux x86_64) into .device_wheels/ (git-ignored; the device check installs them from
# there), with pyautoattack's example models stripped and the total size checked against what
# the working tree may carry. The logic, and why, is in part/runtime/wheels.py.
#   scripts/device_wheels.sh [DIR]      PY312=/path/to/python3.12 to choose the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
is_312() { [ -n "$1" ] && "$1" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; }
if [ -z "${PY312:-}" ]; then
  for candidate in python3.12 \
      $(command -v pyenv >/dev/null && ls -d "$(pyenv root)"/versions/3.12*/bin/python3.12 2>/dev/null); do
    if is_312 "$candidate"; then PY312="$candidate"; break; fi
  done
fi
if ! is_312 "${PY312:-}"; then
  echo "device_wheels: no python 3.12 found; set PY312=/path/to/python3.12" >&2
  exit 2
fi
PYTHONPATH="$PWD" exec "$PY312" -m part.runtime.wheels "${1:-.device_wheels}" "$PY312"
