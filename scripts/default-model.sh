#!/usr/bin/env bash
# Rebuild the Breakout model that ships inside wmsim (wmsim/bundles/Breakout.wmsim) from real frames,
# with the project's own commands. About 50 minutes on a 2-core CPU: collection ~1 minute,
# training ~45 (8,000 steps of tiny-s5), export ~1. Everything is seeded; floating-point results
# may still differ in the last bits on another CPU or thread count.
set -euo pipefail
out=${1:-wmsim/bundles/Breakout.wmsim}
wmsim collect --game Breakout --steps 50000 --envs 2 --seed 0 --out data/breakout-50k
wmsim train --data data/breakout-50k --preset tiny-s5 --steps 8000 --seed 0 --out runs/breakout-default
# float16 weights: half the size (the package keeps it under 20 MB); --check compares onnxruntime
# with the torch model on real contexts and fails on any mismatch
wmsim export --run runs/breakout-default --out "$out" --weights float16 --check
wmsim bundle check "$out"
