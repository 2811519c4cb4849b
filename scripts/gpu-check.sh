#!/usr/bin/env bash
# The prepared GPU check, in under 8 minutes on a CUDA machine, into one JSON report ($OUT/gpu-check.json, or
# --out): the CUDA tests; a `base` training step (bf16, MFU); the served path's live-batch step with the bundle's
# models (1-64 padded rows of mixed lengths per served task at its default sampling: ms/step, real and padded
# frames, frames/s, peak memory); the host synchronisations inside a step (must be 0); and `speechflow serve` under
# the bench at concurrency 1-64 for enhance, separate and TTS (throughput, p50/p99 latency). `--dry-run` runs the
# same parts on the CPU with the debug preset and small sizes (CI does); `--parts` picks some.
#   scripts/gpu-check.sh [--dry-run] [--out FILE] [--bundle DIR] [--parts cuda_tests,training_step,...]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
exec "$BIN/python" scripts/gpu_check.py "$@"
