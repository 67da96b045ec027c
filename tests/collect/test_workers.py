"""Worker processes: failures and Ctrl-C stop everyone promptly, and nothing is lost."""

import time

import pytest
from helpers import FakeTask, write_synthetic

from wmsim.collect.workers import run_in_processes
from wmsim.errors import UserError


@pytest.fixture
def out(tmp_path):
    write_synthetic(tmp_path, [[3]], chunk_length=4)  # a replay to hold the lock of
    return tmp_path


def test_results_come_back_in_order(out):
    tasks = [FakeTask(out, "short"), FakeTask(out, "quick")]
    assert run_in_processes(tasks, lambda rows: None) == [100, 0]


def test_a_failing_worker_stops_the_others_at_once(out):
    started = time.monotonic()
    tasks = [FakeTask(out, "slow"), FakeTask(out, "fail"), FakeTask(out, "slow")]
    with pytest.raises(RuntimeError, match="this task fails"):
        run_in_processes(tasks, lambda rows: None)
    assert time.monotonic() - started < 20  # the slow ones would take 30 s or more


def test_a_workers_user_error_reaches_the_user_as_one(out):
    with pytest.raises(UserError, match="bad input, said once"):
        run_in_processes([FakeTask(out, "user error"), FakeTask(out, "slow")], lambda rows: None)


def test_ctrl_c_after_a_worker_finished_still_stops_the_rest(out):
    calls = []

    def progress(rows):
        calls.append(rows)
        if len(calls) == 8:  # about two seconds in: the quick worker is long done
            raise KeyboardInterrupt

    started = time.monotonic()
    tasks = [FakeTask(out, "quick"), FakeTask(out, "slow"), FakeTask(out, "slow")]
    with pytest.raises(KeyboardInterrupt):
        run_in_processes(tasks, progress)
    assert time.monotonic() - started < 20
