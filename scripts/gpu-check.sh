#!/usr/bin/env bash
# The prepared GPU check: on a CUDA machine, the CUDA tests, a `base` training step (bf16, MFU), sampler throughput
# against batch size and the service bench at concurrency 1-64, in under 8 minutes, into one JSON report
# ($OUT/gpu-check.json, or --out). `--dry-run` runs the same parts on the CPU with the debug preset (CI does).
#   scripts/gpu-check.sh [--dry-run] [--out FILE] [--bundle DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
exec "$BIN/python" scripts/gpu_check.py "$@"
