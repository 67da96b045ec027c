"""Imagined trajectories for the actor-critic, and the same features in the real game.

STORM's imagination (Zhang et al. 2023): the world model observes a
real context of C frames and the C actions taken there; the last action
predicts the first imagined latent. From then on the actor picks each action
from the features [z, h]: a latent beside the backbone output that predicted
it. So in imagination every feature is a prior sample.

In the real game the agent keeps the world model's state one step behind the
frame: before acting on frame t it feeds (z_t-1, a_t-1), which gives h_t-1 and
the prior sample of z_t. STORM and DRAMA act on that prior sample (``prior``),
the input the actor saw in imagination; ``posterior`` acts on the frame's own
encoding instead. At an episode's first frame no h exists yet: the agent
reads [z_t, 0] there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from wmsim.agent.actor_critic import ActorCritic
from wmsim.model import LatentWorldModel
from wmsim.model.distributions import sample_one_hot


@dataclass(frozen=True)
class Trajectory:
    """An imagined batch of trajectories of ``horizon`` steps."""

    features: Tensor
    """(B, H + 1, F): the states s_0..s_H."""
    actions: Tensor
    """(B, H): the action taken at s_0..s_H-1."""
    reward: Tensor
    """(B, H): the predicted reward of each step."""
    cont: Tensor
    """(B, H): the predicted continue probability (or flag) of arriving at s_1..s_H."""


def _noise(
    model: LatentWorldModel, shape: tuple[int, ...], generator: torch.Generator, like: Tensor
):
    return torch.rand(
        (*shape, *model.noise_shape), generator=generator, device=like.device, dtype=torch.float32
    )


@torch.no_grad()
def imagine(
    model: LatentWorldModel,
    agent: ActorCritic,
    context: dict[str, Tensor],
    horizon: int,
    generator: torch.Generator,
    *,
    hard_ends: bool = False,
) -> Trajectory:
    """Dream ``horizon`` steps with the agent's actions from real contexts.

    Args:
        model: the world model.
        agent: picks the actions.
        context: ``obs`` (B, C, H, W, 3) uint8, ``action`` (B, C) and ``is_first`` (B, C)
            of C real steps; ``action[:, -1]`` is the action taken at the last frame.
        horizon: imagined steps H.
        generator: the randomness of latents and actions.
        hard_ends: continue flags are 0 or 1 (the logit's sign, STORM and DRAMA) rather
            than the predicted probability.
    """
    obs, actions = context["obs"], context["action"]
    batch = obs.shape[0]
    state = model.observe(
        obs, actions[:, :-1], context["is_first"], _noise(model, obs.shape[:2], generator, obs)
    )
    state, features, _, _ = model.imagine(
        state, actions[:, -1], _noise(model, (batch,), generator, obs)
    )
    steps: dict[str, list[Tensor]] = {
        "features": [features],
        "actions": [],
        "reward": [],
        "cont": [],
    }
    for _ in range(horizon):
        action = agent.act(features, generator)
        state, features, reward, cont = model.imagine(
            state, action, _noise(model, (batch,), generator, obs)
        )
        if hard_ends:
            cont = (cont > 0.5).to(cont.dtype)
        for name, value in zip(steps, (features, action, reward, cont), strict=True):
            steps[name].append(value)
    return Trajectory(**{name: torch.stack(values, 1) for name, values in steps.items()})


class RealPolicy:
    """Acts in the real game with a world model and an actor (see the module docstring).

    The state is data: :meth:`initial` makes it and :meth:`act` returns the next.

    Args:
        model: the world model, in eval mode.
        agent: the actor-critic.
        generator: randomness of latents and actions.
        greedy: take the most likely action instead of sampling (DRAMA evaluates so).
    """

    def __init__(
        self,
        model: LatentWorldModel,
        agent: ActorCritic,
        generator: torch.Generator,
        *,
        greedy: bool = False,
    ):
        self.model, self.agent, self.generator, self.greedy = model, agent, generator, greedy
        self.device = next(model.parameters()).device

    def initial(self, batch: int) -> dict[str, Tensor]:
        """The state of ``batch`` envs that have seen nothing."""
        return {
            "model": self.model.initial_state(batch, self.device),
            "action": torch.zeros(batch, dtype=torch.long, device=self.device),
        }

    @torch.no_grad()
    def features(
        self, state: dict[str, Tensor], obs: np.ndarray, is_first: np.ndarray
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Frames (B, H, W, 3) uint8 and episode starts (B,) -> (features (B, F), model state).

        The model state feeds this frame's own encoding at the next step, not
        the prediction; :meth:`act` adds the action taken.
        """
        model, batch = self.model, obs.shape[0]
        obs = torch.from_numpy(np.ascontiguousarray(obs)).to(self.device)
        is_first = torch.from_numpy(np.asarray(is_first, bool)).to(self.device)
        post = model.encode(obs.unsqueeze(1))[:, 0]  # (B, S, K)
        z = sample_one_hot(post, _noise(model, (batch,), self.generator, obs)).flatten(-2)
        # feed (z_t-1, a_t-1): h_t-1 and the prior sample of z_t
        after, predicted, _, _ = model.imagine(
            state["model"], state["action"], _noise(model, (batch,), self.generator, obs)
        )
        z_prior, h = predicted.split([z.shape[-1], predicted.shape[-1] - z.shape[-1]], -1)
        first = is_first.unsqueeze(-1)
        h = torch.where(first, torch.zeros_like(h), h)
        seen = torch.where(first, z, z_prior) if self.agent.config.act_on == "prior" else z
        model_state = {**after, "z": z, "first": is_first.clone()}
        return torch.cat([seen, h], -1), model_state

    @torch.no_grad()
    def act(
        self, state: dict[str, Tensor], obs: np.ndarray, is_first: np.ndarray
    ) -> tuple[np.ndarray, dict[str, Tensor]]:
        """Frames (B, H, W, 3) uint8 and episode starts (B,) -> (actions (B,), next state)."""
        features, model_state = self.features(state, obs, is_first)
        action = self.agent.act(features, self.generator, self.greedy)
        return action.cpu().numpy(), {"model": model_state, "action": action}
