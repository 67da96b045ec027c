"""Held-out evaluation: the split never leaks, and the metrics are right for known predictions."""

import numpy as np
import pytest
import torch
from helpers import write_synthetic
from torch import nn

from wmsim.replay import Replay
from wmsim.train.evaluate import episode_windows, evaluate, split_starts


def test_training_and_evaluation_windows_share_no_step(tmp_path):
    write_synthetic(tmp_path, [[30, 40, 25], [90]], chunk_length=16)
    replay = Replay(tmp_path)
    train, held_out = split_starts(replay, 10, holdout=0.2)
    train_rows = {int(s) + k for s in train for k in range(10)}
    held_rows = {int(s) + k for s in held_out for k in range(10)}
    assert train_rows and held_rows and not train_rows & held_rows
    # every window lies inside one stream (the global index may interleave streams)
    for starts in (train, held_out):
        batch = replay.gather(starts, 10)
        assert (np.diff(batch["obs"][:, :, 0, 0, 0].astype(int), axis=1) == 1).all()
    assert len(held_rows) / replay.num_steps == pytest.approx(0.2, abs=0.05)


def test_evaluation_windows_stay_inside_one_episode(tmp_path):
    write_synthetic(tmp_path, [[12, 12, 12, 12]], chunk_length=16)
    replay = Replay(tmp_path)
    starts = episode_windows(replay, replay.window_starts(6), 6, count=100)
    flags = replay.gather(starts, 6)["is_first"]
    assert len(starts) > 0 and not flags[:, 1:].any()
    assert len(episode_windows(replay, replay.window_starts(6), 6, count=3)) == 3


class Oracle(nn.Module):
    """A fake world model that dreams the given future exactly, or repeats the last frame."""

    clips_rewards = False  # the part of the world-model contract evaluation reads

    def __init__(self, windows, context, copy=False):
        super().__init__()
        self.windows, self.context, self.copy = windows, context, copy

    def observe(self, frames, actions, is_first):
        return {"k": 0}

    def step(self, state, action):
        k = state["k"]
        t = self.context - 1 if self.copy else self.context + k
        frames = self.windows["obs"][:, t].float() / 255.0
        reward = self.windows["reward"][:, self.context + k]
        cont = (~self.windows["is_terminal"][:, self.context + k]).float()
        return {"k": k + 1}, reward, cont, frames

    def latent(self, state):
        return self.windows["obs"][:, self.context - 1].float() / 255.0

    def decode(self, latent):
        return latent


def windows(seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 256, (4, 24, 64, 64, 3), generator=g, dtype=torch.uint8)
    reward = (torch.rand(4, 24, generator=g) < 0.2).float()
    is_terminal = torch.zeros(4, 24, dtype=torch.bool)
    is_terminal[0, -1] = True
    return {"obs": obs, "reward": reward, "is_terminal": is_terminal,
            "action": torch.zeros(4, 24, dtype=torch.long),
            "is_first": torch.zeros(4, 24, dtype=torch.bool),
            "life_loss": torch.zeros(4, 24, dtype=torch.bool)}  # fmt: skip


def test_a_perfect_dream_scores_zero_error_and_full_accuracy():
    w = windows()
    metrics = evaluate(Oracle(w, 8), w, context=8)
    assert metrics["h1_mse"] == metrics["h16_mse"] == 0.0
    assert metrics["h1_copy_mse"] > 0.1  # random frames: copying is far off
    assert metrics["reward_accuracy"] == metrics["continue_accuracy"] == 1.0
    assert metrics["reward_recall"] == 1.0 and metrics["reward_events"] > 0
    assert metrics["end_recall"] == 1.0 and metrics["end_events"] == 1


def test_copying_the_last_frame_scores_the_copy_baseline():
    w = windows()
    metrics = evaluate(Oracle(w, 8, copy=True), w, context=8)
    for h in (1, 4, 16):
        for kind in ("mse", "moving_mse", "object_recall", "spurious"):
            ours, copied = metrics[f"h{h}_{kind}"], metrics[f"h{h}_copy_{kind}"]
            assert ours == pytest.approx(copied, nan_ok=True)


class AlwaysContinues(Oracle):
    def step(self, state, action):
        state, reward, cont, frames = super().step(state, action)
        return state, reward, torch.ones_like(cont), frames


def test_a_model_that_never_ends_is_accurate_but_recalls_no_end():
    w = windows()
    w["life_loss"][1, 12] = w["life_loss"][2, 20] = True
    metrics = evaluate(AlwaysContinues(w, 8), w, context=8, life_loss_ends=True)
    assert metrics["continue_accuracy"] == pytest.approx(1 - 3 / (4 * 16))
    assert metrics["end_events"] == 3 and metrics["end_recall"] == 0.0
