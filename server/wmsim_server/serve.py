"""``wmsim serve``: a bundle's dreams over gRPC for any number of clients.

One asyncio event loop runs gRPC (the gRPC maintainers' advice for Python);
the model runs on one worker thread (see :mod:`wmsim_server.batcher`). The
server binds 127.0.0.1 unless told otherwise, raises the message size limits
(a batch of 256 frames is 3 MB, gRPC's default receive limit 4 MB), serves the
standard health service (and reflection with ``--reflection``), logs one
``key=value`` line per event and a metrics line every ``--metrics-every``
seconds, and on SIGTERM or SIGINT drains: health goes NOT_SERVING, new work is
refused with UNAVAILABLE, every step already taken in is answered, and the
process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from wmsim.errors import UserError
from wmsim.rpc.channel import MAX_MESSAGE_MB, channel_options
from wmsim.rpc.memory import keep_freed_memory
from wmsim.rpc.v1 import dream_pb2 as pb
from wmsim.rpc.v1 import dream_pb2_grpc as pb_grpc
from wmsim.runtime.dreams import Dreams
from wmsim.runtime.graphs import check_decoder_option
from wmsim.store import resolve_model
from wmsim_server.same_host import SameHostServer
from wmsim_server.service import DreamService, Gate, event, request_limit

SERVICE = pb.DESCRIPTOR.services_by_name["Dream"].full_name


@dataclass(frozen=True)
class ServeArgs:
    """Serve a model bundle's dreams over gRPC."""

    model: str | None = None
    """Bundle path, model-store name, or a training run (exported once, then cached; default:
    the game's model, as dream envs resolve it)."""
    game: str = "Breakout"
    """The game whose default model to serve when --model is not given."""
    host: str = "127.0.0.1"
    """Address to bind; 0.0.0.0 exposes the server (then use --token and TLS)."""
    port: int = 50051
    """Port to bind; 0 picks a free one (printed at start)."""
    max_envs: int = 256
    """Dream envs held over all sessions (rows of the state arena)."""
    max_batch: int = 256
    """Envs per model call at most."""
    max_delay_ms: float = 2.0
    """How long a batch waits for more clients' steps after its first one."""
    max_sessions: int = 64
    """Sessions open at once."""
    idle_timeout_s: float = 300.0
    """Close sessions that have had no stream for this long."""
    token: str | None = None
    """Require ``authorization: Bearer TOKEN`` on every call. Prefer --token-file or
    $WMSIM_TOKEN: a token on the command line shows in the process list."""
    token_file: Path | None = None
    """Read the token from this file (its first line)."""
    tls_cert: Path | None = None
    """PEM certificate chain: serve TLS (with --tls-key)."""
    tls_key: Path | None = None
    """PEM private key of --tls-cert."""
    reflection: bool = False
    """Serve gRPC reflection, for grpcurl and similar tools."""
    device: str = "auto"
    """Where onnxruntime runs the model: auto, cpu or cuda."""
    threads: int | None = None
    """Threads of a model call, in onnxruntime and OpenVINO (default: one per core)."""
    decoder: str = "auto"
    """What decodes frames: auto (OpenVINO on the CPU where installed, int8 where the CPU has
    it; onnxruntime elsewhere), onnxruntime (the exported graph exactly), openvino (no int8)
    or openvino-int8. Latents, rewards and ends are the same whichever decodes."""
    warm_starts: bool = True
    """Compute every start context's state before serving (the shipped Breakout's 1,024 in
    about 1 s on 2 cores). Without it a reset computes its context's on first use: 10-30 ms
    more on that step, for every client batched with it."""
    socket: Path | None = None
    """Also serve clients on this machine at this Unix socket path, made readable and
    writable by this user only: the same contract, the frames in shared memory, for a
    fraction of gRPC's cost per step. Clients connect with ``server="local:PATH"``."""
    metrics_every_s: float = 10.0
    """Seconds between metrics lines; 0 for none."""
    max_message_mb: int = MAX_MESSAGE_MB
    """Largest message either way, in MiB."""
    tune_malloc: bool = False
    """Tell glibc's malloc to keep freed memory for reuse: large messages without page faults
    (see wmsim.rpc.memory). It changes the whole process, so a library call leaves it off;
    `wmsim serve` owns its process and turns it on (--no-tune-malloc leaves malloc alone)."""


class LogfmtFormatter(logging.Formatter):
    """``ts=... level=... event=... key=value ...`` lines (values with spaces quoted)."""

    def format(self, record: logging.LogRecord) -> str:  # noqa: D102
        fields = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        return " ".join(f"{k}={_quoted(v)}" for k, v in fields.items())


def _quoted(value) -> str:
    text = str(value)
    return f'"{text}"' if not text or any(c in text for c in ' "=') else text


