"""The batcher and the runner: dropped jobs never run; piled-up jobs run in one batch."""

import asyncio

import numpy as np
from wmsim_server.batcher import Batcher, Job

from wmsim.runtime.dreams import Dreams
from wmsim.store import EMBEDDED

NONE = np.zeros(0, np.int64)


def job(reset=NONE, step=NONE):
    return Job("latent", reset, [7] * len(reset), step, np.zeros(len(step), np.int64), NONE)


def test_a_cancelled_job_is_dropped_and_the_others_run_in_one_call():
    dreams = Dreams(EMBEDDED / "Breakout.wmsim", 3, device="cpu", threads=1)
    ran: list[list[Job]] = []

    async def main():
        batcher = Batcher(dreams, max_batch=64, max_delay=0.05, streams=lambda: 1)
        run = batcher._run
        batcher._run = lambda jobs: (ran.append(jobs), run(jobs))[1]
        batcher.start()
        await batcher.submit(job(reset=np.array([0, 1, 2])))
        stale = asyncio.ensure_future(batcher.submit(job(step=np.array([0]))))
        kept = [asyncio.ensure_future(batcher.submit(job(step=np.array([r])))) for r in (1, 2)]
        await asyncio.sleep(0.01)  # all three wait in the batch being gathered
        stale.cancel()
        done = await asyncio.gather(*kept)
        await batcher.drain()
        return done

    done = asyncio.run(main())
    assert [len(jobs) for jobs in ran] == [1, 2]  # the reset; then the two kept steps, merged
    assert all(len(j.reward) == 1 for j in done)
    assert batcher_rows(ran[1]) == [1, 2]


def batcher_rows(jobs):
    return sorted(int(r) for j in jobs for r in j.step_rows)


def test_jobs_that_pile_up_while_the_model_is_busy_run_in_one_batch_from_any_thread():
    import threading

    from wmsim_server.batcher import Runner

    dreams = Dreams(EMBEDDED / "Breakout.wmsim", 4, device="cpu", threads=1)
    runner = Runner(dreams, max_batch=64)
    runner.run([job(reset=np.arange(4))])
    batches: list[int] = []
    compute = runner._compute
    runner._compute = lambda jobs: (batches.append(len(jobs)), compute(jobs))[1]
    jobs = [job(step=np.array([r])) for r in range(4)]
    with runner._model:  # the model is busy: all four wait
        threads = [threading.Thread(target=runner.run, args=([j],)) for j in jobs]
        for thread in threads:
            thread.start()
        while len(runner._pending) < 4:
            threading.Event().wait(0.001)
    for thread in threads:
        thread.join(10)
    assert batches == [4]  # the first thread to get the model ran everyone's
    assert all(j.done and j.error is None and len(j.reward) == 1 for j in jobs)


def test_a_failed_batch_reaches_every_job_in_it_and_the_runner_goes_on():
    from wmsim_server.batcher import Runner

    dreams = Dreams(EMBEDDED / "Breakout.wmsim", 2, device="cpu", threads=1)
    runner = Runner(dreams, max_batch=64)
    bad = job(step=np.array([0]))
    compute = runner._compute

    def failing(jobs):
        raise RuntimeError("the model broke")

    runner._compute = failing
    try:
        runner.run([bad])
    except RuntimeError as error:
        assert "the model broke" in str(error)
    else:
        raise AssertionError("the error did not reach the caller")
    runner._compute = compute
    runner.run([job(reset=np.arange(2))])
    ok = job(step=np.array([1]))
    runner.run([ok])
    assert ok.error is None and len(ok.reward) == 1
