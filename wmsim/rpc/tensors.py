"""Tensors on the wire: raw little-endian bytes, a numpy dtype name and a shape.

One dtype table for both ends. Decoding checks everything a peer could get
wrong (an unknown dtype, a negative dimension, a byte count that does not match
the shape) and raises ``ValueError`` naming it, which the server answers with
INVALID_ARGUMENT.
"""

from __future__ import annotations

import math

import numpy as np

from wmsim.rpc.v1 import dream_pb2 as pb

DTYPES = {
    name: np.dtype(name).newbyteorder("<")
    for name in (
        "bool",
        "uint8",
        "int8",
        "int32",
        "int64",
        "uint32",
        "float16",
        "float32",
        "float64",
    )
}
"""The dtypes a Tensor may carry, by numpy name."""


_NAMES = {np.dtype(name).newbyteorder(order): name for name in DTYPES for order in "<>="}
"""Each dtype that may travel, in any byte order -> its name: ``dtype.name`` costs more than
the rest of a small array's encoding."""


def encode(array: np.ndarray) -> pb.Tensor:
    """A numpy array -> Tensor (C order, little-endian)."""
    array = np.asarray(array)
    name = _NAMES.get(array.dtype)
    if name is None:
        raise ValueError(f"dtype {array.dtype} cannot travel; use one of {', '.join(DTYPES)}")
    data = np.ascontiguousarray(array, DTYPES[name]).tobytes()
    return pb.Tensor(dtype=name, shape=array.shape, data=data)


def decode(tensor: pb.Tensor, what: str) -> np.ndarray:
    """Tensor -> numpy array (read-only, no copy); ``what`` names it in errors.

    Raises:
        ValueError: the dtype is unknown, or the shape does not fit the bytes.
    """
    dtype = DTYPES.get(tensor.dtype)
    if dtype is None:
        raise ValueError(f"{what}: unknown dtype {tensor.dtype!r}; use one of {', '.join(DTYPES)}")
    shape = tuple(tensor.shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"{what}: negative dimension in shape {list(shape)}")
    expected = math.prod(shape) * dtype.itemsize
    if len(tensor.data) != expected:
        raise ValueError(
            f"{what}: shape {list(shape)} of {tensor.dtype} needs {expected} bytes, "
            f"got {len(tensor.data)}"
        )
    return np.frombuffer(tensor.data, dtype).reshape(shape).astype(dtype.newbyteorder("="),
                                                                    copy=False)  # fmt: skip