def _check(args: ServeArgs) -> None:
    for name in ("max_envs", "max_batch", "max_sessions", "max_message_mb"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_delay_ms < 0 or args.idle_timeout_s <= 0:
        raise UserError("--max-delay-ms must be at least 0 and --idle-timeout-s above 0")
    check_decoder_option(args.decoder)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UserError("TLS needs both --tls-cert and --tls-key")
    for path in (args.tls_cert, args.tls_key):
        if path is not None and not path.is_file():
            raise UserError(f"{path} does not exist")


def _token(args: ServeArgs) -> str | None:
    """The token: --token, else the first line of --token-file, else $WMSIM_TOKEN, else None."""
    if args.token is not None and args.token_file is not None:
        raise UserError("give the token once: --token or --token-file")
    if args.token_file is not None:
        try:
            lines = args.token_file.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(f"cannot read --token-file {args.token_file}: {error}") from None
        token = lines[0].strip() if lines else ""
        if not token:
            raise UserError(f"--token-file {args.token_file} is empty; write the token in it")
        return token
    return args.token or os.environ.get("WMSIM_TOKEN") or None


def _metrics(service: DreamService, every: float):
    async def loop():
        while True:
            await asyncio.sleep(every)
            stats = service.batcher.take_stats()
            seconds = time.perf_counter() - stats.since
            delays = np.array(stats.queue_delays or [0.0]) * 1000
            event(
                "metrics",
                steps_per_s=round(stats.steps / seconds, 1),
                batches=stats.batches,
                batch_fill=round(
                    stats.filled / max(stats.batches, 1) / service.batcher.max_batch, 3
                ),
                queue_delay_ms_p50=round(float(np.percentile(delays, 50)), 3),
                queue_delay_ms_p99=round(float(np.percentile(delays, 99)), 3),
                sessions=len(service.sessions),
                streams=len(service.sessions.driven()),
                free_envs=service.sessions.free,
            )

    return loop()


async def run_server(args: ServeArgs, ready=None) -> int:
    """Serve until SIGTERM or SIGINT; then drain and return 0.

    Args:
        args: the options.
        ready: called with the bound port once the server accepts calls.
    """
    _check(args)
    token = _token(args)
    # before the (slow) model load: a SIGTERM during start-up drains as soon as it can
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.tune_malloc:
        keep_freed_memory()
    path = resolve_model(args.game, args.model)
    # every core for a model call: its clients wait for it, and between calls the runtimes
    # hardly spin (OpenVINO's workers 0.18 CPU-s per idle second), so gRPC has the cores back.
    # On 2 cores, one client of 64 pixel envs stepped 8,312/s against 5,354 with one thread;
    # of 64 latent envs 33,344 against 34,785
    threads = args.threads or os.cpu_count() or 1
    dreams = Dreams(path, args.max_envs, device=args.device, threads=threads, decoder=args.decoder)
    if args.warm_starts:
        start = time.perf_counter()
        runtime = dreams.runtime
        await loop.run_in_executor(None, runtime.observe_contexts, np.arange(runtime.num_contexts))
        seconds = round(time.perf_counter() - start, 2)
        event("warmed", contexts=runtime.num_contexts, seconds=seconds)
    service = DreamService(
        dreams,
        max_batch=args.max_batch,
        max_delay=args.max_delay_ms / 1000,
        max_sessions=args.max_sessions,
        idle_timeout=args.idle_timeout_s,
    )
    server = grpc.aio.server(
        interceptors=[Gate(token)],
        options=channel_options(args.max_message_mb, request_limit(args.max_envs)),
    )
    pb_grpc.add_DreamServicer_to_server(service, server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
    if args.reflection:
        from grpc_reflection.v1alpha import reflection

        names.append(reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
    address = f"{args.host}:{args.port}"
    try:
        if args.tls_cert is not None:
            key, cert = args.tls_key.read_bytes(), args.tls_cert.read_bytes()
            port = server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
        else:
            port = server.add_insecure_port(address)
    except RuntimeError:  # gRPC's "Failed to bind"
        port = 0
    if port == 0:
        raise UserError(
            f"cannot bind {address}: the port is in use or the host is no address of this "
            "machine; pick another --port (0 takes a free one) or --host"
        )
    same_host = None
    if args.socket is not None:
        same_host = SameHostServer(service, args.socket, loop)
        same_host.start()  # a path that cannot be taken stops the start-up here
    if token and args.tls_cert is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        event(
            "token_without_tls",
            logging.WARNING,
            advice="the token crosses the network in clear text; add --tls-cert, --tls-key",
        )
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    await health.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    service.batcher.start()
    tasks = [asyncio.ensure_future(service.reap(min(10.0, args.idle_timeout_s / 2)))]
    if args.metrics_every_s > 0:
        tasks.append(asyncio.ensure_future(_metrics(service, args.metrics_every_s)))
    event(
        "serving",
        address=f"{args.host}:{port}",
        model=path,
        game=dreams.spec["game"],
        device=dreams.runtime.graphs.device,
        decoder=dreams.runtime.graphs.decoder or "none",
        threads=threads,
        max_envs=args.max_envs,
        max_batch=args.max_batch,
        tls=args.tls_cert is not None,
        token=bool(token),
        socket=args.socket or "",
    )
    if ready is not None:
        ready(port)
    await stop.wait()
    event("draining", sessions=len(service.sessions), streams=len(service.sessions.driven()))
    await health.enter_graceful_shutdown()
    service.draining = True
    await service.batcher.drain()  # every step taken in is answered
    if same_host is not None:  # its threads end their sessions on this loop: not blocked here
        await loop.run_in_executor(None, same_host.close)
    await server.stop(grace=2.0)
    for task in tasks:
        task.cancel()
    event("stopped")
    return 0


def serve(args: ServeArgs) -> int:
    """Run the server in this process (``wmsim serve``) until SIGTERM or SIGINT.

    While it runs, its ``key=value`` lines go to stderr, unless logging is already set up
    (a handler on ``wmsim.serve`` or above it): then that setup decides where they go. The
    logger is left as it was found, so calling this again logs each line once.
    """
    with _logging_to_stderr(logging.getLogger("wmsim.serve")):
        return asyncio.run(run_server(args))


@contextlib.contextmanager
def _logging_to_stderr(logger: logging.Logger):
    """Send ``logger``'s INFO lines to stderr for the duration, if nothing handles them yet."""
    if logger.hasHandlers():
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
