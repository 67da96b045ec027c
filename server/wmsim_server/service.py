"""The Dream gRPC service: requests checked, mapped to arena rows, batched, answered.

Every bad request gets a status naming the problem, and the server goes on
serving everyone else: INVALID_ARGUMENT (bad envs, actions, seeds, tensors),
FAILED_PRECONDITION (stepping an env never reset, a second stream on one
session), NOT_FOUND (unknown session), RESOURCE_EXHAUSTED (no room),
UNAUTHENTICATED (token), UNAVAILABLE (shutting down). A client whose stream
ends, however it ends (closed, refused, the client killed or its network
gone), ends its session: its rows are freed at once.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import Any

import grpc
import numpy as np

from wmsim import __version__
from wmsim.rpc import tensors
from wmsim.rpc.same_host import Refused
from wmsim.rpc.v1 import dream_pb2 as pb
from wmsim.rpc.v1 import dream_pb2_grpc as pb_grpc
from wmsim.runtime.dreams import Dreams
from wmsim_server.batcher import Batcher, Job
from wmsim_server.sessions import NoRoom, Session, Sessions, UnknownSession, shown_id

SESSION_KEY = "wmsim-session"
"""Request metadata naming the session a Run stream drives."""
OBS_TYPES = {
    pb.OBS_TYPE_UNSPECIFIED: "pixels",
    pb.OBS_TYPE_PIXELS: "pixels",
    pb.OBS_TYPE_LATENT: "latent",
}
LATENTS = {
    pb.LATENTS_UNSPECIFIED: "sampled",
    pb.LATENTS_SAMPLED: "sampled",
    pb.LATENTS_MODE: "mode",
}
ACTIVE_WINDOW = 0.25
"""Seconds since its last request within which a stream counts as stepping: a batch waits
(up to max_delay) only for such streams, never for idle ones."""

log = logging.getLogger("wmsim.serve")


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured line: ``event=name key=value ...``."""
    log.log(level, name, extra={"fields": fields})


def _shown(values: np.ndarray, limit: int = 8) -> str:
    """A short rendering of ``values`` for an error (status details must stay small)."""
    items = values.ravel()
    text = ", ".join(str(v) for v in items[:limit].tolist())
    return f"[{text}]" if len(items) <= limit else f"[{text}, ...] ({len(items)} in all)"


def _envs(values, num_envs: int, what: str) -> np.ndarray:
    envs = np.asarray(values, np.int64)
    if not len(envs):  # most fields of most requests: no checks to pay for
        return envs
    if envs.min() < 0 or envs.max() >= num_envs:
        raise ValueError(f"{what} must be env indices in [0, {num_envs}), got {_shown(envs)}")
    if len(envs) > 1:
        seen = np.zeros(num_envs, bool)
        seen[envs] = True
        if np.count_nonzero(seen) != len(envs):
            raise ValueError(f"{what} must not repeat an env, got {_shown(envs)}")
    return envs


def job_from(request: pb.StepRequest, session: Session, num_actions: int) -> Job:
    """A checked StepRequest as a batcher job in arena rows.

    Raises:
        ValueError: a bad env index, action or tensor (INVALID_ARGUMENT).
        RuntimeError: stepping an env never reset (FAILED_PRECONDITION).
    """
    n = session.num_envs
    reset_envs = _envs([r.env for r in request.resets], n, "resets")
    step_envs = _envs(request.step_envs, n, "step_envs")
    frame_envs = _envs(request.frame_envs, n, "frame_envs")
    if len(reset_envs) and len(step_envs) and np.intersect1d(reset_envs, step_envs).size:
        raise ValueError("an env is either reset or stepped in one request, not both")
    actions = np.zeros(0, np.int64)
    if request.HasField("actions"):
        actions = tensors.decode(request.actions, "actions")
    if actions.shape != (len(step_envs),) or actions.dtype.kind not in "iu":
        raise ValueError(
            f"actions must be an integer tensor of shape ({len(step_envs)},), one per step env; "
            f"got {actions.dtype} {_shown(np.array(actions.shape))}"
        )
    if len(actions) and (actions.min() < 0 or actions.max() >= num_actions):
        raise ValueError(f"actions must be in [0, {num_actions}), got {_shown(actions)}")
    if not session.all_ready:
        never = step_envs[~session.ready[step_envs]]
        if len(never):
            raise RuntimeError(f"reset envs {_shown(never)} before stepping them")
        if len(frame_envs):
            unseen = frame_envs[~(session.ready[frame_envs] | np.isin(frame_envs, reset_envs))]
            if len(unseen):  # a row's frame before its first reset would be its last owner's
                raise RuntimeError(f"reset envs {_shown(unseen)} before asking for their frames")
        if len(reset_envs):
            session.ready[reset_envs] = True
            session.all_ready = bool(session.ready.all())
    seeds = [r.seed if r.HasField("seed") else None for r in request.resets]
    job = Job(
        session.obs_type,
        session.rows[reset_envs],
        seeds,
        session.rows[step_envs],
        actions.astype(np.int64),
        session.rows[frame_envs],
    )
    if not session.started:  # its rows may be another session's: not their random streams
        job.fresh_rows, session.started = session.rows, True
    return job


