"""Graph calls split by rows across the CPU's cores: one call per core, each on one thread.

onnxruntime's own threads split every node of a graph between them and meet after each one.
A step graph is some 160 small nodes, so on two cores that costs more than it saves (batch 64:
0.74 ms on one thread, 0.76 on two). Dream rows are independent, so the batch is split
instead: two calls of 32 rows at once, one on the caller's thread and one on a worker, take
0.47 ms and meet once. The outputs are bit for bit those of one call: onnxruntime computes a
row the same way in any batch (``tests/runtime/test_graphs.py`` holds it to that).
"""

from __future__ import annotations

import functools
import os
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

MIN_ROWS = 16
"""Rows a part has at least. Batch 16 takes 0.24 ms on one thread and two calls of 8 rows at
once take as long: below 32 rows the hand-off to a worker costs what the split saves."""


def cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def parts(rows: int, most: int) -> int:
    """Into how many parts to split ``rows`` rows: at most ``most``, each of :data:`MIN_ROWS`."""
    return max(1, min(most, rows // MIN_ROWS))


LEAD = 4
"""Rows the caller's part has beyond a worker's: it starts at once, while a worker takes
some 30 us to wake (batch 64 in two parts: 0.45 ms as 34 + 30 rows, 0.48 as 32 + 32)."""


def bounds(rows: int, count: int) -> list[tuple[int, int]]:
    """``count`` contiguous (start, stop) ranges covering ``rows`` rows in order.

    The first (the caller's) has up to :data:`LEAD` rows more; the others differ by one at most.
    """
    lead = min(LEAD, max(0, rows - count * MIN_ROWS)) if count > 1 else 0
    shared = rows - lead
    edges = [lead + shared * i // count for i in range(count + 1)]
    edges[0] = 0
    return list(zip(edges[:-1], edges[1:], strict=True))


class Workers:
    """Daemon threads that run calls for :func:`run_parts`; one pool per process.

    A call blocked on the pool's queue costs nothing; onnxruntime gives the GIL up while a
    graph runs, so the parts run at once.
    """

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()

    def ensure(self, count: int) -> None:
        """At least ``count`` workers."""
        with self.lock:
            while len(self.threads) < count:
                thread = threading.Thread(
                    target=self._work, name=f"wmsim-rows-{len(self.threads)}", daemon=True
                )
                thread.start()
                self.threads.append(thread)

    def _work(self) -> None:
        while True:
            index, call, done = self.jobs.get()
            try:
                done.put((index, True, call()))
            except BaseException as error:  # handed to the caller, which raises it
                done.put((index, False, error))

    def run(self, calls: Sequence[Callable[[], Any]]) -> list[Any]:
        """The results of ``calls`` in order, the first run on this thread, the rest on workers."""
        self.ensure(len(calls) - 1)
        done: queue.SimpleQueue = queue.SimpleQueue()
        for index, call in enumerate(calls[1:], 1):
            self.jobs.put((index, call, done))
        try:
            results = [(0, True, calls[0]())]
        except BaseException as error:  # raised once the workers are done with the inputs
            results = [(0, False, error)]
        results += [done.get() for _ in calls[1:]]
        results.sort(key=lambda result: result[0])  # they finish in any order
        for _, ok, value in results:
            if not ok:
                raise value
        return [value for _, _, value in results]


def take(array: np.ndarray, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``array[rows]`` along the first axis, written into ``out`` when given.

    ``np.take`` into ``out`` goes through a temporary buffer unless told to clip the
    indices (64 frames of a 1,024-row arena: 35 us against 12), so they are checked here
    and clipped, which leaves them as they are.

    Raises:
        IndexError: a row outside ``[0, len(array))``.
    """
    if len(rows) and (rows.min() < 0 or rows.max() >= len(array)):
        raise IndexError(f"rows must be in [0, {len(array)}), got {rows.min()}..{rows.max()}")
    return np.take(array, rows, axis=0, out=out, mode="clip")


@functools.cache
def workers() -> Workers:
    """The process's pool (a forked child starts a new one: threads do not survive a fork)."""
    return Workers()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=workers.cache_clear)


def run_parts(
    call: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
    feed: dict[str, np.ndarray],
    rows: int,
    most: int,
) -> list[np.ndarray]:
    """``call(feed)`` with the rows of ``feed`` split into up to ``most`` parts run at once.

    ``call`` returns a list of arrays with a row axis; each comes back joined in row order.
    """
    count = parts(rows, most)
    if count == 1:
        return call(feed)
    calls = [
        functools.partial(call, {k: v[start:stop] for k, v in feed.items()})
        for start, stop in bounds(rows, count)
    ]
    outputs = workers().run(calls)
    return [np.concatenate(pieces) for pieces in zip(*outputs, strict=True)]
