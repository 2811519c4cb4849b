#!/usr/bin/env bash
# The README's serving table: for each frame budget, start `speechflow serve` on BUNDLE, run `speechflow bench`
# (closed loop) at concurrency 1 and 16 against it, with the pipeline-alone baseline measured in the same run, and
# write one JSON per run to OUT. Nothing else should use the CPU (or GPU) meanwhile.
#   scripts/bench-sweep.sh [BUNDLE] [OUT] [FRAME_BUDGETS...]
set -euo pipefail
BUNDLE=${1:-checkpoints/demo}
OUT=${2:-bench-results}
shift $(( $# > 2 ? 2 : $# ))
BUDGETS=${*:-"1600 3200 6400 24000"}
PORT=${PORT:-8123}
TASK=${TASK:-enhance}
REQUESTS=${REQUESTS:-64}
BIN=${BIN:-.venv/bin}
mkdir -p "$OUT"
url="http://127.0.0.1:$PORT"
. "$(dirname "$0")/serve-ready.sh"
for frames in $BUDGETS; do
  SPEECHFLOW_MAX_BATCH_FRAMES=$frames start_server "$OUT/server-$frames.log" --bundle "$BUNDLE" --port "$PORT"
  for c in 16 1; do
    n=$(( c == 1 ? 16 : REQUESTS ))
    baseline=()
    # the pipeline alone (batch sizes 1..16) does not depend on the server's settings: measure it once, first
    [ "$frames" = "${BUDGETS%% *}" ] && [ "$c" = 16 ] && baseline=(--baseline "$BUNDLE")
    "$BIN/speechflow" bench --url "$url" --task "$TASK" --concurrency "$c" --requests "$n" \
      ${STEPS:+--steps "$STEPS"} ${GUIDANCE:+--guidance "$GUIDANCE"} "${baseline[@]}" \
      --json "$OUT/$TASK-frames$frames-c$c.json" > /dev/null
    echo "frames $frames, concurrency $c: $OUT/$TASK-frames$frames-c$c.json"
  done
  kill $server; wait $server 2>/dev/null || true
done
"$BIN/python" -m bench.table "$OUT"
