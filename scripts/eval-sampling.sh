#!/usr/bin/env bash
# NFE-vs-quality curves (docs/eval/sampling): `speechflow evaluate` on the same N utterances of the unseen-speaker
# test split for each (task, dtype, solver, NFE, sway), at the task's default guidance, then the tables and plots
# (python -m training.evaluation.sampling_report). Nothing else should use the CPU meanwhile (RTF is part of the report).
#   scripts/eval-sampling.sh TEST_MANIFEST [BUNDLE] [OUT]    (N, TASKS, CONFIGS_<TASK>: environment)
# A config is DTYPE:SOLVER:NFE:SWAY[:UNTIL] (UNTIL: guidance only while t < UNTIL; default 1, the whole path).
# Runs whose JSON exists are skipped, so an interrupted sweep resumes.
set -euo pipefail
DATA=${1:?usage: scripts/eval-sampling.sh TEST_MANIFEST [BUNDLE] [OUT]}
BUNDLE=${2:-checkpoints/demo}
OUT=${3:-docs/eval/sampling}
N=${N:-40}
BIN=${BIN:-.venv/bin}
# The defaults are what was measured for docs/eval/sampling on a CPU without bf16 units (fp32 curves; bf16 once)
CONFIGS_ENHANCE=${CONFIGS_ENHANCE:-"fp32:midpoint:16:0 fp32:midpoint:8:0 fp32:midpoint:8:-1 fp32:midpoint:4:0 fp32:midpoint:4:-1 fp32:euler:8:-1 fp32:euler:4:-1 fp32:euler:4:-1:0.5 fp32:euler:2:-1 bf16:midpoint:16:0"}
CONFIGS_SEPARATE=${CONFIGS_SEPARATE:-"fp32:midpoint:16:0 fp32:midpoint:8:0 fp32:midpoint:8:-1 fp32:midpoint:4:-1 fp32:euler:4:-1"}
CONFIGS_TTS=${CONFIGS_TTS:-"fp32:midpoint:32:0 fp32:midpoint:8:-1 fp32:euler:8:-1 fp32:euler:4:-1"}
mkdir -p "$OUT"
for task in ${TASKS:-enhance separate tts}; do
  var="CONFIGS_${task^^}"
  for config in ${!var}; do
    IFS=: read -r dtype solver nfe sway upto <<< "$config"
    upto=${upto:-1}
    json="$OUT/$task-$dtype-$solver-nfe$nfe-sway$sway$([ "$upto" = 1 ] || echo "-until$upto").json"
    [ -f "$json" ] && continue
    extra=()
    [ "$task" != tts ] && extra=(--no-peers)
    "$BIN/speechflow" evaluate --task "$task" --bundle "$BUNDLE" --data "$DATA" --n "$N" --device cpu \
      --dtype "$dtype" --solver "$solver" --nfe "$nfe" --sway "$sway" --guidance-until "$upto" --no-dnsmos \
      "${extra[@]}" \
      --json "$json.partial" > /dev/null
    mv "$json.partial" "$json"
    echo "$task $config: $json"
  done
done
"$BIN/python" -m training.evaluation.sampling_report "$OUT"
