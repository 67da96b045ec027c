"""SameHostSimulator: dream rows on a ``wmsim serve --socket PATH`` on this machine.

The same session as :class:`wmsim_client.remote.RemoteSimulator` opens over gRPC,
driven over a Unix socket (:mod:`wmsim.rpc.same_host`): a vector step is one request
and one answer, written and read by this thread, and the frames or latents arrive in
memory shared with the server instead of through the socket. The same seeds dream the
same dreams as in-process and over gRPC.

Failures are the exceptions RemoteSimulator raises: ``ConnectionError`` when the server
is not there or goes away, ``TimeoutError`` past ``timeout``, ``ValueError`` for input the
server refused, :class:`wmsim_client.remote.ServerError` for the rest. One simulator is
used from one thread at a time, as an env is.
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import socket
import weakref

import grpc
import numpy as np

from wmsim.rpc import same_host as wire
from wmsim.rpc.memory import keep_freed_memory
from wmsim.rpc.same_host import Refused
from wmsim.rpc.v1 import dream_pb2 as pb
from wmsim_client.remote import GONE, LATENTS_CODES, OBS_TYPE_CODES, ServerError, refusal
from wmsim_client.requests import ServedRows
from wmsim_client.simulator import DEFAULT_LATENTS, OBS_TYPES, check_latents

RESPONSE_LIMIT = 1 << 31
"""The longest answer read, in bytes (the large arrays come in shared memory)."""


def _release(connection: socket.socket, shared: list[mmap.mmap]) -> None:
    """Close the connection (which ends the session on the server) and the memory map."""
    connection.close()
    for memory in shared:
        with contextlib.suppress(BufferError):  # an array still viewing it keeps it mapped
            memory.close()


class SameHostSimulator(ServedRows):
    """``num_rows`` dream rows on the same-host server at ``server``; see the module docstring.

    Args:
        server: ``local:PATH``, or the socket's path itself.
        num_rows: dream rows (envs) to open.
        obs_type: pixels or latent.
        latents: sampled or mode (see :data:`wmsim_client.simulator.LATENTS`).
        timeout: seconds any one call may take.
        tune_malloc: tell glibc's malloc to keep freed memory for reuse, as
            :class:`wmsim_client.remote.RemoteSimulator` does: the arrays a step returns are
            fresh blocks of up to megabytes, which otherwise fault in page by page (64 pixel
            frames: 0.3 ms a copy on a 2-core CPU, against 0.01 ms reused).
    """

    def __init__(
        self,
        server: str | os.PathLike,
        num_rows: int,
        *,
        obs_type: str = "pixels",
        latents: str = DEFAULT_LATENTS,
        timeout: float = 30.0,
        tune_malloc: bool = False,
    ):
        if obs_type not in OBS_TYPES:
            raise ValueError(f"obs_type must be one of {', '.join(OBS_TYPES)}, got {obs_type!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        check_latents(latents)
        path = os.fspath(server)
        path = path.removeprefix(wire.SCHEME)
        self.address, self.path = f"{wire.SCHEME}{path}", path
        self.timeout, self.obs_type, self.latents = float(timeout), obs_type, latents
        self.num_rows = num_rows
        if tune_malloc:
            keep_freed_memory()
        self._connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._connection.settimeout(self.timeout)
        self._shared: list[mmap.mmap] = []  # the session's shared memory, once open
        self._broken: Exception | None = None
        self._placed: dict[str, tuple] = {}  # the last answer's arrays in shared memory
        self._open = False
        self._release = weakref.finalize(self, _release, self._connection, self._shared)
        try:
            self._connection.connect(path)
        except OSError as error:
            self._release()
            why = error.strerror or error
            raise ConnectionError(
                f"the wmsim server at {self.address} cannot be reached ({why}); {GONE}"
            ) from None
        try:
            request = pb.OpenSessionRequest(num_envs=num_rows, obs_type=OBS_TYPE_CODES[obs_type],
                                            latents=LATENTS_CODES[latents])  # fmt: skip
            spec = self._call(wire.OPEN, request.SerializeToString(), wire.OPENED, fds=1)
        except BaseException:
            self._release()
            raise
        self._open = True
        spec = pb.GetSpecResponse.FromString(spec)
        self.spec, self.num_contexts = json.loads(spec.spec_json), spec.num_contexts
        self.device = spec.device

    def close(self) -> None:
        """End the session (its rows are freed at once) and the connection; twice is allowed."""
        if not self._open:
            return
        self._open = False
        if self._broken is None:
            with contextlib.suppress(Exception):  # a server gone frees the rows without us
                self._call(wire.CLOSE, b"", wire.CLOSED)
        self._release()

    # -- plumbing -----------------------------------------------------------------------

    def _call(self, kind: int, payload: bytes, answer: int, fds: int = 0) -> bytes:
        """Send one message and read its answer's payload (an ERROR raises)."""
        where = f"the wmsim server at {self.address}"
        try:
            wire.send(self._connection, kind, payload)
            got, reply, passed = wire.receive(self._connection, RESPONSE_LIMIT, fds)
        except TimeoutError:
            raise TimeoutError(f"{where} gave no answer within {self.timeout:g} s") from None
        except (OSError, EOFError) as error:
            raise ConnectionError(f"{where} went away ({error}); {GONE}") from None
        except Refused as refused:  # an answer over the limit: not a server of ours
            raise ServerError(f"{where}: {refused.message}", _status(refused.code)) from None
        for fd in passed:
            try:
                self._shared.append(mmap.mmap(fd, 0))
            finally:
                os.close(fd)
        if got == wire.ERROR:
            refused = Refused.parse(reply)
            raise refusal(_status(refused.code), refused.message, where)
        if got != answer:
            message = f"{where} answered with message kind {got}, not {answer}"
            raise ServerError(message, grpc.StatusCode.INTERNAL)
        return reply

    def _exchange(self, request: pb.StepRequest) -> pb.StepResponse:
        if not self._open:
            raise RuntimeError("this simulator is closed")
        if self._broken is not None:
            raise ConnectionError(f"the connection to {self.address} broke earlier: {self._broken}")
        try:
            reply = self._call(wire.STEP, request.SerializeToString(), wire.STEPPED)
        except Exception as error:  # an ERROR ends the session on the server: no more steps
            self._broken = error
            raise
        response = pb.StepResponse.FromString(reply)
        self._placed = {name: (offset, dtype, shape) for name, offset, dtype, shape in
                        wire.layout(response)}  # fmt: skip
        return response

    def _array(self, response: pb.StepResponse, name: str) -> np.ndarray:
        placed = self._placed.get(name)
        if placed is None:
            return super()._array(response, name)
        offset, dtype, shape = placed
        memory = self._shared[0] if self._shared else None
        nbytes = math.prod(shape) * dtype.itemsize
        if memory is None or offset + nbytes > len(memory):
            message = f"{self.address} placed {name} outside the shared memory"
            raise ServerError(message, grpc.StatusCode.INTERNAL)
        return np.ndarray(shape, dtype, buffer=memory, offset=offset).astype(
            dtype.newbyteorder("="), copy=True
        )


def _status(code: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, code, grpc.StatusCode.UNKNOWN)
