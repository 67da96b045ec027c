"""The gRPC contract: committed generated code equals protoc's output; tensors on the wire."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from grpc_tools import protoc

from wmsim.rpc import tensors
from wmsim.rpc.v1 import dream_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("dream_pb2.py", "dream_pb2.pyi", "dream_pb2_grpc.py")


def test_the_committed_generated_code_is_what_the_proto_generates(tmp_path):
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    status = protoc.main(["protoc", f"-I{tmp_path / 'proto'}", f"--python_out={tmp_path}",
                          f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
                          str(tmp_path / "proto/wmsim/rpc/v1/dream.proto")])  # fmt: skip
    assert status == 0
    for name in GENERATED:
        fresh = (tmp_path / "wmsim/rpc/v1" / name).read_text()
        committed = (ROOT / "wmsim/rpc/v1" / name).read_text()
        assert fresh == committed, f"{name} is stale: run scripts/generate-rpc.sh and commit"


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.uint8).reshape(2, 2, 3),
        np.array([0.5, -1.25], np.float32),
        np.array([True, False]),
        np.array([3, 2**40], np.int64),
        np.zeros((0, 4), np.float32),
    ],
)
def test_tensors_round_trip_exactly(array):
    back = tensors.decode(pb.Tensor.FromString(tensors.encode(array).SerializeToString()), "x")
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (pb.Tensor(dtype="complex64", shape=[1], data=b"\0" * 8), "unknown dtype 'complex64'"),
        (
            pb.Tensor(dtype="int64", shape=[2], data=b"\0" * 8),
            r"shape \[2\] of int64 needs 16 bytes, got 8",
        ),
        (pb.Tensor(dtype="uint8", shape=[-1], data=b""), "negative dimension"),
    ],
)
def test_bad_tensors_are_named_in_the_error(tensor, message):
    with pytest.raises(ValueError, match=f"actions: {message}"):
        tensors.decode(tensor, "actions")


def test_arrays_that_cannot_travel_are_refused():
    with pytest.raises(ValueError, match="cannot travel"):
        tensors.encode(np.zeros(2, np.complex64))
