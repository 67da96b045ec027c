"""DreamerV2's imagination and acting on its RSSM: both start from posterior states.

DreamerV2 (Hafner et al., ICLR 2021) learns behaviour from imagined
trajectories that start at every posterior state of a replayed batch: the
RSSM filters each window's frames (h_t from the past, z_t from h_t and the
frame), and each of the B x C states begins its own dream of H steps in which
the actor picks actions from the features [h, z] and the prior supplies z.
The first discount is the real one: a start that ended its episode
(``is_terminal``) weighs nothing.

In the real game the agent runs the same filter one frame at a time: the
previous state and action give h_t, the frame gives the posterior z_t, and
the actor reads [h_t, z_t], a state of the kind it learned from.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from wmsim.agent.actor_critic import ActorCritic
from wmsim.agent.imagination import Trajectory, rollout, uniform_noise
from wmsim.model import RSSMWorldModel
from wmsim.model.contract import State


@torch.no_grad()
def imagine_from_posteriors(
    model: RSSMWorldModel,
    agent: ActorCritic,
    context: dict[str, Tensor],
    horizon: int,
    generator: torch.Generator,
    *,
    hard_ends: bool = False,
) -> Trajectory:
    """Dream ``horizon`` steps from every posterior state of real windows.

    Args:
        model: the RSSM.
        agent: picks the actions.
        context: ``obs`` (B, C, H, W, 3) uint8, ``action``, ``is_first`` and ``is_terminal``
            (B, C) of C real steps; ``action[:, t]`` was taken at frame t.
        horizon: imagined steps H.
        generator: the randomness of latents and actions.
        hard_ends: continue flags are 0 or 1 rather than the predicted probability.

    Returns:
        B * C trajectories, window-major; ``start`` is 1 - is_terminal of each start.
    """
    obs = context["obs"]
    noise = uniform_noise(model, obs.shape[:2], generator, obs)
    states = model.posteriors(obs, context["action"][:, :-1], context["is_first"], noise)
    state = {name: value.flatten(0, 1) for name, value in states.items()}  # (B * C, ...)
    trajectory = rollout(
        model, agent, state, model.latent(state), horizon, generator, hard_ends=hard_ends
    )
    start = 1.0 - context["is_terminal"].flatten().to(trajectory.reward.dtype)
    return dataclasses.replace(trajectory, start=start)


def read_posterior_frame(
    model: RSSMWorldModel,
    agent: ActorCritic,
    state: dict[str, Tensor],
    obs: Tensor,
    is_first: Tensor,
    generator: torch.Generator,
) -> tuple[Tensor, State]:
    """A real frame (B, H, W, 3) uint8 and episode starts (B,) -> (features (B, F), model state).

    ``state`` holds the previous frame's posterior state and the action taken there;
    the features are [h_t, z_t] of this frame's posterior.
    """
    noise = uniform_noise(model, (obs.shape[0],), generator, obs)
    model_state = model.observe_step(state["model"], state["action"], obs, is_first, noise)
    return model.latent(model_state), model_state
