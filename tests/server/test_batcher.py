"""The batcher: a job whose client went away never runs (its rows may have a new owner)."""

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
