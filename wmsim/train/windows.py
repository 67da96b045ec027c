"""A training run's windows of a replay, and the random streams that draw its batches.

Both training loops draw batches alike: ``wmsim train`` (a whole world model) and
``wmsim bundle decoder`` (a new decoder for a bundle's frozen model). The last
``holdout`` share of every stream is held out, and the held-out windows that stay in
one episode are the evaluation set. Training windows come from the sampler, with a
share of them holding a reward or an end. A run's exact resume needs three streams
saved and restored: the window draws (numpy), the latent noise (a torch generator on
the run's device) and the sampler's counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from wmsim.errors import UserError
from wmsim.replay import SAMPLERS, Replay
from wmsim.replay.samplers import balanced_starts, event_rows, windows_with_events
from wmsim.train.config import TrainConfig
from wmsim.train.evaluate import episode_windows, split_starts
from wmsim.train.step import to_torch


class Windows:
    """Training and held-out windows of ``replay`` for ``config``, and the streams that draw them.

    Args:
        replay: the run's data.
        config: the run's config (window length, context, horizon, holdout, batch, sampler,
            evaluation windows; the model's ``life_loss_ends`` says which ends are events).
        device: where batches and the held-out windows go.
        seed: seeds the streams (:meth:`seed`).
        data: the replay's path, named in errors.

    Raises:
        UserError: too few training windows for one batch.
    """

    def __init__(
        self, replay: Replay, config: TrainConfig, device: torch.device, seed: int, data: Path
    ):
        c = config
        self.replay, self.length, self.device = replay, c.length, device
        self.sampler_name = c.sampler
        self.train_starts, _ = split_starts(replay, c.length, c.holdout)
        if len(self.train_starts) < c.batch:
            raise UserError(
                f"{data} holds {replay.num_steps} steps: too few for batches of {c.batch} "
                f"windows of {c.length} steps with {c.holdout:.0%} held out; collect more data "
                "(or, training a world model, use a shorter --length)"
            )
        span = c.context + c.horizon
        held_out = split_starts(replay, span, c.holdout)[1]
        eval_starts = episode_windows(replay, held_out, span, c.eval_windows)
        self.held_out = to_torch(replay.gather(eval_starts, span), device)
        """Held-out windows of ``context + horizon`` steps, each in one episode."""
        events = event_rows(replay, life_loss=c.model.life_loss_ends)
        self.event_starts = windows_with_events(self.train_starts, events, c.length)
        self.seed(seed)

    def seed(self, seed: int) -> None:
        """Fresh streams from ``seed``: window draws, latent noise, and a new sampler."""
        self.rng = np.random.default_rng(seed)
        self.noise = torch.Generator(self.device).manual_seed(seed)
        """The latent noise of the training step."""
        self.sampler = SAMPLERS[self.sampler_name]()

    def batch(self, size: int, event_share: float) -> dict[str, torch.Tensor]:
        """``size`` training windows, about ``event_share`` of them with an event -> tensors."""
        starts = balanced_starts(
            self.sampler, self.train_starts, self.event_starts, size, event_share, self.rng
        )
        return to_torch(self.replay.gather(starts, self.length), self.device)

    def streams(self) -> dict[str, Any]:
        """The streams' state, as a checkpoint holds it."""
        return {
            "rng_numpy": self.rng.bit_generator.state,
            "rng_noise": self.noise.get_state(),
            "sampler": {k: torch.from_numpy(v) for k, v in self.sampler.state_dict().items()},
        }

    def restore(self, saved: dict[str, Any]) -> None:
        """Put the streams where :meth:`streams` saw them (``saved`` may hold more keys)."""
        self.rng.bit_generator.state = saved["rng_numpy"]
        self.noise.set_state(saved["rng_noise"])
        self.sampler.load_state_dict({k: v.numpy() for k, v in saved["sampler"].items()})
