"""Dreams: rows of dream state, each with its own random generator.

This is the part of a dream env that belongs with the model, run the same way
in-process (:class:`wmsim_client.simulator.LocalSimulator`) and behind
``wmsim serve``: a client sends seeds and actions, never noise or state, so a
seed gives the same dream wherever it runs.

Every row draws from its generator in one fixed order: the start context's
index at a reset; the step's noise and then one uniform number at every step,
always both, so the stream stays the same however an episode ends (and
whichever way its latents are taken: a row with ``mode`` latents draws the
noise too, then steps with the bundle format's mode noise, which picks each
latent's most likely class). The noise is one uniform per categorical latent in
format 2, one per class in format 1 (:data:`wmsim.bundle.SAMPLING`). A step
terminates when that number is at least the model's continue probability
(compared in float32, as it is drawn). A row's generator is exactly the one
``gymnasium.Env.reset(seed=s)`` makes, so a dream seeded ``s`` is the one
``DreamEnv`` dreams in-process.

A row draws :data:`BLOCK` steps' numbers from its generator at once, which is the same
stream as drawing them step by step, at a fraction of the calls (64 rows: 58 us a step
in per-row calls); :meth:`Dreams.settle` puts a generator where step-by-step drawing
would have left it, and is done before anything else draws from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from gymnasium.utils import seeding

from wmsim.bundle import Bundle
from wmsim.runtime.graphs import Runtime

BLOCK = 16
"""Steps of numbers a row draws from its generator in one call."""


class Dreams:
    """``capacity`` dream rows over one bundle; see the module docstring.

    Args:
        bundle: an opened bundle, or its path.
        capacity: rows.
        device, threads, decode, decoder: as for :class:`wmsim.runtime.graphs.Graphs`.
        arena: where the state lives, as for :class:`wmsim.runtime.graphs.Runtime`.
    """

    def __init__(
        self,
        bundle: Bundle | str | Path,
        capacity: int,
        *,
        device: str = "auto",
        threads: int | None = None,
        decode: bool = True,
        decoder: str = "auto",
        arena: str = "auto",
    ):
        self.runtime = Runtime(bundle, capacity, device=device, threads=threads, decode=decode,
                               decoder=decoder, arena=arena)  # fmt: skip
        self.spec, self.capacity = self.runtime.bundle.spec, capacity
        self.num_contexts = self.runtime.num_contexts
        self.noise_shape = self.runtime.bundle.noise_shape
        self.mode_noise = self.runtime.bundle.mode_noise
        # fresh entropy until a seeded reset replaces a row's generator
        self.rngs = [seeding.np_random()[0] for _ in range(capacity)]
        size = int(np.prod(self.noise_shape)) + 1  # a step's noise, then its end decision
        self._block = np.zeros((capacity, BLOCK, size), np.float32)  # drawn ahead, per row
        self._used = np.full(capacity, BLOCK)  # steps of the block taken (BLOCK: none left)
        self._before: list[dict | None] = [None] * capacity  # generator state before the block
        self._shown = np.zeros((capacity, *self.spec["observation"]["shape"]), np.uint8)
        self._current = np.zeros(capacity, bool)  # _shown holds the row's current frame
        self.mode = np.zeros(capacity, bool)
        """Per row: step with each latent's most likely class rather than a sample."""

    def forget(self, rows: np.ndarray) -> None:
        """Hand ``rows`` to a new user.

        Their frames, latents and state are zeroed, and their generators come from
        fresh entropy, as for an env never seeded.
        """
        rows = np.asarray(rows, np.int64)
        self.runtime.clear(rows)
        self._shown[rows] = 0
        self._current[rows] = True
        self._used[rows] = BLOCK  # the block was drawn from the old generator
        for row in rows:
            self.rngs[row] = seeding.np_random()[0]

    def settle(self, rows: np.ndarray) -> None:
        """Put the generators of ``rows`` where drawing step by step would have left them.

        Drawing a block ahead takes numbers no step has used yet; they are given back by
        going back to the state before the block and drawing only the steps taken.
        """
        for row in np.asarray(rows, np.int64).tolist():
            used = int(self._used[row])
            if used < BLOCK:
                rng = self.rngs[row]
                rng.bit_generator.state = self._before[row]
                rng.random(dtype=np.float32, out=self._block[row, :used])
                self._used[row] = BLOCK

    def reset(self, rows: np.ndarray, seeds: Sequence[int | None] | None = None) -> np.ndarray:
        """Reset ``rows`` to start contexts drawn from their generators.

        Args:
            rows: (n,) row indices.
            seeds: one seed or None per row; a seed replaces the row's generator
                first, None keeps it. None for all keeps every generator.

        Returns:
            The start contexts' indices (n,) int64.
        """
        rows = np.asarray(rows, np.int64)
        if len(rows) == 0:  # a vector env's step without an autoreset: nothing to draw
            return np.zeros(0, np.int64)
        self.settle(rows)
        if seeds is not None:
            for row, seed in zip(rows, seeds, strict=True):
                if seed is not None:
                    self.rngs[row] = seeding.np_random(int(seed))[0]
        contexts = np.array([self.rngs[r].integers(self.num_contexts) for r in rows], np.int64)
        self.runtime.reset(rows, contexts)
        self._shown[rows] = self.runtime.start_frames[contexts]
        self._current[rows] = True
        return contexts

    def step(
        self, rows: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Dream one step of ``rows`` (n,) with ``actions`` (n,) in one model call.

        Returns:
            reward (n,) float32, continue probability (n,) float32, terminated (n,) bool.
        """
        rows = np.asarray(rows, np.int64)
        # a row's step takes its noise and, last, the uniform that decides its end
        for row in rows[self._used[rows] == BLOCK].tolist():
            rng = self.rngs[row]
            self._before[row] = rng.bit_generator.state
            rng.random(dtype=np.float32, out=self._block[row])  # BLOCK steps, in order
            self._used[row] = 0
        draws = self._block[rows, self._used[rows]]
        self._used[rows] += 1
        noise = draws[:, :-1].reshape(len(rows), *self.noise_shape)
        noise[self.mode[rows]] = self.mode_noise
        reward, cont = self.runtime.advance(rows, actions, np.ascontiguousarray(noise))
        self._current[rows] = False
        return reward, cont, draws[:, -1] >= cont

    def latents(self, rows: np.ndarray) -> np.ndarray:
        """The current latents of ``rows`` (n, ...), a copy."""
        return self.runtime.latents_of(rows)

    def frames(self, rows: np.ndarray) -> np.ndarray:
        """The current frames of ``rows`` (n, H, W, 3) uint8: real at a reset, then dreamt.

        Each dreamt frame is decoded once, in one call for all rows that need it.
        """
        rows = np.asarray(rows, np.int64)
        stale = np.unique(rows[~self._current[rows]])
        if len(stale):
            self._shown[stale] = self.runtime.frames(stale)
            self._current[stale] = True
        return self._shown[rows]

    def observations(self, rows: np.ndarray, obs_type: str) -> np.ndarray:
        """Frames (``"pixels"``) or latents (``"latent"``) of ``rows``."""
        return self.frames(rows) if obs_type == "pixels" else self.latents(rows)
