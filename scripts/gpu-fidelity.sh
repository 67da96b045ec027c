#!/usr/bin/env bash
# The fidelity recipe on one GPU machine (16 cores beside the GPU): collect Breakout, train the
# default model's recipe with more compute than a CPU gives, export it and print its fidelity,
# in under 9 minutes. No GPU has run it yet: the first session lent one should, and ship the
# bundle if its table beats the shipped default's (docs/fidelity.md, "The default model, measured").
#
#   scripts/gpu-fidelity.sh                       # writes runs/gpu/Breakout-gpu.wmsim
#   OUT=runs/x TRAIN_SECONDS=300 BATCH=64 scripts/gpu-fidelity.sh
#
# Training stops at STEPS or after TRAIN_SECONDS (SIGTERM: the run saves its checkpoint and the
# export takes that), whichever comes first, so the whole script keeps its time budget on any
# GPU. Everything is seeded.
set -euo pipefail
out=${OUT:-runs/gpu}
envs=${ENVS:-14}                   # emulator processes: the cores but two
random_steps=${RANDOM_STEPS:-40000}
tracker_steps=${TRACKER_STEPS:-80000}
preset=${PRESET:-tiny-s5}
batch=${BATCH:-32}                 # windows per batch: 4x the CPU recipe's 8
steps=${STEPS:-100000}
budget=${TRAIN_SECONDS:-330}
fidelity_steps=${FIDELITY_STEPS:-10000}
started=$(date +%s)

# the default model's data (scripts/default-model.sh): random play, then a ball-following paddle
wmsim collect --game Breakout --resize max --steps "$random_steps" --envs "$envs" --seed 0 \
    --out "$out/data"
wmsim collect --game Breakout --resize max --steps $((random_steps + tracker_steps)) \
    --envs "$envs" --seed 1 --out "$out/data" --policy tracker --epsilon 0.25
status=0
timeout --signal=TERM "$budget" wmsim train --data "$out/data" --preset "$preset" \
    --batch "$batch" --steps "$steps" --seed 0 --out "$out/run" --eval-every 2500 \
    --checkpoint-every 500 || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 124 ]; then exit "$status"; fi  # 124: the budget
wmsim export --run "$out/run" --out "$out/Breakout-gpu.wmsim" --weights float16 --check \
    --fidelity-steps "$fidelity_steps" --starts play --contexts 1024
# shellcheck disable=SC2086  # CONTROL_ARGS: extra options, word-split on purpose
python "$(dirname "$0")/../benchmarks/control.py" --bundle "$out/Breakout-gpu.wmsim" ${CONTROL_ARGS:-}
echo "gpu-fidelity: $(($(date +%s) - started)) s in all; $(nvidia-smi --query-gpu=name \
    --format=csv,noheader 2>/dev/null || echo 'no GPU (CPU run)')"
