#!/usr/bin/env bash
# Regenerate the Python code of proto/wmsim/rpc/v1 into wmsim/rpc/v1 (committed, never edited).
# tests/server/test_rpc.py fails when the committed code differs from what this writes.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -I proto --python_out=. --pyi_out=. --grpc_python_out=. \
    proto/wmsim/rpc/v1/dream.proto
