"""The batcher: steps from every client merged into one model call.

Clients' stream handlers :meth:`Batcher.submit` jobs (one StepRequest each,
already checked and mapped to arena rows) and await their results. One asyncio
task collects jobs and flushes a batch when it holds ``max_batch`` envs, when
``max_delay`` has passed since its first job, or as soon as every stream that
could send has sent (waiting longer would only add delay). The batch runs on
one worker thread, off the event loop, so gRPC keeps receiving meanwhile.

There it goes to the :class:`Runner`, which owns the model: one batch at a time,
resets first (copies), then one step of all stepped rows, then one decode of
every frame the batch needs. Clients on the same host (:mod:`wmsim_server.same_host`)
hand their jobs to the runner from their own threads, without the event loop;
a batch takes every job pending when it starts, from either side, so a thread
that finds the model busy finds its job done when the model is free. Rows draw
from their own generators, so merging changes no result.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from wmsim.runtime.dreams import Dreams


@dataclass
class Job:
    """One client request in arena rows; the batcher fills in the result fields."""

    obs_type: str
    reset_rows: np.ndarray
    seeds: list[int | None]
    step_rows: np.ndarray
    actions: np.ndarray
    frame_rows: np.ndarray
    fresh_rows: np.ndarray | None = None
    """Rows of a new session: fresh random generators before anything else."""
    submitted: float = field(default_factory=time.perf_counter)
    contexts: np.ndarray | None = None
    reset_obs: np.ndarray | None = None
    obs: np.ndarray | None = None
    reward: np.ndarray | None = None
    cont: np.ndarray | None = None
    terminated: np.ndarray | None = None
    frames: np.ndarray | None = None
    done: bool = False
    """Its batch has run (set by the runner, under its model lock)."""
    error: BaseException | None = None
    """What its batch raised, if it failed."""

    @property
    def size(self) -> int:
        """Envs this job steps or resets."""
        return len(self.step_rows) + len(self.reset_rows)


@dataclass
class Stats:
    """Counters since the last :meth:`Batcher.take_stats`."""

    steps: int = 0
    batches: int = 0
    filled: int = 0
    queue_delays: deque[float] = field(default_factory=lambda: deque(maxlen=2**16))
    """The latest jobs' waits from submission to their batch's start."""
    since: float = field(default_factory=time.perf_counter)


class Batcher:
    """Merges jobs into batched model calls on ``dreams``; see the module docstring.

    Args:
        dreams: the arena of dream rows.
        max_batch: envs per model call at most; a larger single job is stepped in chunks.
        max_delay: seconds a batch waits for more jobs after its first.
        streams: a callable giving the number of streams worth waiting for (stepping
            lately, not waiting for an answer); the batch stops waiting when it is 0.
    """

    def __init__(self, dreams: Dreams, max_batch: int, max_delay: float, streams):
        self.max_batch, self.max_delay = max_batch, max_delay
        self.runner = Runner(dreams, max_batch)  # same-host clients use it too
        self._streams = streams
        self._queue: asyncio.Queue[tuple[Job, asyncio.Future]] = asyncio.Queue()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="wmsim-model")
        self._task: asyncio.Task | None = None
        self._running = False  # a batch is being collected or run

    def start(self) -> None:
        """Start collecting jobs on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._collect())

    async def submit(self, job: Job) -> Job:
        """Queue ``job``; returns it with its results once its batch has run."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((job, future))
        return await future

    async def drain(self) -> None:
        """Wait until every submitted job has its result, then stop collecting."""
        while not self._queue.empty() or self._running:
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
        self._worker.shutdown(wait=True)

    async def _collect(self) -> None:
        while True:
            batch = await self._gather()
            try:
                await self._serve(batch)
            except Exception as error:  # its clients hear of it; the batcher goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
            finally:
                self._running = False

    async def _gather(self) -> list[tuple[Job, asyncio.Future]]:
        """The next batch: its first job, then more until a flush condition holds."""
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        self._running = True
        size, deadline = batch[0][0].size, loop.time() + self.max_delay
        while size < self.max_batch and self._streams() > 0:
            if self._queue.empty():
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), timeout)
                except asyncio.TimeoutError:  # noqa: UP041 (distinct before 3.11)
                    break
            else:
                item = self._queue.get_nowait()
            batch.append(item)
            size += item[0].size
        return batch

    async def _serve(self, batch: list[tuple[Job, asyncio.Future]]) -> None:
        """Run ``batch`` on the worker thread and hand out the results.

        A job whose client went away while it waited is dropped here, on the event loop
        that also frees the client's rows: the rows may belong to a new session already.
        """
        jobs = [job for job, future in batch if not future.done()]
        if not jobs:
            return
        await asyncio.get_running_loop().run_in_executor(self._worker, self._run, jobs)
        for job, future in batch:
            if not future.done():  # its client may have gone meanwhile
                future.set_result(job)

    def _run(self, jobs: list[Job]) -> None:
        """On the worker thread: the jobs, with any others pending, by the runner."""
        self.runner.run(jobs)

    def take_stats(self) -> Stats:
        """The runner's counters since the last call (see :meth:`Runner.take_stats`)."""
        return self.runner.take_stats()


