#!/usr/bin/env bash
# Mamba-2's fused path on one GPU machine, in under 5 minutes: make torch see the GPU, install
# mamba-ssm and causal-conv1d, run the gpu-marked tests (fused kernels against the PyTorch
# reference: outputs, resets, carried and final state, gradients) and `wmsim bench scan` on
# CUDA. Until this has passed on a GPU the fused path is unverified (docs/world-models.md).
#
#   scripts/gpu-mamba.sh                  # from the repository root, with network access
#   WHEELS=.whl scripts/gpu-mamba.sh      # offline: install every package from wheels there
#
# Each step says what it does and stops the script with "gpu-mamba: FAILED: ..." if it fails.
# Without a GPU it installs nothing and exits 2. Options, as variables: PYTHON (python3),
# TORCH_INDEX (PyTorch's CUDA wheel index, by default the one matching the driver),
# BUILD_SECONDS (180: the limit on installing the kernels, a source build of causal-conv1d
# included, where no prebuilt wheel matches this torch), BENCH_ARGS (--lengths 256 1024).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # wmsim from this checkout, benchmarks too
python=${PYTHON:-python3}
started=$(date +%s)
say() { echo "gpu-mamba: $*"; }
fail() { echo "gpu-mamba: FAILED: $*" >&2; exit 1; }
pip_install() {  # from $WHEELS alone when set, else from the indexes
    if [ -n "${WHEELS:-}" ]; then
        "$python" -m pip install -q --no-index --find-links "$WHEELS" "$@"
    else
        "$python" -m pip install -q "$@"
    fi
}

say "1/5 a GPU"
if ! gpus=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null) \
    || [ -z "$gpus" ]; then
    echo "gpu-mamba: no NVIDIA GPU here (nvidia-smi finds none); run this on a GPU machine" >&2
    exit 2
fi
say "device: $gpus"

say "2/5 a CUDA build of torch"
if ! "$python" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    version=$("$python" -c "import torch; print(torch.__version__.split('+')[0])" 2>/dev/null) \
        || version=${TORCH_VERSION:-2.13.0}
    driver_cuda=$(nvidia-smi | grep -o 'CUDA Version: [0-9]*\.[0-9]*' | grep -o '[0-9.]*$' || true)
    case "$driver_cuda" in  # the newest wheel build the driver runs
        1[3-9].*) build=cu130 ;; 12.[89]) build=cu128 ;; *) build=cu126 ;;
    esac
    index=${TORCH_INDEX:-https://download.pytorch.org/whl/$build}
    say "torch sees no GPU; installing torch==$version from ${WHEELS:-$index} (driver CUDA $driver_cuda)"
    pip_install --index-url "$index" "torch==$version" \
        || fail "could not install a CUDA torch==$version; set TORCH_INDEX or WHEELS"
    "$python" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" \
        || fail "torch $version still sees no GPU (driver CUDA $driver_cuda): set TORCH_INDEX"
fi

say "3/5 mamba-ssm and causal-conv1d"
kernels="from causal_conv1d import causal_conv1d_fn
from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined"
if ! "$python" -c "$kernels" 2>/dev/null; then
    # mamba-ssm's SSD kernels are Triton: its wheel builds with no CUDA compiling (no
    # MAMBA_KEEP_CUDA_BUILD), and its other requirements (tilelang, quack-kernels) serve
    # kernels we don't call. causal-conv1d's setup fetches a prebuilt wheel matching torch,
    # CUDA and Python where its releases have one, else compiles with nvcc. Both import torch
    # in setup.py: --no-build-isolation, so they build against the torch installed here.
    pip_install einops transformers || fail "could not install einops and transformers"
    timeout "${BUILD_SECONDS:-180}" "$python" -m pip install -q --no-build-isolation --no-deps \
        ${WHEELS:+--no-index --find-links "$WHEELS"} "mamba-ssm==2.3.2.post1" \
        "causal-conv1d>=1.6.1" \
        || fail "installing the kernels failed or took over ${BUILD_SECONDS:-180} s (a source" \
            "build of causal-conv1d?): build wheels once with \`pip wheel --no-build-isolation" \
            "causal-conv1d\` and pass WHEELS=folder"
    "$python" -c "$kernels" || fail "the kernels installed but do not import (see above)"
fi
"$python" -c "import wmsim.model.backbones, wmsim.train.config" 2>/dev/null \
    || pip_install -e . || fail "could not install this repository (pip install -e .)"
"$python" - <<'EOF' || fail "versions"
import causal_conv1d, mamba_ssm, torch, triton
print(f"gpu-mamba: {torch.cuda.get_device_name()}; torch {torch.__version__} (CUDA "
      f"{torch.version.cuda}), triton {triton.__version__}, mamba-ssm {mamba_ssm.__version__}, "
      f"causal-conv1d {causal_conv1d.__version__}")
EOF

say "4/5 the fused kernels against the reference (gpu-marked tests)"
log=$(mktemp)
"$python" -m pytest -m gpu -rs -p no:cacheprovider tests/model/backbones/test_mamba_fused.py \
    2>&1 | tee "$log" || fail "the gpu-marked tests failed (above)"
if grep -q "skipped" "$log"; then fail "gpu-marked tests were skipped (above): nothing verified"; fi

say "5/5 wmsim bench scan on CUDA (the parallel form now runs the fused kernels)"
# shellcheck disable=SC2086  # BENCH_ARGS: options, word-split on purpose
"$python" -m wmsim bench scan --device cuda ${BENCH_ARGS:---lengths 256 1024} \
    || fail "wmsim bench scan --device cuda"
say "passed in $(($(date +%s) - started)) s on $gpus"
