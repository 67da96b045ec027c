"""Judging a world model on held-out data: open-loop dreams against what really happened.

The last part of every stream is held out of training (:func:`split_starts`).
An evaluation window is ``context`` real frames followed by ``horizon`` real
steps; the model observes the context, then dreams the horizon open-loop from
the real actions alone. Reported beside each other:

- frame error (mean squared error per pixel, values in [0, 1]) at given
  horizons, and the same for copying the last context frame, the baseline a
  model must beat to have learned any dynamics;
- reward accuracy (|predicted - real| < 0.5) and reward-event recall (the
  share of real non-zero rewards predicted with the right sign and size),
  against the reward's sign for models that predict clipped rewards (REM);
- continue accuracy (continue probability > 0.5 matches the real continuation)
  and end recall (the share of real ends, lost lives included where the model
  counts them, that the dream ends at). Ends are rare, so accuracy alone
  cannot tell a model that learned them from one that always continues.

Dreams use the most likely latent at every step, so evaluation is deterministic.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from wmsim.replay.reader import Replay


def split_starts(replay: Replay, length: int, holdout: float) -> tuple[np.ndarray, np.ndarray]:
    """Window starts for training and for evaluation, with no step in both.

    The last ``holdout`` share of every contiguous stream run is held out:
    training windows end before it, evaluation windows lie inside it.
    """
    train, held_out = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for rows in replay.segment_rows():
        boundary = len(rows) - int(np.ceil(holdout * len(rows)))
        train.append(rows[: max(0, boundary - length + 1)])
        held_out.append(rows[boundary : max(boundary, len(rows) - length + 1)])
    return np.concatenate(train), np.concatenate(held_out)


def episode_windows(replay: Replay, starts: np.ndarray, length: int, count: int) -> np.ndarray:
    """Up to ``count`` of ``starts``, evenly spread, whose windows stay in one episode.

    A dream cannot know that the game was reset, so no episode may start after
    a window's first step.
    """
    if len(starts) == 0:
        return starts
    flags = replay.gather(starts, length, fields=("is_first",))["is_first"]
    inside = starts[~flags[:, 1:].any(1)]
    if len(inside) <= count:
        return inside
    return inside[np.linspace(0, len(inside) - 1, count).round().astype(int)]


@torch.no_grad()
def open_loop(
    model: nn.Module, windows: dict[str, torch.Tensor], context: int
) -> dict[str, torch.Tensor]:
    """Dream every window after its first ``context`` frames, with the real actions.

    Args:
        model: a world model (observe / step / decode).
        windows: field -> (B, context + H, ...) tensors on the model's device.
        context: real frames observed before dreaming.

    Returns:
        frames (B, H, 64, 64, 3) in [0, 1], reward (B, H), cont (B, H): the
        dream's prediction for steps context .. context + H - 1.
    """
    frames, actions = windows["obs"], windows["action"]
    state = model.observe(
        frames[:, :context], actions[:, : context - 1], windows["is_first"][:, :context]
    )
    out: dict[str, list[torch.Tensor]] = {"frames": [], "reward": [], "cont": []}
    for k in range(frames.shape[1] - context):
        state, reward, cont, latent = model.step(state, actions[:, context - 1 + k])
        out["frames"].append(model.decode(latent))
        out["reward"].append(reward)
        out["cont"].append(cont)
    return {k: torch.stack(v, 1) for k, v in out.items()}


def evaluate(
    model: nn.Module,
    windows: dict[str, torch.Tensor],
    context: int,
    horizons: tuple[int, ...] = (1, 8, 16),
    life_loss_ends: bool = False,
) -> dict[str, float]:
    """Open-loop metrics on held-out windows (see the module docstring)."""
    was_training = model.training
    model.eval()
    dream = open_loop(model, windows, context)
    model.train(was_training)
    real = windows["obs"][:, context:].float() / 255.0
    last = windows["obs"][:, context - 1 : context].float() / 255.0
    model_error = (dream["frames"] - real).square().mean((0, 2, 3, 4))  # (H,)
    copy_error = (last - real).square().mean((0, 2, 3, 4))
    metrics = {}
    for h in horizons:
        if h <= len(model_error):
            metrics[f"frame_mse_h{h}"] = float(model_error[h - 1])
            metrics[f"copy_mse_h{h}"] = float(copy_error[h - 1])
    reward = windows["reward"][:, context:]
    if getattr(model, "clips_rewards", False):  # the model predicts sign(reward) (REM)
        reward = reward.sign()
    close = (dream["reward"] - reward).abs() < 0.5
    metrics["reward_accuracy"] = float(close.float().mean())
    events = reward != 0
    metrics["reward_events"] = int(events.sum())
    metrics["reward_recall"] = float(close[events].float().mean()) if events.any() else float("nan")
    ends = windows["is_terminal"][:, context:]
    if life_loss_ends:
        ends = ends | windows["life_loss"][:, context:]
    metrics["continue_accuracy"] = float(((dream["cont"] > 0.5) == ~ends).float().mean())
    metrics["end_events"] = int(ends.sum())
    caught = dream["cont"][ends] <= 0.5
    metrics["end_recall"] = float(caught.float().mean()) if ends.any() else float("nan")
    return metrics
