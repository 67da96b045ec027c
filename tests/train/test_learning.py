"""The tiny world model learns real Breakout, judged on held-out data.

Two levels, both on 20,000 steps of real Breakout collected here:

- in the default suite (about 7 minutes on 2 cores): after 2,000 steps the
  latents carry the frame (held-out frames decoded from their own latents come
  out well under the error of the mean frame, the level at which a model sits
  while its latents carry nothing; a tiny model without BatchNorm stays there
  for thousands of steps), and the dream one step ahead is under it too;
- with ``-m long`` (about 13 minutes on 2 cores per model): the dream one
  step ahead beats copying the last real frame, for the tiny transformer,
  Mamba-2 and S5 models.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wmsim.collect.rollout import CollectConfig, collect
from wmsim.replay import Replay
from wmsim.train.checkpoint import load_run
from wmsim.train.config import PRESETS
from wmsim.train.evaluate import split_starts
from wmsim.train.loop import TrainArgs, train


@pytest.fixture(scope="module")
def breakout_20k(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("breakout20k") / "replay"
    collect(CollectConfig(out=out, steps=20_000, envs=2, seed=0), progress=False)
    return out


def frames(replay: Replay, rows: np.ndarray, count: int) -> np.ndarray:
    """About ``count`` frames (N, 64, 64, 3) uint8, evenly spread over ``rows``."""
    return replay.gather(rows[:: max(1, len(rows) // count)], 1, fields=("obs",))["obs"][:, 0]


def mean_frame_error(data: Path) -> float:
    """Squared error per pixel of the training frames' mean against the held-out frames."""
    replay = Replay(data)
    train_rows, held_out = split_starts(replay, 1, PRESETS["tiny"].holdout)
    mean = frames(replay, train_rows, 4000).mean(0) / 255.0
    return float(np.square(frames(replay, held_out, 500) / 255.0 - mean).mean())


@torch.no_grad()
def reconstruction_error(data: Path, run: Path) -> float:
    """Squared error per pixel of held-out frames decoded from their own most likely latents."""
    model, _ = load_run(run, torch.device("cpu"))
    replay = Replay(data)
    held_out = split_starts(replay, 1, PRESETS["tiny"].holdout)[1]
    real = torch.from_numpy(frames(replay, held_out, 500))[None]
    log_probs = model.encode(real)
    latent = F.one_hot(log_probs.argmax(-1), log_probs.shape[-1]).flatten(-2).float()
    return float((model.decode(latent) - real / 255.0).square().mean())


def run(data: Path, out: Path, steps: int, preset: str = "tiny") -> dict[str, float]:
    args = TrainArgs(
        data=data, out=out, steps=steps, preset=preset, device="cpu",
        eval_every=steps, checkpoint_every=steps,
    )  # fmt: skip
    return train(args, progress=False)


@pytest.mark.slow
def test_a_few_minutes_of_training_puts_the_frame_in_the_latents(breakout_20k, tmp_path):
    metrics = run(breakout_20k, tmp_path / "run", 2000)
    mean = mean_frame_error(breakout_20k)
    assert reconstruction_error(breakout_20k, tmp_path / "run") < 0.7 * mean
    assert metrics["h1_mse"] < mean, metrics
    assert metrics["continue_accuracy"] > 0.9, metrics


@pytest.mark.long
@pytest.mark.parametrize("preset", ["tiny", "tiny-drama", "tiny-s5"])
def test_longer_training_dreams_better_than_copying_the_last_frame(breakout_20k, tmp_path, preset):
    metrics = run(breakout_20k, tmp_path / "run", 5000, preset)
    assert metrics["h1_mse"] < metrics["h1_copy_mse"], metrics
