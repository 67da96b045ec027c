"""Shared fixtures: a real Breakout replay collected once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from wmsim.collect.rollout import CollectConfig, collect


@pytest.fixture(scope="session")
def breakout_replay(tmp_path_factory) -> Path:
    """3000 steps of real Breakout from two emulators, in chunks of 256 steps."""
    out = tmp_path_factory.mktemp("breakout") / "replay"
    collect(CollectConfig(out=out, steps=3000, envs=2, seed=7, chunk_length=256), progress=False)
    return out
