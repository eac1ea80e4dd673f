#!/usr/bin/env bash
# One short GPU run (the device tool lends an H200 for minutes): every Triton kernel tested
# against its reference, then every kernel timed against the reference, tables written to
# benchmarks/results/kernels_cuda.{md,json} (copy them back from $OUT when run remotely).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pytest -q -m gpu tests/kernels
python benchmarks/kernels.py --device cuda --out "${OUT:-benchmarks/results}"
