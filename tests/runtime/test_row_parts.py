"""Graph calls split by rows between threads: the parts, the pool, errors and forks."""

import os
import threading

import numpy as np
import pytest

from wmsim.runtime import row_parts
from wmsim.runtime.row_parts import LEAD, MIN_ROWS, bounds, parts, run_parts


def test_parts_are_at_most_the_cores_and_never_smaller_than_the_minimum():
    assert parts(1, 8) == 1
    assert parts(2 * MIN_ROWS - 1, 8) == 1
    assert parts(2 * MIN_ROWS, 8) == 2
    assert parts(64, 2) == 2
    assert parts(1024, 16) == 16
    assert parts(1024, 1) == 1


def test_bounds_cover_every_row_once_in_order():
    for rows in (32, 33, 35, 100):
        for count in (1, 2, 3, 4):
            ranges = bounds(rows, count)
            covered = np.concatenate([np.arange(a, b) for a, b in ranges])
            np.testing.assert_array_equal(covered, np.arange(rows))
            sizes = [b - a for a, b in ranges]
            assert max(sizes[1:] or [0]) - min(sizes[1:] or [0]) <= 1  # the workers' parts
            assert sizes[0] - sizes[-1] <= LEAD + 1  # the caller's starts at once: a few more
            assert min(sizes) >= min(MIN_ROWS, rows // count)


def test_parts_run_at_once_on_different_threads_and_join_in_order():
    seen, together = set(), threading.Barrier(4, timeout=30)  # breaks unless all 4 run at once

    def call(feed):
        seen.add(threading.get_ident())
        together.wait()
        return [feed["x"] * 2, feed["x"][:, :1]]

    x = np.arange(64 * 3).reshape(64, 3)
    doubled, first = run_parts(call, {"x": x}, 64, 4)
    np.testing.assert_array_equal(doubled, x * 2)
    np.testing.assert_array_equal(first, x[:, :1])
    assert len(seen) == 4


def test_an_error_in_a_worker_reaches_the_caller_and_the_pool_keeps_working():
    def call(feed):
        if feed["x"][0] >= 32:
            raise ValueError("part two is bad")
        return [feed["x"]]

    with pytest.raises(ValueError, match="part two is bad"):
        run_parts(call, {"x": np.arange(64)}, 64, 2)
    again = run_parts(lambda f: [f["x"]], {"x": np.arange(64)}, 64, 2)[0]
    np.testing.assert_array_equal(again, np.arange(64))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_a_pool_of_its_own():
    run_parts(lambda f: [f["x"]], {"x": np.arange(64)}, 64, 2)  # the parent's workers exist
    assert row_parts.workers().threads
    pid = os.fork()
    if pid == 0:  # the child: the parent's threads are gone, a stale pool would hang here
        ok = len(row_parts.workers().threads) == 0
        out = run_parts(lambda f: [f["x"] + 1], {"x": np.arange(64)}, 64, 2)[0]
        os._exit(0 if ok and (out == np.arange(1, 65)).all() else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_take_is_fancy_indexing_into_a_given_array_and_refuses_rows_out_of_range():
    array = np.arange(5 * 3 * 2, dtype=np.float32).reshape(5, 3, 2)
    rows = np.array([4, 0, 2, 2])
    out = np.empty((4, 3, 2), np.float32)
    assert row_parts.take(array, rows, out) is out
    np.testing.assert_array_equal(out, array[rows])
    np.testing.assert_array_equal(row_parts.take(array, rows), array[rows])
    assert row_parts.take(array, np.zeros(0, np.int64)).shape == (0, 3, 2)
    for bad in ([5], [-1], [0, 7]):
        with pytest.raises(IndexError, match=r"rows must be in \[0, 5\)"):
            row_parts.take(array, np.array(bad), out[: len(bad)])
