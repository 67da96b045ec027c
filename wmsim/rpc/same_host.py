"""The same-host transport: the Dream contract over a Unix socket, frames in shared memory.

A client on the server's machine connects to ``wmsim serve --socket PATH`` instead of
its gRPC port. One connection is one session. Each message is a kind byte and a length
(``<BI``) before a payload; the payloads are the gRPC contract's own protobuf messages:

    client                                  server
    OPEN    OpenSessionRequest        ->
                                      <-    OPENED  GetSpecResponse, with a memory fd
    STEP    StepRequest               ->
                                      <-    STEPPED StepResponse
    CLOSE   (empty)                   ->
                                      <-    CLOSED  (empty)
                                      <-    ERROR   {"code": gRPC status name, "message"}

The large arrays of a StepResponse (``obs``, ``reset_obs``, ``frames``) come in the shared
memory the OPENED message hands over (a ``memfd`` passed over the socket, Linux only): their
Tensors carry dtype and shape but no bytes, and lie one after another from offset 0, each
at a multiple of :data:`ALIGN` (:func:`layout`). Elsewhere, or when the server cannot
share memory, they carry their bytes as on gRPC. An ERROR ends the connection, as an
aborted call ends a gRPC stream, and with it the session.

The socket file is the access control: the server makes it readable and writable by its
own user only (0600), so no token is asked for.
"""

from __future__ import annotations

import json
import math
import socket
import struct
from collections.abc import Iterator

import numpy as np

from wmsim.rpc.v1 import dream_pb2 as pb

SCHEME = "local:"
"""The prefix of a same-host server address: ``local:/run/user/1000/wmsim.sock``."""
OPEN, OPENED, STEP, STEPPED, CLOSE, CLOSED, ERROR = range(1, 8)
HEADER = struct.Struct("<BI")
ALIGN = 64
SHARED = ("obs", "reset_obs", "frames")
"""The StepResponse fields that travel in shared memory, in their order there."""


class Refused(Exception):
    """A call refused with a gRPC status name (``INVALID_ARGUMENT``, ...) and a message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message

    def payload(self) -> bytes:
        """The ERROR message's payload."""
        return json.dumps({"code": self.code, "message": self.message}).encode()

    @classmethod
    def parse(cls, payload: bytes) -> Refused:
        """An ERROR payload as a Refused (a payload that is none says so)."""
        try:
            fields = json.loads(payload)
            return cls(str(fields["code"]), str(fields["message"]))
        except (ValueError, KeyError, TypeError):
            return cls("INTERNAL", f"an error message that cannot be read: {payload[:100]!r}")


def send(sock: socket.socket, kind: int, payload: bytes = b"", fds: tuple[int, ...] = ()) -> None:
    """One message, with ``fds`` passed along (SCM_RIGHTS) when there are any."""
    data = HEADER.pack(kind, len(payload)) + payload
    if fds:
        sent = socket.send_fds(sock, [data], list(fds))
        sock.sendall(data[sent:])
    else:
        sock.sendall(data)


def _exactly(sock: socket.socket, n: int, start: bytes = b"") -> bytes:
    buffer = bytearray(n)
    buffer[: len(start)] = start
    view, got = memoryview(buffer), len(start)
    while got < n:
        count = sock.recv_into(view[got:])
        if not count:
            raise EOFError("the other end closed the connection")
        got += count
    return bytes(buffer)


def receive(sock: socket.socket, limit: int, fds: int = 0) -> tuple[int, bytes, list[int]]:
    """One message: (kind, payload, up to ``fds`` passed descriptors).

    Raises:
        EOFError: the other end closed the connection.
        Refused: the message is longer than ``limit`` bytes (INVALID_ARGUMENT); its body is
            not read.
    """
    passed: list[int] = []
    start = b""
    if fds:
        start, passed, _, _ = socket.recv_fds(sock, HEADER.size, fds)
        if not start:
            raise EOFError("the other end closed the connection")
    kind, length = HEADER.unpack(_exactly(sock, HEADER.size, start))
    if length > limit:
        raise Refused(
            "INVALID_ARGUMENT", f"a message of {length} bytes is over the limit of {limit}"
        )
    return kind, _exactly(sock, length), passed


def parse(message_type, payload: bytes):
    """``payload`` as a ``message_type`` protobuf, or Refused (INVALID_ARGUMENT)."""
    try:
        return message_type.FromString(payload)
    except Exception as error:  # protobuf's DecodeError, or anything else the bytes cause
        raise Refused(
            "INVALID_ARGUMENT",
            f"the request is not a valid {message_type.__name__} ({str(error)[:200]})",
        ) from None


def aligned(n: int) -> int:
    """``n`` rounded up to a multiple of :data:`ALIGN`."""
    return -(-n // ALIGN) * ALIGN


def layout(response: pb.StepResponse) -> Iterator[tuple[str, int, np.dtype, tuple[int, ...]]]:
    """(field, offset, dtype, shape) of each shared array of ``response``, in order."""
    offset = 0
    for name in SHARED:
        tensor = getattr(response, name)
        shape = tuple(tensor.shape)
        if not response.HasField(name) or tensor.data or math.prod(shape) == 0:
            continue  # absent, carried inline, or empty
        dtype = np.dtype(tensor.dtype).newbyteorder("<")
        yield name, offset, dtype, shape
        offset += aligned(math.prod(shape) * dtype.itemsize)


def shared_size(num_envs: int, obs_nbytes: int, frame_nbytes: int) -> int:
    """Bytes of shared memory a session needs at most.

    An env is reset or stepped in one request, never both, so ``obs`` and ``reset_obs``
    together hold at most ``num_envs`` observations; ``frames`` at most ``num_envs`` frames.
    """
    return aligned(num_envs * obs_nbytes) * 2 + aligned(num_envs * frame_nbytes)