def response_of(job: Job) -> pb.StepResponse:
    """A finished job as the StepResponse."""
    return pb.StepResponse(
        reset_obs=tensors.encode(job.reset_obs),
        contexts=tensors.encode(job.contexts),
        obs=tensors.encode(job.obs),
        reward=tensors.encode(job.reward),
        continue_prob=tensors.encode(job.cont),
        terminated=tensors.encode(job.terminated),
        frames=tensors.encode(job.frames),
    )


class DreamService(pb_grpc.DreamServicer):
    """The Dream service over one arena; see the module docstring.

    Args:
        dreams: the arena of dream rows.
        max_batch, max_delay: as for :class:`wmsim_server.batcher.Batcher`.
        max_sessions: sessions open at once.
        idle_timeout: seconds after which a session without a stream is closed.
    """

    def __init__(
        self,
        dreams: Dreams,
        *,
        max_batch: int,
        max_delay: float,
        max_sessions: int,
        idle_timeout: float,
    ):
        self.dreams, self.idle_timeout = dreams, idle_timeout
        self.sessions = Sessions(dreams.capacity, max_sessions)
        self.batcher = Batcher(dreams, max_batch, max_delay, self.could_send)
        self.draining = False
        self.num_actions = len(dreams.spec["actions"])
        self._spec_json = json.dumps(dreams.spec)

    def spec_response(self) -> pb.GetSpecResponse:
        """What GetSpec answers (and a same-host client's OPENED carries)."""
        return pb.GetSpecResponse(
            spec_json=self._spec_json,
            num_contexts=self.dreams.num_contexts,
            max_envs=self.dreams.capacity,
            free_envs=self.sessions.free,
            max_batch=self.batcher.max_batch,
            server_version=__version__,
            device=self.dreams.runtime.graphs.device,
            envs_stepped=self.batcher.runner.envs_stepped,
            model_calls=self.batcher.runner.model_calls,
        )

    async def GetSpec(self, request, context) -> pb.GetSpecResponse:  # noqa: D102
        return self.spec_response()

    def open_session(self, request: pb.OpenSessionRequest, peer: str) -> Session:
        """A new session, on the event loop's thread.

        Raises:
            Refused: UNAVAILABLE (draining), INVALID_ARGUMENT or RESOURCE_EXHAUSTED.
        """
        if self.draining:
            raise Refused("UNAVAILABLE", "the server is shutting down")
        obs_type, latents = OBS_TYPES.get(request.obs_type), LATENTS.get(request.latents)
        if obs_type is None or latents is None or request.num_envs < 1:
            raise Refused(
                "INVALID_ARGUMENT",
                f"num_envs must be at least 1, obs_type one of {sorted(pb.ObsType.keys())} and "
                f"latents one of {sorted(pb.Latents.keys())}; got {request.num_envs}, "
                f"{request.obs_type} and {request.latents}",
            )
        try:
            session = self.sessions.open(request.num_envs, obs_type, peer)
        except NoRoom as error:
            raise Refused("RESOURCE_EXHAUSTED", str(error)) from None
        # free rows: no batch steps them until this session's first request
        self.dreams.mode[session.rows] = latents == "mode"
        event(
            "session_open",
            session=session.id[:8],
            envs=session.num_envs,
            obs=obs_type,
            latents=latents,
            peer=session.peer,
            free=self.sessions.free,
        )
        return session

    async def OpenSession(self, request, context) -> pb.OpenSessionResponse:  # noqa: D102
        try:
            session = self.open_session(request, context.peer())
        except Refused as refused:
            await context.abort(getattr(grpc.StatusCode, refused.code), refused.message)
        return pb.OpenSessionResponse(session_id=session.id)

    async def CloseSession(self, request, context) -> pb.CloseSessionResponse:  # noqa: D102
        try:
            if self.sessions.get(request.session_id).streaming:
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "a Run stream drives this session: end the stream, which closes it",
                )
        except UnknownSession:
            pass
        if self.sessions.close(request.session_id) is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"no open session {shown_id(request.session_id)}"
            )
        event("session_close", session=request.session_id[:8], free=self.sessions.free)
        return pb.CloseSessionResponse()

    async def _session_of(self, context) -> Session:
        metadata = dict(context.invocation_metadata() or ())
        session_id = metadata.get(SESSION_KEY)
        if not session_id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"a Run stream needs the {SESSION_KEY!r} metadata"
            )
        try:
            session = self.sessions.get(session_id)
        except UnknownSession as error:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        if session.streaming:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "another Run stream already drives this session",
            )
        return session

    async def Run(self, request_iterator, context):  # noqa: D102
        session = await self._session_of(context)
        session.streaming = True
        ended = False
        try:
            async for request in request_iterator:
                session.last_used = time.monotonic()
                job = await self._checked(request, session, context)
                session.waiting = True
                try:
                    job = await self.batcher.submit(job)
                except Exception as error:  # the model failed on this batch
                    event("batch_failed", logging.ERROR, error=repr(error)[:300])
                    message = f"the model failed on this step: {error!r}"[:500]
                    await context.abort(grpc.StatusCode.INTERNAL, message)
                finally:
                    session.waiting = False
                session.steps += 1
                yield response_of(job)
            ended = True
        finally:
            # however the stream ends (done, refused, client killed, network gone, shutdown:
            # gRPC shows a vanished client as a cancellation, a closed generator or a plain end
            # of the requests), the session ends with it and its rows are free at once
            self.end_session(session, ended)

    def checked_job(self, request: pb.StepRequest, session: Session) -> Job:
        """The request as a job for the runner.

        Raises:
            Refused: UNAVAILABLE (draining), INVALID_ARGUMENT or FAILED_PRECONDITION.
        """
        if self.draining:
            raise Refused("UNAVAILABLE", "the server is shutting down")
        try:
            return job_from(request, session, self.num_actions)
        except ValueError as error:
            raise Refused("INVALID_ARGUMENT", str(error)) from None
        except RuntimeError as error:
            raise Refused("FAILED_PRECONDITION", str(error)) from None

    async def _checked(self, request: pb.StepRequest, session: Session, context) -> Job:
        """The request as a job, or an abort with the status that fits."""
        try:
            return self.checked_job(request, session)
        except Refused as refused:
            await context.abort(getattr(grpc.StatusCode, refused.code), refused.message)

    def end_session(self, session: Session, ended: bool) -> None:
        """Close a driven session as its stream or connection ends (``ended``: cleanly)."""
        session.streaming = False
        if self.sessions.close(session.id) is not None:
            how = "session_end" if ended else "session_lost"
            event(how, session=session.id[:8], steps=session.steps, free=self.sessions.free)

    def could_send(self) -> int:
        """Run streams that stepped lately and are not waiting for an answer: worth waiting for.

        Same-host sessions do not count: their steps go to the runner, never to the batcher.
        """
        now = time.monotonic()
        return sum(
            not s.waiting and now - s.last_used < ACTIVE_WINDOW and not s.same_host
            for s in self.sessions.driven()
        )

    async def reap(self, every: float) -> None:
        """Close sessions without a stream idle for ``idle_timeout``, checking ``every`` seconds."""
        while True:
            await asyncio.sleep(every)
            for session in self.sessions.idle(self.idle_timeout):
                self.sessions.close(session.id)
                event(
                    "session_reaped",
                    session=session.id[:8],
                    idle_s=round(self.idle_timeout),
                    free=self.sessions.free,
                )


