"""RemoteSimulator: dream rows held by a ``wmsim serve`` server.

It opens a session of ``num_rows`` envs and drives it over one long-lived
bidirectional stream, one request and one answer per call, so a vector step
is one round trip (NEXT_STEP resets ride along). The server keeps the rows'
state and random generators; this side sends seeds and actions, so a seed
dreams exactly what it dreams in-process.

Every call has a deadline (``timeout`` seconds; for the stream, a watchdog
thread cancels a step that waits longer). Failures become Python exceptions
that say what happened: ``ConnectionError`` when the server cannot be reached
or goes away mid-episode, ``TimeoutError`` past the deadline,
``PermissionError`` for a missing or wrong token, ``ValueError`` for input the
server refused, :class:`ServerError` for the rest. One simulator is used from
one thread at a time, as an env is. ``tune_malloc=True`` tunes this process's
malloc for large messages (:mod:`wmsim.rpc.memory`); by default it is left alone.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
import weakref
from pathlib import Path

import grpc

from wmsim.rpc.channel import channel_options
from wmsim.rpc.memory import keep_freed_memory
from wmsim.rpc.v1 import dream_pb2 as pb
from wmsim.rpc.v1 import dream_pb2_grpc as pb_grpc
from wmsim_client.requests import ServedRows
from wmsim_client.simulator import DEFAULT_LATENTS, OBS_TYPES, check_latents

SESSION_KEY = "wmsim-session"
OBS_TYPE_CODES = {"pixels": pb.OBS_TYPE_PIXELS, "latent": pb.OBS_TYPE_LATENT}
LATENTS_CODES = {"sampled": pb.LATENTS_SAMPLED, "mode": pb.LATENTS_MODE}
GONE = "is `wmsim serve` running there? Dream envs on it must be made again once it is back"
"""The advice of a ConnectionError (a replicated simulator gives its own instead)."""


class ServerError(RuntimeError):
    """The server refused a call for a reason other than the input or the connection."""

    def __init__(self, message: str, code: grpc.StatusCode):
        super().__init__(message)
        self.code = code


def _credentials(tls: bool | str | os.PathLike) -> grpc.ChannelCredentials | None:
    if tls is False or tls is None:
        return None
    if tls is True:
        return grpc.ssl_channel_credentials()  # the system's trusted roots
    path = Path(tls)
    if not path.is_file():
        raise ValueError(f"tls must be True, False or a PEM root certificate file; {path} is none")
    return grpc.ssl_channel_credentials(root_certificates=path.read_bytes())


class _Stream:
    """A Run stream's plumbing, shared with gRPC's sending thread and the watchdog.

    It never refers to the simulator, so a simulator dropped without ``close()`` is
    collected, and its finalizer ends the stream.
    """

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.queue: queue.SimpleQueue[pb.StepRequest | None] = queue.SimpleQueue()
        self.call = None  # the Run call, set once started
        self.waiting_since: float | None = None  # a request waits for its answer since then
        self.timed_out = False
        self.ended = threading.Event()

    def requests(self):
        """The requests put on the queue, until None."""
        while (request := self.queue.get()) is not None:
            yield request

    def watch(self) -> None:
        """Cancel the call when an answer is overdue (a stream has no per-message deadline)."""
        tick = min(self.timeout / 10, 0.5)
        while not self.ended.wait(tick):
            since = self.waiting_since
            if since is not None and time.monotonic() - since > self.timeout:
                self.timed_out = True
                self.call.cancel()
                return

    def end(self, channel: grpc.Channel) -> None:
        """Stop the watchdog, end the requests, cancel the call if still open, close."""
        self.ended.set()
        self.queue.put(None)
        self.call.cancel()
        channel.close()


class RemoteSimulator(ServedRows):
    """``num_rows`` dream rows on the server at ``server``; see the module docstring.

    Args:
        server: ``host:port`` of a ``wmsim serve``.
        num_rows: dream rows (envs) to open.
        obs_type: pixels or latent.
        latents: sampled or mode (see :data:`wmsim_client.simulator.LATENTS`).
        token: the server's bearer token (default: ``$WMSIM_TOKEN`` if set).
        tls: False for plain TCP, True for TLS with the system's roots, or the path of a
            PEM root certificate (a self-signed server certificate, for example).
        timeout: seconds any one call may take.
        tune_malloc: tell glibc's malloc to keep freed memory for reuse, which makes
            large messages faster (see :mod:`wmsim.rpc.memory`). It changes the whole
            process, so it is off unless asked for.
        authority: the ``host:port`` that ``server`` (an address) was resolved from: the
            channel's authority, so TLS verifies that name (see :mod:`wmsim_client.replicas`).
    """

    def __init__(
        self,
        server: str,
        num_rows: int,
        *,
        obs_type: str = "pixels",
        latents: str = DEFAULT_LATENTS,
        token: str | None = None,
        tls: bool | str | os.PathLike = False,
        timeout: float = 30.0,
        tune_malloc: bool = False,
        authority: str | None = None,
    ):
        if obs_type not in OBS_TYPES:
            raise ValueError(f"obs_type must be one of {', '.join(OBS_TYPES)}, got {obs_type!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        check_latents(latents)
        self.address, self.timeout, self.obs_type = server, float(timeout), obs_type
        self.latents = latents
        self.num_rows = num_rows
        if tune_malloc:
            keep_freed_memory()
        token = token if token is not None else os.environ.get("WMSIM_TOKEN") or None
        self._auth = (("authorization", f"Bearer {token}"),) if token else ()
        credentials = _credentials(tls)
        options = channel_options()
        if authority is not None:
            options.append(("grpc.default_authority", authority))
        if credentials is None:
            self.channel = grpc.insecure_channel(server, options=options)
        else:
            self.channel = grpc.secure_channel(server, credentials, options=options)
        self._stub = pb_grpc.DreamStub(self.channel)
        self._session: str | None = None
        self._broken: Exception | None = None
        try:
            spec = self._unary(self._stub.GetSpec, pb.GetSpecRequest())
            self.spec, self.num_contexts = json.loads(spec.spec_json), spec.num_contexts
            self.device = spec.device
            opened = self._unary(self._stub.OpenSession, pb.OpenSessionRequest(
                num_envs=num_rows, obs_type=OBS_TYPE_CODES[obs_type],
                latents=LATENTS_CODES[latents]))  # fmt: skip
        except BaseException:
            self.channel.close()
            raise
        self._session = opened.session_id
        metadata = (*self._auth, (SESSION_KEY, self._session))
        self._stream = _Stream(self.timeout)
        self._stream.call = self._stub.Run(self._stream.requests(), metadata=metadata)
        threading.Thread(target=self._stream.watch, daemon=True, name="wmsim-deadline").start()
        # an env dropped without close() still ends its stream (and so its session)
        self._release = weakref.finalize(self, _Stream.end, self._stream, self.channel)

    def close(self) -> None:
        """End the stream, which closes the session on the server; closing twice is allowed."""
        if self._session is None:
            return
        self._session = None
        self._stream.queue.put(None)  # half-close: the server's handler returns
        if self._broken is None:
            self._stream.waiting_since = time.monotonic()  # the deadline holds here too
            try:
                for _ in self._stream.call:  # until the server has closed the session
                    pass
            except grpc.RpcError:
                pass  # the server is gone or timed out: its rows are freed without us
        self._release()

    # -- plumbing -----------------------------------------------------------------------

    def _unary(self, method, request):
        try:
            return method(request, timeout=self.timeout, metadata=self._auth)
        except grpc.RpcError as error:
            raise self._translate(error) from None

    def _exchange(self, request: pb.StepRequest) -> pb.StepResponse:
        if self._session is None:
            raise RuntimeError("this simulator is closed")
        if self._broken is not None:
            raise ConnectionError(f"the stream to {self.address} broke earlier: {self._broken}")
        stream = self._stream
        stream.queue.put(request)
        stream.waiting_since = time.monotonic()
        try:
            return next(stream.call)
        except grpc.RpcError as error:
            self._broken = self._translate(error)
            raise self._broken from None
        except StopIteration:
            self._broken = ConnectionError(f"the server at {self.address} ended the stream")
            raise self._broken from None
        finally:
            stream.waiting_since = None

    def _translate(self, error: grpc.RpcError) -> Exception:
        code, details = error.code(), error.details()
        where = f"the wmsim server at {self.address}"
        if code == grpc.StatusCode.DEADLINE_EXCEEDED or (
            code == grpc.StatusCode.CANCELLED and self._stream.timed_out
        ):
            return TimeoutError(f"{where} gave no answer within {self.timeout:g} s")
        return refusal(code, details, where)


def refusal(code: grpc.StatusCode, details: str, where: str) -> Exception:
    """The exception a client raises for a call refused with ``code`` (both transports)."""
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return ConnectionError(f"{where} cannot be reached or went away ({details}); {GONE}")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return PermissionError(f"{where} refused the call: {details}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return ValueError(f"{where} refused the input: {details}")
    return ServerError(f"{where}: {details} ({code.name})", code)
