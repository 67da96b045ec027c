"""ReplicatedSimulator: dream rows spread over several ``wmsim serve`` replicas.

A session is server-held state (its rows' recurrent state and random generators), so every
call of a session must reach the replica that opened it; a balancer that sends each call to
any replica breaks it. This simulator therefore addresses the replicas directly: one
:class:`wmsim_client.remote.RemoteSimulator` (a channel, a session and its ``Run`` stream) per
replica, the rows split as evenly as possible (rows 0..k-1 on the first replica, the next on
the second, ...), and every call fanned out to the replicas concerned at once, on a thread
each, the answers put back in row order. Each row draws from its own generator, seeded by the
seed the env sends for that row, so the same seeds give the same dreams whichever replica
holds a row.

A replica that goes away (a call to it ends in ``ConnectionError`` or ``TimeoutError``) fails
only the rows it held: the call raises :class:`wmsim_client.simulator.ReplicaLost` naming the
replica and those rows, once the other replicas have answered. Calls that touch a lost row
raise it again, at once; rows on the other replicas step on. Resetting a lost row reopens it
on the surviving replicas (new sessions, the lost rows split evenly over them), so
``env.reset(seed=s)`` resumes every sub-env, with the dreams that seed gives anywhere. A lost
replica is never dialled again by this simulator: make the env again to use it once it is back.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from wmsim_client.remote import GONE, RemoteSimulator
from wmsim_client.simulator import ReplicaLost, Stepped

LOST = (ConnectionError, TimeoutError)
"""What a RemoteSimulator raises when its server is gone or silent: its session is over."""


@dataclass(frozen=True)
class Replica:
    """One ``wmsim serve`` to dial."""

    address: str
    """``ip:port`` (``[ip]:port`` for IPv6), or ``host:port`` as given."""
    authority: str | None = None
    """The ``host:port`` it was resolved from: the name TLS verifies and the server sees."""


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port).

    Raises:
        ValueError: no port, or not a number.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"a replica is host:port (or [ipv6]:port), got {address!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve(servers: Sequence[str]) -> list[Replica]:
    """The replicas ``servers`` name: an IP address is one, a name is every address it has.

    A name is resolved once, here (``socket.getaddrinfo``), so a DNS name with one record per
    replica (a headless service, for example) lists them all; its channels keep the name as
    their authority, for TLS. A name with an IPv4 and an IPv6 address counts twice.

    Raises:
        ValueError: an entry is no ``host:port``, or two entries give the same address.
        ConnectionError: a name does not resolve.
    """
    if isinstance(servers, str) or not servers:
        raise ValueError(f"replicas are a non-empty list of host:port, got {servers!r}")
    replicas: list[Replica] = []
    for server in servers:
        host, port = split_address(server)
        if _is_ip(host):
            replicas.append(Replica(server))
            continue
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise ConnectionError(
                f"cannot resolve {host!r} ({error}); check the name, or list the replicas' "
                "addresses"
            ) from None
        ips = dict.fromkeys(info[4][0] for info in found)  # in the resolver's order, once each
        replicas += [
            Replica(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}", server) for ip in ips
        ]
    addresses = [r.address for r in replicas]
    twice = sorted({a for a in addresses if addresses.count(a) > 1})
    if twice:
        raise ValueError(f"the replicas list {', '.join(twice)} more than once: {list(servers)}")
    return replicas


class ReplicatedSimulator:
    """``num_rows`` dream rows over the ``wmsim serve`` replicas ``servers``; see the module.

    Args:
        servers: ``host:port`` of each replica; a name stands for every address it resolves to.
        num_rows: dream rows (envs) in all; a replica gets none when there are fewer rows.
        options: ``obs_type``, ``latents``, ``token``, ``tls``, ``timeout`` and
            ``tune_malloc``, as :class:`wmsim_client.remote.RemoteSimulator` takes them, for
            every replica.

    Raises:
        ConnectionError: a replica cannot be reached (every one must be, to start).
        ValueError: the replicas serve different models.
    """

    def __init__(self, servers: Sequence[str], num_rows: int, **options: Any):
        self.replicas = resolve(servers)
        self.address = ", ".join(r.address for r in self.replicas)
        self.num_rows, self._options = num_rows, options
        self._sessions: list[RemoteSimulator | None] = []  # None once closed
        self._replica_of: list[Replica] = []  # each session's replica
        self._home = np.full(num_rows, -1, np.int64)  # each row's session
        self._local = np.zeros(num_rows, np.int64)  # its row in that session
        self._lost: dict[str, str] = {}  # address of each lost replica -> what happened
        self._pool = ThreadPoolExecutor(len(self.replicas), thread_name_prefix="wmsim-replica")
        try:
            shares = np.array_split(np.arange(num_rows), len(self.replicas))
            for replica, rows in zip(self.replicas, shares, strict=True):
                if len(rows):
                    self._open(replica, rows)
        except BaseException:
            self.close()
            raise
        first = self._sessions[0]
        self.spec, self.num_contexts, self.device = first.spec, first.num_contexts, first.device
        self.obs_type, self.latents = first.obs_type, first.latents

    # -- the Simulator interface ------------------------------------------------------

    def reset(self, rows: np.ndarray, seeds: Sequence[int | None]) -> tuple[np.ndarray, np.ndarray]:
        """Reset ``rows`` (reopening lost ones elsewhere) -> (observations, contexts)."""
        rows = np.asarray(rows, np.int64)
        lost = rows[self._on_lost(rows)]
        if len(lost):
            self._rehome(lost)
        groups = self._groups(rows) or self._nobody()
        calls = {
            s: partial(self._sessions[s].reset, self._local[rows[at]], [seeds[i] for i in at])
            for s, at in groups.items()
        }
        answers = self._call(calls)
        return tuple(self._gather(answers, groups, len(rows), k) for k in range(2))

    def step(self, rows: np.ndarray, actions: np.ndarray, resets: np.ndarray) -> Stepped:
        """Step ``rows`` and reset ``resets`` on every replica concerned at once."""
        rows, resets = np.asarray(rows, np.int64), np.asarray(resets, np.int64)
        actions = np.asarray(actions, np.int64)
        self._refuse_lost(np.concatenate([rows, resets]))
        stepping, resetting = self._groups(rows), self._groups(resets)
        if not (stepping or resetting):
            stepping = self._nobody()
        none = np.zeros(0, np.int64)
        calls = {
            s: partial(self._sessions[s].step,
                       self._local[rows[stepping[s]]] if s in stepping else none,
                       actions[stepping[s]] if s in stepping else none,
                       self._local[resets[resetting[s]]] if s in resetting else none)
            for s in sorted(stepping.keys() | resetting.keys())
        }  # fmt: skip
        answers = self._call(calls)
        return Stepped(
            *(self._gather(answers, stepping, len(rows), k) for k in range(4)),
            *(self._gather(answers, resetting, len(resets), k) for k in (4, 5)),
        )

    def frames(self, rows: np.ndarray) -> np.ndarray:
        """The current frames of ``rows`` (n, H, W, 3) uint8."""
        rows = np.asarray(rows, np.int64)
        self._refuse_lost(rows)
        groups = self._groups(rows) or self._nobody()
        local = {s: self._local[rows[at]] for s, at in groups.items()}
        answers = self._call({s: partial(self._sessions[s].frames, local[s]) for s in groups})
        return self._gather(answers, groups, len(rows), None)

    def close(self) -> None:
        """Close every session (those on lost replicas without waiting); twice is allowed."""
        for s, session in enumerate(self._sessions):
            if session is not None:
                session.close()
                self._sessions[s] = None
        self._pool.shutdown(wait=False)

    # -- placing rows -------------------------------------------------------------------

    def _open(self, replica: Replica, rows: np.ndarray) -> None:
        """Open a session of ``rows`` on ``replica`` and make it their home."""
        session = RemoteSimulator(
            replica.address, len(rows), authority=replica.authority, **self._options
        )
        if self._sessions and session.spec != self._sessions[0].spec:
            session.close()
            theirs = self._sessions[0].spec
            keys = sorted(k for k in session.spec.keys() | theirs.keys()
                          if session.spec.get(k) != theirs.get(k))  # fmt: skip
            raise ValueError(
                f"the replicas serve different models: the specs of {self._replica_of[0].address} "
                f"and {replica.address} differ in {', '.join(keys)}; start every replica with "
                "the same --model"
            )
        self._home[rows], self._local[rows] = len(self._sessions), np.arange(len(rows))
        self._sessions.append(session)
        self._replica_of.append(replica)

    def _rehome(self, rows: np.ndarray) -> None:
        """Open ``rows`` on the surviving replicas, split evenly; skip any found gone meanwhile."""
        old = set(self._home[rows].tolist())
        while len(rows):
            alive = [r for r in self.replicas if r.address not in self._lost]
            if not alive:
                gone = "; ".join(self._lost.values())
                raise ReplicaLost(
                    f"every replica is gone ({gone}); restart `wmsim serve` on them and make "
                    "the env again",
                    replicas=list(self._lost), rows=rows.tolist(),
                )  # fmt: skip
            shares = np.array_split(rows, len(alive))
            placed = []
            for replica, share in zip(alive, shares, strict=True):
                if not len(share):
                    continue
                try:
                    self._open(replica, share)
                    placed.append(share)
                except LOST as error:
                    self._lost[replica.address] = _cause(error)
            rows = np.setdiff1d(rows, np.concatenate([np.zeros(0, np.int64), *placed]))
        for s in old - set(self._home.tolist()):  # lost sessions left with no rows
            self._sessions[s].close()
            self._sessions[s] = None

    # -- calling --------------------------------------------------------------------------

    def _groups(self, rows: np.ndarray) -> dict[int, np.ndarray]:
        """{session: positions in ``rows`` of its rows}, the sessions in order."""
        homes = self._home[rows]
        return {int(s): np.flatnonzero(homes == s) for s in np.unique(homes)}

    def _nobody(self) -> dict[int, np.ndarray]:
        """A call of no rows goes to one live session: its answer has the empty arrays' shapes."""
        s = next(s for s, live in enumerate(self._sessions) if live is not None)
        return {s: np.zeros(0, np.int64)}

    def _on_lost(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows),) bool: the row's session is on a lost replica."""
        lost = [self._replica_of[s].address in self._lost for s in range(len(self._sessions))]
        return np.asarray(lost, bool)[self._home[rows]]

    def _refuse_lost(self, rows: np.ndarray) -> None:
        """Raise ReplicaLost, before any call, if one of ``rows`` is on a lost replica."""
        lost = self._on_lost(rows)
        if lost.any():
            sessions = {int(s) for s in self._home[rows[lost]]}
            raise self._lost_error({self._replica_of[s].address for s in sessions})

    def _call(self, calls: dict[int, Callable[[], Any]]) -> dict[int, Any]:
        """Run each session's call, at once when several; {session: answer} in session order.

        Raises:
            ReplicaLost: a replica went away; raised once every call has ended.
        """
        if len(calls) == 1:
            futures = {s: _done(call) for s, call in calls.items()}
        else:
            futures = {s: self._pool.submit(call) for s, call in calls.items()}
            wait(futures.values())
        errors = {s: future.exception() for s, future in futures.items()}
        gone = {self._replica_of[s].address: error for s, error in errors.items()
                if isinstance(error, LOST)}  # fmt: skip
        for address, error in gone.items():
            self._lost[address] = _cause(error)
        other = [e for e in errors.values() if e is not None and not isinstance(e, LOST)]
        if other:
            raise other[0]
        if gone:
            raise self._lost_error(set(gone))
        return {s: future.result() for s, future in futures.items()}

    def _lost_error(self, addresses: set[str]) -> ReplicaLost:
        """ReplicaLost naming the replicas ``addresses``, why, and every row they held."""
        sessions = [s for s, r in enumerate(self._replica_of) if r.address in addresses]
        rows = np.flatnonzero(np.isin(self._home, sessions)).tolist()
        alive = [r.address for r in self.replicas if r.address not in self._lost]
        why = "; ".join(self._lost[a] for a in sorted(addresses))  # each names its server
        fix = (
            f"Reset them (env.reset()) to reopen them on the other replicas ({', '.join(alive)}), "
            "or make the env again once `wmsim serve` is back there"
            if alive
            else "No replica is left: restart `wmsim serve` on them and make the env again"
        )
        return ReplicaLost(
            f"replica {', '.join(sorted(addresses))} went away, and rows {rows} (the sub-envs "
            f"dreamt there) with it: {why}. {fix}",
            replicas=sorted(addresses), rows=rows,
        )  # fmt: skip

    def _gather(
        self, answers: dict[int, Any], groups: dict[int, np.ndarray], n: int, field: int | None
    ) -> np.ndarray:
        """Field ``field`` of each answer (the answer itself if None), put back in row order."""
        parts = {s: a if field is None else a[field] for s, a in answers.items()}
        if not groups:  # none of these rows: any answer's (empty) array has the right shape
            return next(iter(parts.values()))[:0]
        first = parts[next(iter(groups))]
        out = np.empty((n, *first.shape[1:]), first.dtype)
        for s, at in groups.items():
            out[at] = parts[s]
        return out


def _cause(error: Exception) -> str:
    """What a RemoteSimulator's error says happened, without its advice (ours replaces it)."""
    return str(error).removesuffix(f"; {GONE}")


def _done(call: Callable[[], Any]):
    """A finished future of ``call()``, run here: one session needs no thread."""
    future: Future = Future()
    try:
        future.set_result(call())
    except BaseException as error:  # handed to the caller as a pooled call's would be
        future.set_exception(error)
    return future
