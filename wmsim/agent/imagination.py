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

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from wmsim.agent.actor_critic import ActorCritic
from wmsim.model import AgentWorldModel, LatentWorldModel
from wmsim.model.contract import State
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
    start: Tensor | None = None
    """(B,): 1 - is_terminal of s_0 where s_0 is a real frame's posterior; None where the
    world model imagined s_0 too."""


DreamStep = Callable[[State, Tensor, torch.Generator], tuple[State, Tensor, Tensor, Tensor]]
"""(state, action (B,), generator) -> (state, features (B, F), reward (B,), continue (B,))."""


def uniform_noise(
    model: AgentWorldModel, shape: tuple[int, ...], generator: torch.Generator, like: Tensor
) -> Tensor:
    """Uniform noise (*shape, *model.noise_shape) on ``like``'s device: the latents' draws."""
    return torch.rand(
        (*shape, *model.noise_shape), generator=generator, device=like.device, dtype=torch.float32
    )


def rollout(
    model: AgentWorldModel,
    agent: ActorCritic,
    state: State,
    features: Tensor,
    horizon: int,
    generator: torch.Generator,
    *,
    hard_ends: bool = False,
    dream: DreamStep | None = None,
) -> Trajectory:
    """Dream ``horizon`` steps from ``state``, whose features (B, F) are s_0, with the actor.

    ``hard_ends``: continue flags are 0 or 1 (the probability's side of 1/2) rather than
    the predicted probability. ``dream`` takes each step; by default ``model.imagine``
    with one uniform noise of the model's shape.
    """
    steps: dict[str, list[Tensor]] = {
        "features": [features],
        "actions": [],
        "reward": [],
        "cont": [],
    }
    for _ in range(horizon):
        action = agent.act(features, generator)
        if dream is None:
            noise = uniform_noise(model, (features.shape[0],), generator, features)
            state, features, reward, cont = model.imagine(state, action, noise)
        else:
            state, features, reward, cont = dream(state, action, generator)
        if hard_ends:
            cont = (cont > 0.5).to(cont.dtype)
        for name, value in zip(steps, (features, action, reward, cont), strict=True):
            steps[name].append(value)
    return Trajectory(**{name: torch.stack(values, 1) for name, values in steps.items()})


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
    """Dream ``horizon`` steps with the agent's actions from real contexts (STORM).

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
        obs,
        actions[:, :-1],
        context["is_first"],
        uniform_noise(model, obs.shape[:2], generator, obs),
    )
    state, features, _, _ = model.imagine(
        state, actions[:, -1], uniform_noise(model, (batch,), generator, obs)
    )
    return rollout(model, agent, state, features, horizon, generator, hard_ends=hard_ends)


def read_latent_frame(
    model: LatentWorldModel,
    agent: ActorCritic,
    state: dict[str, Tensor],
    obs: Tensor,
    is_first: Tensor,
    generator: torch.Generator,
) -> tuple[Tensor, State]:
    """A real frame (B, H, W, 3) uint8 and episode starts (B,) -> (features (B, F), model state).

    ``state`` holds the model state and the action taken at the previous frame. The
    model state feeds this frame's own encoding at the next step, not the prediction.
    """
    batch = obs.shape[0]
    post = model.encode(obs.unsqueeze(1))[:, 0]  # (B, S, K)
    z = sample_one_hot(post, uniform_noise(model, (batch,), generator, obs)).flatten(-2)
    # feed (z_t-1, a_t-1): h_t-1 and the prior sample of z_t
    after, predicted, _, _ = model.imagine(
        state["model"], state["action"], uniform_noise(model, (batch,), generator, obs)
    )
    z_prior, h = predicted.split([z.shape[-1], predicted.shape[-1] - z.shape[-1]], -1)
    first = is_first.unsqueeze(-1)
    h = torch.where(first, torch.zeros_like(h), h)
    seen = torch.where(first, z, z_prior) if agent.config.act_on == "prior" else z
    model_state = {**after, "z": z, "first": is_first.clone()}
    return torch.cat([seen, h], -1), model_state