class Gate(grpc.aio.ServerInterceptor):
    """Every Dream call passes here first: the token, then the request's bytes.

    - With a token, calls without ``authorization: Bearer <token>`` are refused
      (UNAUTHENTICATED) from their metadata alone: their bodies are never parsed.
      Health checks and reflection stay open, so load balancers and tools can probe.
    - The Dream service's requests arrive as bytes and are parsed here, so bytes
      that are no such message get INVALID_ARGUMENT (gRPC itself says UNKNOWN).

    The request-size limit (:func:`request_limit`) is gRPC's own: a message over it
    is refused from its length prefix, before its body is kept.
    """

    OPEN = ("/grpc.health.", "/grpc.reflection.")

    def __init__(self, token: str | None):
        self._expected = f"Bearer {token}".encode() if token else None

    async def intercept_service(self, continuation, details):  # noqa: D102
        handler = await continuation(details)
        if handler is None or details.method.startswith(self.OPEN):
            return handler
        if self._expected is not None:
            given = dict(details.invocation_metadata or ()).get("authorization", "")
            if not hmac.compare_digest(str(given).encode(), self._expected):
                return _refusing(
                    handler,
                    "missing or wrong bearer token: pass token= (or WMSIM_TOKEN) "
                    "matching the server's token",
                )
        return _parsing(handler) if handler.request_deserializer is not None else handler


