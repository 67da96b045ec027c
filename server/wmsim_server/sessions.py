"""Sessions: which rows of the server's dream arena belong to which client.

A session holds ``num_envs`` rows of one :class:`wmsim.runtime.dreams.Dreams`
arena, addressed by the client as envs ``0 .. num_envs - 1``. Rows come from a
free list, so a closed session's rows are reused at once. Plain Python, no
gRPC: the service maps these errors to status codes.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

import numpy as np


def shown_id(session_id: str, limit: int = 40) -> str:
    """A session id as an error message shows it: cut, since a client may send anything."""
    return (
        repr(session_id)
        if len(session_id) <= limit
        else f"{session_id[:limit]!r}... ({len(session_id)} characters)"
    )


class NoRoom(Exception):
    """Not enough free rows for a session (RESOURCE_EXHAUSTED)."""


class UnknownSession(Exception):
    """No open session has this id (NOT_FOUND)."""


@dataclass(eq=False)  # compared and hashed by identity: sessions live in sets
class Session:
    """One client's envs: ``rows[i]`` is the arena row of its env ``i``."""

    id: str
    rows: np.ndarray
    obs_type: str
    peer: str
    ready: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    """Per env: reset at least once, so it may step."""
    all_ready: bool = False
    """Every env was reset at least once: a request's envs need no such check."""
    started: bool = False
    """Its first request was taken: its rows got fresh generators with it."""
    streaming: bool = False
    """A Run stream (or a same-host connection) drives it now; idle reaping leaves it alone."""
    same_host: bool = False
    """A same-host connection drives it (:mod:`wmsim_server.same_host`), not a Run stream."""
    waiting: bool = False
    """Its stream waits for the answer to a step."""
    last_used: float = field(default_factory=time.monotonic)
    steps: int = 0

    @property
    def num_envs(self) -> int:
        """Envs in the session."""
        return len(self.rows)


class Sessions:
    """Open sessions over ``capacity`` arena rows.

    Args:
        capacity: rows in the arena (envs over all sessions).
        max_sessions: sessions open at once.
    """

    def __init__(self, capacity: int, max_sessions: int):
        self.capacity, self.max_sessions = capacity, max_sessions
        self._free = list(range(capacity - 1, -1, -1))  # popped from the end: low rows first
        self._open: dict[str, Session] = {}

    @property
    def free(self) -> int:
        """Rows not held by any session."""
        return len(self._free)

    def __len__(self) -> int:
        return len(self._open)

    def open(self, num_envs: int, obs_type: str, peer: str) -> Session:
        """A new session of ``num_envs`` rows.

        Raises:
            NoRoom: too many sessions, or not enough free rows.
        """
        if len(self._open) >= self.max_sessions:
            raise NoRoom(
                f"the server holds its maximum of {self.max_sessions} sessions; close one, "
                "or start the server with a larger --max-sessions"
            )
        if num_envs > len(self._free):
            raise NoRoom(
                f"{num_envs} envs asked for, {len(self._free)} of {self.capacity} free; ask for "
                "fewer, or start the server with a larger --max-envs"
            )
        rows = np.array([self._free.pop() for _ in range(num_envs)], np.int64)
        session = Session(secrets.token_hex(16), rows, obs_type, peer, np.zeros(num_envs, bool))
        self._open[session.id] = session
        return session

    def get(self, session_id: str) -> Session:
        """The open session ``session_id``.

        Raises:
            UnknownSession: it was never opened, or was closed or reaped.
        """
        session = self._open.get(session_id)
        if session is None:
            raise UnknownSession(
                f"no open session {shown_id(session_id)} (closed, reaped after sitting idle, or "
                "opened on a server that has since restarted); open a new one"
            )
        return session

    def close(self, session_id: str) -> Session | None:
        """Close a session and free its rows; None if it was not open."""
        session = self._open.pop(session_id, None)
        if session is not None:
            self._free.extend(session.rows[::-1].tolist())
        return session

    def driven(self) -> list[Session]:
        """Sessions a Run stream drives now."""
        return [s for s in self._open.values() if s.streaming]

    def idle(self, older_than: float) -> list[Session]:
        """Sessions without a stream, unused for more than ``older_than`` seconds."""
        now = time.monotonic()
        return [
            s for s in self._open.values() if not s.streaming and now - s.last_used > older_than
        ]
