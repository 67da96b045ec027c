"""Clients on the server's host: the Dream contract over a Unix socket (``--socket PATH``).

The protocol is :mod:`wmsim.rpc.same_host`. Each connection is one session and has a
thread of its own, which reads a request, checks it as the gRPC service does
(:meth:`DreamService.checked_job`), hands the job to the model's runner itself
(:class:`wmsim_server.batcher.Runner`: batched with every job pending then, from gRPC
streams and other same-host clients alike) and writes the answer's arrays into the
session's shared memory. No event loop, executor or HTTP/2 stands in between, which is
what a step over gRPC mostly pays for on a small machine (docs/serving.md).

Sessions are opened and closed on the server's event loop, like gRPC's, so the session
table has one owner. A connection that sends anything wrong gets an ERROR naming the
problem with the status gRPC would give, and is closed with its session; the server
goes on serving everyone else.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import mmap
import os
import socket
import stat
import threading
import time
from pathlib import Path

import numpy as np

from wmsim.errors import UserError
from wmsim.rpc import same_host as wire
from wmsim.rpc import tensors
from wmsim.rpc.same_host import Refused
from wmsim.rpc.v1 import dream_pb2 as pb
from wmsim_server.batcher import Job
from wmsim_server.service import DreamService, event, request_limit

PEER = "same-host"
OPEN_WITHIN = 30.0
"""Seconds a new connection has to open its session before it is dropped."""


def _bind(path: Path) -> socket.socket:
    """A listening Unix socket at ``path``, readable and writable by this user only.

    A socket file left by a server that is gone is replaced; anything else is refused.
    """
    if path.is_symlink() or (path.exists() and not stat.S_ISSOCK(path.stat().st_mode)):
        raise UserError(f"--socket {path} exists and is not a socket; give another path")
    if path.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nobody listens there: a server that is gone left it
        else:
            raise UserError(f"another server listens at --socket {path}; give another path")
        finally:
            probe.close()
    if not path.parent.is_dir():
        raise UserError(f"--socket {path}: the folder {path.parent} does not exist")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mask = os.umask(0o177)  # the file is created 0600, never briefly open to others
    try:
        listener.bind(str(path))
    except OSError as error:
        listener.close()
        raise UserError(f"cannot listen at --socket {path}: {error.strerror}") from None
    finally:
        os.umask(mask)
    listener.listen(64)
    return listener


def _shared_memory(size: int) -> tuple[int, mmap.mmap] | None:
    """An anonymous shared memory file of ``size`` bytes and its map; None where there is none."""
    if not hasattr(os, "memfd_create"):
        return None
    fd = os.memfd_create("wmsim-frames", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, max(size, 1))
        return fd, mmap.mmap(fd, max(size, 1))
    except OSError:
        os.close(fd)
        return None


def _response(job: Job, shared: mmap.mmap | None) -> pb.StepResponse:
    """The finished job as a StepResponse, its large arrays written into ``shared``."""
    response = pb.StepResponse(
        contexts=tensors.encode(job.contexts),
        reward=tensors.encode(job.reward),
        continue_prob=tensors.encode(job.cont),
        terminated=tensors.encode(job.terminated),
    )
    arrays = {"obs": job.obs, "reset_obs": job.reset_obs, "frames": job.frames}
    for name, array in arrays.items():
        if shared is None:
            getattr(response, name).CopyFrom(tensors.encode(array))
        else:
            getattr(response, name).CopyFrom(pb.Tensor(dtype=array.dtype.name, shape=array.shape))
    for name, offset, dtype, shape in wire.layout(response):
        out = np.ndarray(shape, dtype, buffer=shared, offset=offset)
        out[...] = arrays[name]
    return response


class SameHostServer:
    """Same-host clients of ``service`` at ``path``; see the module docstring.

    Args:
        service: the gRPC service whose sessions, checks and runner these clients share.
        path: where the socket file goes.
        loop: the server's event loop (sessions are opened and closed there).
    """

    def __init__(self, service: DreamService, path: Path, loop: asyncio.AbstractEventLoop):
        self.service, self.path, self.loop = service, Path(path), loop
        self.limit = request_limit(service.dreams.capacity)
        spec = service.dreams.spec
        self._frame_nbytes = int(np.prod(spec["observation"]["shape"]))  # uint8 frames
        latent = spec["latent"]
        self._latent_nbytes = int(np.prod(latent["shape"])) * np.dtype(latent["dtype"]).itemsize
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._closing = False

    def start(self) -> None:
        """Bind the socket and take connections on a thread of its own."""
        self._listener = _bind(self.path)
        thread = threading.Thread(target=self._accept, name="wmsim-same-host", daemon=True)
        thread.start()
        self._threads.add(thread)

    def close(self, timeout: float = 5.0) -> None:
        """Take no more connections, end the open ones (and their sessions), remove the file."""
        self._closing = True
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            with contextlib.suppress(OSError):
                self.path.unlink()
        with self._lock:
            connections, threads = list(self._connections), list(self._threads)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def _accept(self) -> None:
        while not self._closing:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # closed
            thread = threading.Thread(
                target=self._serve, args=(connection,), name="wmsim-same-host-client", daemon=True
            )
            with self._lock:
                self._connections.add(connection)
                self._threads.add(thread)
            thread.start()

    def _on_loop(self, call, *args):
        """``call(*args)`` on the event loop's thread; its result, or what it raised."""
        future: concurrent.futures.Future = concurrent.futures.Future()

        def run():
            try:
                future.set_result(call(*args))
            except BaseException as error:  # handed to the waiting thread
                future.set_exception(error)

        try:
            self.loop.call_soon_threadsafe(run)
        except RuntimeError:  # the loop is closed: the server is going
            raise Refused("UNAVAILABLE", "the server is shutting down") from None
        return future.result()

    def _serve(self, connection: socket.socket) -> None:
        """One connection: open its session, answer its steps, close both however it ends."""
        session, shared, ended = None, None, False
        try:
            connection.settimeout(OPEN_WITHIN)
            kind, payload, _ = wire.receive(connection, self.limit)
            connection.settimeout(None)
            if kind != wire.OPEN:
                raise Refused("INVALID_ARGUMENT", "open a session first (an OPEN message)")
            request = wire.parse(pb.OpenSessionRequest, payload)
            session = self._on_loop(self.service.open_session, request, PEER)
            session.streaming = session.same_host = True
            obs = self._frame_nbytes if session.obs_type == "pixels" else self._latent_nbytes
            size = wire.shared_size(session.num_envs, obs, self._frame_nbytes)
            memory = _shared_memory(size)
            spec = self._on_loop(self.service.spec_response).SerializeToString()
            if memory is None:
                wire.send(connection, wire.OPENED, spec)
            else:
                fd, shared = memory
                try:
                    wire.send(connection, wire.OPENED, spec, (fd,))
                finally:
                    os.close(fd)  # the map and the client's copy keep it
            ended = self._steps(connection, session, shared)
        except Refused as refused:
            with contextlib.suppress(OSError):
                wire.send(connection, wire.ERROR, refused.payload())
        except (OSError, EOFError):
            pass  # the client went away: its session ends below
        except Exception as error:  # a bug: this client hears of it, the others go on
            event("same_host_failed", logging.ERROR, error=repr(error)[:300])
            with contextlib.suppress(OSError):
                wire.send(connection, wire.ERROR, Refused("INTERNAL", repr(error)[:500]).payload())
        finally:
            if session is not None:
                with contextlib.suppress(Refused):
                    self._on_loop(self.service.end_session, session, ended)
            if shared is not None:
                shared.close()
            connection.close()
            with self._lock:
                self._connections.discard(connection)
                self._threads.discard(threading.current_thread())

    def _steps(self, connection: socket.socket, session, shared: mmap.mmap | None) -> bool:
        """Answer StepRequests until a CLOSE (True) or the end of the connection (False)."""
        runner = self.service.batcher.runner
        while True:
            try:
                kind, payload, _ = wire.receive(connection, self.limit)
            except EOFError:
                return False
            if kind == wire.CLOSE:
                wire.send(connection, wire.CLOSED)
                return True
            if kind != wire.STEP:
                raise Refused("INVALID_ARGUMENT", f"unknown message kind {kind}")
            request = wire.parse(pb.StepRequest, payload)
            session.last_used = time.monotonic()
            job = self.service.checked_job(request, session)
            session.waiting = True
            try:
                runner.run([job])
            except Exception as error:  # the model failed on this batch
                event("batch_failed", logging.ERROR, error=repr(error)[:300])
                raise Refused(
                    "INTERNAL", f"the model failed on this step: {error!r}"[:500]
                ) from None
            finally:
                session.waiting = False
            session.steps += 1
            wire.send(connection, wire.STEPPED, _response(job, shared).SerializeToString())