_MAKERS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _behaviour(handler: grpc.RpcMethodHandler):
    kind = (
        ("stream" if handler.request_streaming else "unary")
        + "_"
        + ("stream" if handler.response_streaming else "unary")
    )
    return getattr(handler, kind)


def _refusing(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that aborts with UNAUTHENTICATED.

    It has no deserializer: the request's bytes are never parsed.
    """

    async def refuse(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    make = _MAKERS[(handler.request_streaming, handler.response_streaming)]
    return make(refuse, response_serializer=handler.response_serializer)


def _parsing(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler``, taking its requests as bytes and parsing them itself.

    Bytes that are not the call's message are INVALID_ARGUMENT.
    """
    parse, behaviour = handler.request_deserializer, _behaviour(handler)

    async def parsed(raw: bytes, context):
        try:
            return parse(raw)
        except Exception as error:  # protobuf's DecodeError, or anything else the bytes cause
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request is not a valid message of this call ({str(error)[:200]})",
            )

    if handler.request_streaming:

        async def requests(raw_requests, context):
            async for raw in raw_requests:
                yield await parsed(raw, context)

        if handler.response_streaming:

            async def wrapped(raw_requests, context):
                async for response in behaviour(requests(raw_requests, context), context):
                    yield response

        else:

            async def wrapped(raw_requests, context):
                return await behaviour(requests(raw_requests, context), context)

    elif handler.response_streaming:

        async def wrapped(raw, context):
            async for response in behaviour(await parsed(raw, context), context):
                yield response

    else:

        async def wrapped(raw, context):
            return await behaviour(await parsed(raw, context), context)

    make = _MAKERS[(handler.request_streaming, handler.response_streaming)]
    return make(wrapped, response_serializer=handler.response_serializer)


REQUEST_BYTES_PER_ENV = 64
"""Bytes one env can add to the largest legal request: a reset with a seed (19), a step
env (5), its action (8) and a frame env (5), with room to spare."""


def request_limit(max_envs: int) -> int:
    """The largest request the server reads, in bytes.

    That is every env reset, stepped and framed at once, plus 64 KiB for everything else.
    Requests are tiny; only responses carry frames.
    """
    return (1 << 16) + REQUEST_BYTES_PER_ENV * max_envs
