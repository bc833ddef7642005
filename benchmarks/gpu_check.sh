#!/usr/bin/env bash
# The GPU owner's one command: proves CapsLab's CUDA paths and records the figures.
#   bash benchmarks/gpu_check.sh [OUT]            # on a GPU: under 10 minutes on one H100
#   bash benchmarks/gpu_check.sh OUT --smoke      # the same steps at toy sizes on the CPU
# Writes OUT/gpu_check.json (default runs/gpu-check); exit code 0 when every part passed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CAPSLAB_DATA:-}" ] && [ -d ../shared/datasets/mnist ]; then
  export CAPSLAB_DATA="$(cd ../shared/datasets && pwd)"
fi
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
OUT="${1:-runs/gpu-check}"
shift || true
exec "$PY" benchmarks/gpu_check.py --out "$OUT" "$@"
