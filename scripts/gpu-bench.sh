#!/usr/bin/env bash
# Dream speed on one GPU machine, in under 5 minutes: onnxruntime-gpu in place (installed from
# local wheels where missing: GPU machines reach no network), its CUDA provider checked to run
# the bundle's graphs (no silent CPU fallback), then `wmsim bench dream` and `wmsim bench serve`
# on CUDA at GPU batch sizes, printing their tables with issue 19's targets for one H100
# (100,000 pixel and 1,000,000 latent dream steps/s) beside the rates measured. No GPU has run it
# yet (docs/speed.md). The emulator that dream.py compares with (ale-py) plays on the CPU.
#
#   scripts/gpu-bench.sh                  # from the repository root; onnxruntime-gpu installed
#   WHEELS=wheels scripts/gpu-bench.sh    # else: swap onnxruntime for onnxruntime-gpu from there
#
# WHEELS, prepared on a connected machine for the GPU machine's Python (here 3.12) and platform:
#   pip download onnxruntime-gpu==1.32.0 --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 -d wheels/
# onnxruntime-gpu from PyPI (1.19 and later) is built for CUDA 12 and cuDNN 9 and ships neither.
# A CUDA build of torch brings both; otherwise add, with the same flags, the wheels that its
# `cuda` and `cudnn` extras name (onnxruntime 1.21 and later): nvidia-cuda-runtime-cu12
# nvidia-cuda-nvrtc-cu12 nvidia-cufft-cu12 nvidia-curand-cu12 'nvidia-cudnn-cu12~=9.0'
# nvidia-cublas-cu12 (cuDNN's own requirement). Every nvidia_*.whl in WHEELS is installed too,
# and the libraries of installed nvidia-* packages are put on LD_LIBRARY_PATH. The state arena
# on the GPU needs onnx (the gpu extra); where it is missing, an onnx-*.whl in WHEELS is installed.
#
# Each step says what it does and stops the script with "gpu-bench: FAILED: ..." and the fix.
# Without a GPU it installs nothing and exits 2. Test mode: GPU_BENCH_ALLOW_CPU=1 runs every
# step on the CPU where no GPU is found (installing nothing), so that a test can run the script
# to the end at tiny sizes; its numbers are no GPU figures. Options, as variables: PYTHON
# (python3), BUNDLE (wmsim/bundles/Breakout.wmsim), PIXEL_BATCHES (256 1024), LATENT_BATCHES
# (256 1024 4096), ALE_BATCHES (256 1024: the emulator's batches, on the CPU), STEPS (32),
# REPEATS (2), SERVE_BATCH (1024, at most 1024), SERVE_CLIENTS (16), SERVE_STEPS (100),
# SERVE_ROUNDS (3), SERVE_REPEATS (2), SERVE_OBS (pixels latent), ARENA_ROWS (4096) and
# ARENA_STEPS (50): the arena check's batch and timed steps, DREAM_SECONDS (150) and
# SERVE_SECONDS (120): the limits on the two benchmarks, which keep the whole under 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD:$PWD/server:$PWD/clients${PYTHONPATH:+:$PYTHONPATH}"  # this checkout
python=${PYTHON:-python3}
bundle=${BUNDLE:-wmsim/bundles/Breakout.wmsim}
started=$(date +%s)
say() { echo "gpu-bench: $*"; }
fail() { echo "gpu-bench: FAILED: $*" >&2; exit 1; }

if gpus=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
    2>/dev/null) && [ -n "$gpus" ]; then
    device=cuda
elif [ "${GPU_BENCH_ALLOW_CPU:-}" = 1 ]; then
    device=cpu gpus="no GPU (test mode, GPU_BENCH_ALLOW_CPU=1: every number is the CPU's)"
else
    echo "gpu-bench: no NVIDIA GPU here (nvidia-smi finds none); run this on a GPU machine" >&2
    exit 2
