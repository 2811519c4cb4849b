#!/usr/bin/env bash
# The README's scheduling tables: for each policy (step, request) start `speechflow serve --scheduling POLICY` on
# BUNDLE, run the same open-loop Poisson mix of enhancement and TTS against it for DURATION seconds, then the
# scheduler scenarios (bench/scenarios.py); finally the simulated-GPU comparison (no server). One JSON per
# run in OUT. Nothing else should use the CPU (or GPU) meanwhile.
#   scripts/bench-scheduling.sh [BUNDLE] [OUT]
#   (environment: POLICIES, PROCESSING=auto|engine|worker, MIXED=0|1, SCENARIOS=0|1, SIMULATE=0|1, RATE, DURATION,
#   PORT, TIMEOUT_S)
set -euo pipefail
BUNDLE=${1:-checkpoints/demo}
OUT=${2:-bench-results/scheduling}
RATE=${RATE:-0.08}
DURATION=${DURATION:-600}
PORT=${PORT:-8123}
TIMEOUT_S=${TIMEOUT_S:-300}  # long enough that the comparison is about latency, not about 504s
BIN=${BIN:-.venv/bin}
PROCESSING=${PROCESSING:-auto}
mkdir -p "$OUT"
url="http://127.0.0.1:$PORT"
. "$(dirname "$0")/serve-ready.sh"
for policy in ${POLICIES:-step request}; do
  SPEECHFLOW_REQUEST_TIMEOUT_S=$TIMEOUT_S start_server "$OUT/server-$policy.log" --bundle "$BUNDLE" \
    --port "$PORT" --scheduling "$policy" --processing "$PROCESSING"
  if [ "${MIXED:-1}" = 1 ]; then
    "$BIN/speechflow" bench --url "$url" --mix enhance:0.5,tts:0.5 --mode poisson --rate "$RATE" \
      --requests 10000 --max-duration "$DURATION" --timeout "$TIMEOUT_S" --seed 0 --label "$policy" \
      --json "$OUT/mixed-$policy.json" > /dev/null
    echo "mixed traffic, $policy: $OUT/mixed-$policy.json"
  fi
  if [ "${SCENARIOS:-1}" = 1 ]; then
    "$BIN/python" -m bench.scenarios --url "$url" --json "$OUT/scenarios-$policy.json" > /dev/null
    echo "scenarios, $policy: $OUT/scenarios-$policy.json"
  fi
  kill $server; wait $server 2>/dev/null || true
done
if [ "${MIXED:-1}" = 1 ]; then
  "$BIN/python" -m bench.table --mixed "$OUT"/mixed-*.json
fi
if [ "${SIMULATE:-1}" = 1 ]; then
  "$BIN/speechflow" bench --simulate 0.015,0.0005 --mix enhance:0.5,tts:0.5 --mode poisson --rate 10 \
    --requests 300 --seed 0 --json "$OUT/simulated-gpu.json" > /dev/null
  "$BIN/python" -m bench.table --mixed "$OUT/simulated-gpu.json"
fi
