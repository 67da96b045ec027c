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


@pytest.fixture(scope="session")
def inverse_cdf_bundle(tmp_path_factory) -> Path:
    """A format-2 bundle (one uniform per categorical): the tiny preset, fresh weights.

    The embedded default is format 1 until it is exported again; runtime and serving
    tests dream this one beside it. Its start contexts are random frames.
    """
    import numpy as np
    import torch

    from wmsim.configs import to_dict
    from wmsim.export.writer import write_bundle
    from wmsim.model import make_world_model
    from wmsim.train.config import preset

    config = preset("tiny")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = make_world_model(config.model, 4).eval()
    rng = np.random.default_rng(0)
    is_first = np.zeros((16, config.context), bool)
    is_first[:, 0] = True
    contexts = {
        "frames": rng.integers(0, 256, (16, config.context, 64, 64, 3), dtype=np.uint8),
        "actions": rng.integers(0, 4, (16, config.context - 1)),
        "is_first": is_first,
    }
    out = tmp_path_factory.mktemp("format-2") / "Breakout.wmsim"
    write_bundle(out, model, contexts, game="Breakout", actions=["NOOP", "FIRE", "RIGHT", "LEFT"],
                 env={}, config={"train": to_dict(config)}, training={})  # fmt: skip
    return out