fi
say "1/5 a GPU: $gpus"

say "2/5 onnxruntime-gpu, alone"
installed=$("$python" -c "from importlib.metadata import distributions
names = {(d.metadata['Name'] or '').lower().replace('_', '-') for d in distributions()}
print(*sorted(n for n in names if n.startswith('onnxruntime')))") || fail "$python does not run"
if [ "$device" = cpu ]; then
    say "test mode: ${installed:-no onnxruntime} left as it is"
elif [ "$installed" != onnxruntime-gpu ]; then
    prepare="prepare wheels on a connected machine (pip download onnxruntime-gpu==VERSION"
    prepare+=" --no-deps -d wheels/, with the CUDA 12 and cuDNN 9 wheels where no CUDA torch is"
    prepare+=" installed: see the top of scripts/gpu-bench.sh), copy them here and run"
    prepare+=" WHEELS=wheels scripts/gpu-bench.sh"
    [ -n "${WHEELS:-}" ] || fail "installed: ${installed:-no onnxruntime}, not onnxruntime-gpu" \
        "alone; this machine reaches no index: $prepare"
    compgen -G "$WHEELS/onnxruntime_gpu-*.whl" >/dev/null \
        || fail "no onnxruntime_gpu-*.whl in WHEELS=$WHEELS: $prepare"
    say "replacing ${installed:-nothing} with onnxruntime-gpu from $WHEELS (the two share one" \
        "folder: never both)"
    # shellcheck disable=SC2086  # $installed: package names, word-split on purpose
    if [ -n "$installed" ]; then "$python" -m pip uninstall -q -y $installed; fi
    # --no-deps: its requirements are onnxruntime's, installed already
    "$python" -m pip install -q --no-index --no-deps --find-links "$WHEELS" onnxruntime-gpu \
        || fail "installing onnxruntime-gpu from $WHEELS (above); ${installed:-nothing} was" \
            "uninstalled: pip install it again to go back"
    nvidia=$(compgen -G "$WHEELS/nvidia_*.whl" || true)
    if [ -n "$nvidia" ]; then
        # shellcheck disable=SC2086  # one wheel file per word
        "$python" -m pip install -q --no-index --no-deps $nvidia \
            || fail "installing the nvidia-* wheels in $WHEELS (above)"
    fi
fi
if [ "$device" = cuda ] && ! "$python" -c "import onnx" 2>/dev/null && [ -n "${WHEELS:-}" ] \
        && compgen -G "$WHEELS/onnx-*.whl" >/dev/null; then  # the device arena's row graphs
    "$python" -m pip install -q --no-index --no-deps --find-links "$WHEELS" onnx \
        || fail "installing onnx from $WHEELS (above)"
fi
libraries=$("$python" -c "import glob, site
print(':'.join(sorted(d for p in site.getsitepackages() for d in glob.glob(p + '/nvidia/*/lib'))))") \
    || fail "$python does not run"
if [ -n "$libraries" ]; then
    export LD_LIBRARY_PATH="$libraries${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    say "CUDA libraries of the nvidia-* packages on LD_LIBRARY_PATH: ${libraries//:/ }"
fi

say "3/5 onnxruntime runs the bundle's graphs on $device"
needs="onnxruntime-gpu needs CUDA 12 and cuDNN 9 libraries (a CUDA torch, or the"
needs+=" nvidia-*-cu12 wheels in WHEELS: see the top of scripts/gpu-bench.sh)"
"$python" - "$bundle" "$device" <<'EOF' || fail "onnxruntime cannot run the graphs on $device: $needs"
import sys

import onnxruntime as ort

from wmsim.errors import UserError
from wmsim.runtime.graphs import Graphs

bundle, device = sys.argv[1:]
print(f"gpu-bench: onnxruntime {ort.__version__}, providers available: "
      f"{', '.join(ort.get_available_providers())}")
try:
    graphs = Graphs(bundle, device=device)
except UserError as error:  # the bundle errors name what is missing
    sys.exit(f"gpu-bench: {error}")
for name, session in graphs.sessions.items():
    print(f"gpu-bench: {name} graph on {', '.join(session.get_providers())}")
EOF

say "3b/5 the state arena on $device against the host's: the same dreams, and their speed"
"$python" - "$bundle" "$device" "${ARENA_ROWS:-4096}" "${ARENA_STEPS:-50}" <<'EOF' \
    || fail "the arena on $device (above)"
import sys
import time

import numpy as np

from wmsim.errors import UserError
from wmsim.runtime.graphs import Runtime

bundle, device, capacity, steps = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
results = {}
for arena in ("host", "device"):
    try:
        runtime = Runtime(bundle, capacity, device=device, decode=False, arena=arena)
    except UserError as error:  # no onnx: it names the fix
        sys.exit(f"gpu-bench: {error}; or put the onnx wheel in WHEELS")
    rows, rng = np.arange(capacity), np.random.default_rng(0)
    runtime.reset(rows, rows % runtime.num_contexts)
    some = rows[::2]  # a server's batch: some rows of the arena
    noise = runtime.bundle.noise
    record = [*runtime.step(some, rng.integers(4, size=len(some)), noise(len(some), rng))]
    record += [*runtime.step(rows, rng.integers(4, size=capacity), noise(capacity, rng))]
    actions, noises = rng.integers(4, size=capacity), noise(capacity, rng)
    started = time.perf_counter()
    for _ in range(steps):  # every row, its latents to the host each step as a latent env's
        runtime.step(rows, actions, noises)
    results[arena] = capacity * steps / (time.perf_counter() - started), record
    print(f"gpu-bench: arena in {runtime.arena_place} memory: {results[arena][0]:,.0f} latent "
          f"steps/s at batch {capacity}")
(host, expected), (on_device, got) = results["host"], results["device"]
differs = max(float(np.abs(g.astype(float) - e.astype(float)).max()) for g, e in zip(got, expected))
print(f"gpu-bench: device arena {on_device / host:.2f}x the host arena; rewards, continues and "
      f"latents of a step of some rows and one of every row differ by at most {differs:g}")
EOF

say "4/5 wmsim bench dream --device $device (onnxruntime, torch eager, DreamVectorEnv; ALE on" \
    "the CPU)"
# shellcheck disable=SC2086  # the batch lists: numbers, word-split on purpose
timeout "${DREAM_SECONDS:-150}" "$python" -m wmsim bench dream --bundle "$bundle" \
    --device "$device" --pixel-batches ${PIXEL_BATCHES:-256 1024} \
    --latent-batches ${LATENT_BATCHES:-256 1024 4096} --ale-batches ${ALE_BATCHES:-256 1024} \
    --steps "${STEPS:-32}" --repeats "${REPEATS:-2}" \
    || fail "wmsim bench dream --device $device failed (above) or took over" \
        "${DREAM_SECONDS:-150} s (then: fewer BATCHES or STEPS)"

say "5/5 wmsim bench serve --device $device (in-process against served, 1 client against many)"
# shellcheck disable=SC2086  # SERVE_OBS: observation types, word-split on purpose
timeout "${SERVE_SECONDS:-120}" "$python" -m wmsim bench serve --bundle "$bundle" \
    --device "$device" --batch "${SERVE_BATCH:-1024}" --clients "${SERVE_CLIENTS:-16}" \
    --steps "${SERVE_STEPS:-100}" --rounds "${SERVE_ROUNDS:-3}" --repeats "${SERVE_REPEATS:-2}" \
    --obs ${SERVE_OBS:-pixels latent} \
    || fail "wmsim bench serve --device $device failed (above) or took over" \
        "${SERVE_SECONDS:-120} s (then: a smaller SERVE_BATCH or SERVE_STEPS)"
say "done in $(($(date +%s) - started)) s on $gpus"