class Runner:
    """The model's batches over ``dreams``, one at a time, from any thread.

    :meth:`run` adds jobs to the pending ones and returns when they have results: the
    thread that holds the model lock runs every job pending when its batch starts, so
    threads that wait for the lock mostly find their jobs done by another. No thread
    waits for jobs that have not come yet: batches grow from what piles up while the
    model is busy.

    Args:
        dreams: the arena of dream rows.
        max_batch: envs per model call at most; a larger batch is stepped in chunks.
    """

    def __init__(self, dreams: Dreams, max_batch: int):
        self.dreams, self.max_batch = dreams, max_batch
        self._model = threading.Lock()  # one batch at a time: the arena is not thread-safe
        self._guard = threading.Lock()  # the pending jobs
        self._pending: list[Job] = []
        self.stats = Stats()
        self.envs_stepped = self.model_calls = 0  # since the start, for GetSpec

    def run(self, jobs: list[Job]) -> None:
        """Run ``jobs`` in a batch with whatever else is pending; raise what their batch raised."""
        with self._guard:
            self._pending.extend(jobs)
        while not all(job.done for job in jobs):
            with self._model:
                with self._guard:
                    batch, self._pending = self._pending, []
                if batch:
                    self._batch(batch)
        for job in jobs:
            if job.error is not None:
                raise job.error

    def _batch(self, jobs: list[Job]) -> None:
        """Under the model lock: run ``jobs``; each is done after, with its error if it failed."""
        start = time.perf_counter()
        try:
            self._compute(jobs)
        except Exception as error:  # its jobs' clients hear of it; the runner goes on
            for job in jobs:
                job.error = error
        finally:
            for job in jobs:
                job.done = True
        stepped = sum(len(job.step_rows) for job in jobs)
        self.envs_stepped += stepped
        self.model_calls += stepped > 0  # a batch of resets only calls no model
        self.stats.batches += 1
        self.stats.steps += stepped
        self.stats.filled += sum(job.size for job in jobs)
        self.stats.queue_delays.extend(start - job.submitted for job in jobs)

    def _compute(self, jobs: list[Job]) -> None:
        """Resets, one step, one decode."""
        dreams = self.dreams
        for job in jobs:
            if job.fresh_rows is not None:
                dreams.forget(job.fresh_rows)
            job.contexts = dreams.reset(job.reset_rows, job.seeds)
        rows = np.concatenate([job.step_rows for job in jobs])
        actions = np.concatenate([job.actions for job in jobs])
        parts = [
            dreams.step(rows[i : i + self.max_batch], actions[i : i + self.max_batch])
            for i in range(0, len(rows), self.max_batch)
        ] or [dreams.step(rows, actions)]
        reward, cont, terminated = (np.concatenate(column) for column in zip(*parts, strict=True))
        pixels = [j.frame_rows for j in jobs] + [
            np.concatenate([j.step_rows, j.reset_rows]) for j in jobs if j.obs_type == "pixels"
        ]
        if sum(len(p) for p in pixels):
            dreams.frames(np.concatenate(pixels))  # decodes every stale frame in one call
        start = 0
        for job in jobs:
            end = start + len(job.step_rows)
            job.reward, job.cont, job.terminated = (
                reward[start:end],
                cont[start:end],
                terminated[start:end],
            )
            job.obs = dreams.observations(job.step_rows, job.obs_type)
            job.reset_obs = dreams.observations(job.reset_rows, job.obs_type)
            job.frames = dreams.frames(job.frame_rows)
            start = end

    def take_stats(self) -> Stats:
        """The counters since the last call, and start new ones."""
        with self._model:
            stats, self.stats = self.stats, Stats()
        return stats
