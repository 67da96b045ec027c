"""Running several collection loops at once, one process each.

The emulator holds the GIL, so only processes play in parallel. Each worker
runs a whole stream on its own, writing its own chunks, and tells the parent
only its row count (through shared memory) and how it ended (through a pipe).
The parent asks workers to stop by writing to their pipe; a worker whose parent
has died sees the pipe close and stops too, saving what it played.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from wmsim.errors import UserError
from wmsim.replay.writer import acquire


class Task(Protocol):
    """A picklable piece of collection work (see ``wmsim.collect.rollout.StreamTask``)."""

    config: Any

    def run(self, report: Callable[[int], bool]) -> Any:
        """Do the work; call ``report(rows)`` now and then, stop when it returns False."""
        ...


def _worker(task: Task, index: int, rows: Any, conn: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which stops us

    def report(count: int) -> bool:
        rows[index] = count
        return not conn.poll()  # a stop request, or the parent is gone

    try:
        lock = acquire(task.config.out, exclusive=False)
        try:
            # A parent that died before we held the lock may have a successor
            # already: write nothing then.
            result = ("stopped", None) if conn.poll() else ("done", task.run(report))
        finally:
            lock.close()
    except UserError as error:
        result = ("user error", str(error))
    except BaseException:
        result = ("error", traceback.format_exc())
    try:
        conn.send(result)
    except OSError:
        pass  # the parent is gone; what was played is saved


def run_in_processes(
    tasks: Sequence[Task], progress: Callable[[int], Any], *, context: str = "forkserver"
) -> list[Any]:
    """Run each task in its own process; return their results in order.

    When one worker fails, or on Ctrl-C, every other worker is asked to stop
    and saves what it has played before this returns.

    Args:
        tasks: the work, one process each.
        progress: called a few times a second with the total rows reported.
        context: multiprocessing start method; ``forkserver`` is safe in a
            process that already runs torch threads.

    Raises:
        UserError: a worker met bad input (an unusable replay directory, say).
        RuntimeError: a worker failed; its traceback is in the message.
        KeyboardInterrupt: after every worker has stopped and saved its work.
    """
    ctx = mp.get_context(context)
    rows = ctx.RawArray("q", len(tasks))
    workers = []
    for i, task in enumerate(tasks):
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_worker, args=(task, i, rows, child), daemon=True)
        process.start()
        child.close()
        workers.append((process, parent))
    results: dict[int, tuple[str, Any]] = {}
    interrupted = stopping = False
    try:
        while len(results) < len(workers):
            try:
                _collect_replies(workers, results, timeout=0.25)
                progress(sum(rows))
            except KeyboardInterrupt:
                interrupted = True
            if (interrupted or any(r[0] != "done" for r in results.values())) and not stopping:
                stopping = True
                _ask_to_stop(workers, results)
    finally:
        for process, conn in workers:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
            conn.close()
    for kind in ("user error", "error"):
        failures = [r[1] for r in results.values() if r[0] == kind]
        if failures and kind == "user error":
            raise UserError(failures[0])
        if failures:
            raise RuntimeError("a collection worker failed:\n" + "\n".join(failures))
    if interrupted:
        raise KeyboardInterrupt
    return [results[i][1] for i in range(len(workers))]


def _ask_to_stop(workers: list, results: dict[int, Any]) -> None:
    for i, (_, conn) in enumerate(workers):
        if i not in results:
            try:
                conn.send("stop")
            except OSError:
                pass  # it has just finished, or died: its reply says which


def _collect_replies(workers: list, results: dict[int, Any], timeout: float) -> None:
    pending = {conn: i for i, (_, conn) in enumerate(workers) if i not in results}
    for conn in wait(list(pending), timeout=timeout):
        i = pending[conn]
        try:
            results[i] = conn.recv()
        except EOFError:
            results[i] = ("error", f"worker {i} died without a word (killed, or out of memory)")
