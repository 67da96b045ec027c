"""Fixtures for the dream env tests: an isolated model store, and a fake simulator."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils import seeding
from wmsim_client.simulator import Stepped

import wmsim  # noqa: F401  registers the wmsim/<Game>-dream-v0 ids


@pytest.fixture(autouse=True)
def isolated_store(tmp_path, monkeypatch):
    """No user store or WMSIM_MODEL: every env loads the bundle shipped with wmsim."""
    monkeypatch.setenv("WMSIM_HOME", str(tmp_path / "wmsim-home"))
    monkeypatch.delenv("WMSIM_MODEL", raising=False)


class FakeSimulator:
    """A Simulator whose continue probability the test sets; frames count the steps.

    Each row's observation is filled with its step count since reset (mod 256), and
    the reward is the action, so tests can see what was stepped and when. Rows draw
    from their own generators as :class:`wmsim.runtime.dreams.Dreams` rows do.
    """

    def __init__(self, num_rows: int, cont: float = 1.0, num_contexts: int = 5):
        self.spec = {
            "game": "Breakout",
            "actions": ["NOOP", "FIRE", "RIGHT", "LEFT"],
            "observation": {"shape": [8, 8, 3], "dtype": "uint8"},
            "latent": {"shape": [4], "dtype": "float32", "low": 0.0, "high": 1.0},
            "noise": {"shape": [2, 3], "dtype": "float32"},
        }
        self.num_rows, self.num_contexts, self.obs_type = num_rows, num_contexts, "pixels"
        self.cont = np.full(num_rows, cont, np.float32)
        self.count = np.zeros(num_rows, np.int64)
        self.rngs = [seeding.np_random(0)[0] for _ in range(num_rows)]
        self.step_calls: list[np.ndarray] = []  # rows of each step call
        self.reset_calls: list[tuple[list, list]] = []  # (rows, seeds) of each reset
        self.closed = False

    def _obs(self, rows):
        return np.broadcast_to(self.count[rows, None, None, None] % 256, (len(rows), 8, 8, 3))

    def reset(self, rows, seeds):
        self.reset_calls.append((list(rows), list(seeds)))
        for row, seed in zip(rows, seeds, strict=True):
            if seed is not None:
                self.rngs[row] = seeding.np_random(seed)[0]
        contexts = np.array([self.rngs[r].integers(self.num_contexts) for r in rows], np.int64)
        self.count[rows] = 0
        return self._obs(rows).astype(np.uint8), contexts

    def step(self, rows, actions, resets):
        assert not set(rows.tolist()) & set(resets.tolist())
        reset_obs, contexts = self.reset(resets, [None] * len(resets)) if len(resets) else (
            np.zeros((0, 8, 8, 3), np.uint8), np.zeros(0, np.int64))  # fmt: skip
        self.step_calls.append(np.array(rows))
        self.count[rows] += 1
        uniform = np.array([self.rngs[r].random() for r in rows])
        cont = self.cont[rows]
        return Stepped(self._obs(rows).astype(np.uint8), actions.astype(np.float32), cont,
                       uniform >= cont, reset_obs, contexts)  # fmt: skip

    def frames(self, rows):
        return self._obs(np.asarray(rows)).astype(np.uint8)

    def close(self):
        self.closed = True


@pytest.fixture
def fake_simulator():
    """Make a FakeSimulator: ``fake_simulator(num_rows, cont=1.0)``."""
    return FakeSimulator
