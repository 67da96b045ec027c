"""Judging a world model on held-out data: open-loop dreams against what really happened.

The last part of every stream is held out of training (:func:`split_starts`).
An evaluation window is ``context`` real frames followed by ``horizon`` real
steps; the model observes the context, then dreams the horizon open-loop from
the real actions alone. Reported beside each other:

- frame error (mean squared error per pixel, values in [0, 1]), error on the
  moving pixels and small-object recall (:mod:`wmsim.fidelity`), for the
  reconstruction of the last context frame and at given horizons, each beside
  copying the last real frame, the baseline a model must beat to have learned
  any dynamics;
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

from wmsim import fidelity
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
        dream's prediction for steps context .. context + H - 1; recon
        (B, 64, 64, 3): the model's picture of the last context frame.
    """
    frames, actions = windows["obs"], windows["action"]
    state = model.observe(
        frames[:, :context], actions[:, : context - 1], windows["is_first"][:, :context]
    )
    recon = model.decode(model.latent(state))  # (B, H, W, 3): the last context frame
    out: dict[str, list[torch.Tensor]] = {"frames": [], "reward": [], "cont": []}
    for k in range(frames.shape[1] - context):
        state, reward, cont, latent = model.step(state, actions[:, context - 1 + k])
        out["frames"].append(model.decode(latent))
        out["reward"].append(reward)
        out["cont"].append(cont)
    return {"recon": recon, **{k: torch.stack(v, 1) for k, v in out.items()}}


def evaluate(
    model: nn.Module,
    windows: dict[str, torch.Tensor],
    context: int,
    horizons: tuple[int, ...] = (1, 4, 16),
    life_loss_ends: bool = False,
) -> dict[str, float]:
    """Open-loop metrics on held-out windows (see the module docstring)."""
    was_training = model.training
    model.eval()
    dream = open_loop(model, windows, context)
    model.train(was_training)
    metrics = frame_fidelity(windows["obs"].cpu().numpy(), context, dream, horizons)
    reward = windows["reward"][:, context:]
    if model.clips_rewards:  # the model predicts sign(reward) (REM)
        reward = reward.sign()
    close = (dream["reward"] - reward).abs() < 0.5
    metrics["reward_accuracy"] = float(close.float().mean())
    metrics.update(fidelity.event_metrics(dream["reward"].cpu().numpy(), reward.cpu().numpy()))
    ends = windows["is_terminal"][:, context:]
    if life_loss_ends:
        ends = ends | windows["life_loss"][:, context:]
    metrics["continue_accuracy"] = float(((dream["cont"] > 0.5) == ~ends).float().mean())
    metrics.update(fidelity.end_metrics(dream["cont"].cpu().numpy(), ends.cpu().numpy()))
    return metrics


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """Model frames in [0, 1] -> uint8 numpy, rounded as the exported decode graph rounds."""
    return (frames.float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()


def frame_fidelity(
    obs: np.ndarray, context: int, dream: dict[str, torch.Tensor], horizons: tuple[int, ...]
) -> dict[str, float]:
    """:mod:`wmsim.fidelity`'s frame metrics of a reconstruction and a dream, beside copying.

    ``obs`` (B, context + H, 64, 64, 3) uint8 are the real windows. The baseline
    for step context + h - 1 is the last context frame; for the reconstruction,
    the frame before it.
    """
    metrics = {}
    last = obs[:, context - 1]
    named = {"recon": (obs[:, context - 2], last, to_uint8(dream["recon"]), obs[:, context - 2])}
    frames = to_uint8(dream["frames"])
    for h in horizons:
        if h <= frames.shape[1]:
            t = context + h - 1
            named[f"h{h}"] = (obs[:, t - 1], obs[:, t], frames[:, h - 1], last)
    for name, (previous, real, model, copy) in named.items():
        ours = fidelity.frame_metrics(previous, real, model)
        baseline = fidelity.frame_metrics(previous, real, copy)
        for key in ("mse", "moving_mse", "object_recall", "spurious"):
            metrics[f"{name}_{key}"] = ours[key]
            metrics[f"{name}_copy_{key}"] = baseline[key]
        metrics[f"{name}_objects"] = ours["objects"]
    return metrics
