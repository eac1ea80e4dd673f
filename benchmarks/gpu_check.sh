#!/usr/bin/env bash
# One short GPU run (the device tool lends an H200 for minutes): every fast path tested against
# its reference on the GPU (Triton and torch on CUDA), then every kernel timed against the
# reference, tables written to $OUT (default benchmarks/results) as kernels_cuda.{md,json}.
# Each step has its own time limit so a hang in one still leaves the other's results.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results}"
export PYTHONUNBUFFERED=1
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"  # benchmarks/ scripts import mmllm from here
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
timeout "${TEST_S:-170}" python3 -m pytest -q -p no:cacheprovider -m gpu tests/kernels
timeout "${BENCH_S:-300}" python3 benchmarks/kernels.py --device cuda --out "$out"
