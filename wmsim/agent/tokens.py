"""REM's imagination and acting on its token model: the agent sees the tokenizer's code map.

REM (Cohen et al., "Improving Token-Based World Models with Parallel
Observation Prediction", ICML 2024) trains its controller in dreams seeded
with the last 2 real frames and the action between them: the RetNet reads
[z_t-1, a_t-1] and holds z_t pending, the controller acts on the real frame
z_t, and each action then costs one POP step (:meth:`REMWorldModel.step`):
the pending frame and the action update the state, 64 tokens of the next
frame are sampled at once, and the reward's sign and the episode's end are
sampled from their heads, so imagined rewards are -1, 0 or 1.

What the agent reads of a frame, dreamed or real, is the tokenizer's code
map z_q: the codebook vectors of the frame's 64 tokens
(:meth:`REMWorldModel.features`). In the real game it tokenizes the frame and
reads the same map; as in REM, the world model is not run when acting.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from wmsim.agent.actor_critic import ActorCritic
from wmsim.agent.imagination import DreamStep, Trajectory, rollout, uniform_noise
from wmsim.model import REMWorldModel
from wmsim.model.contract import State


def sampled_outcomes(model: REMWorldModel) -> DreamStep:
    """A dream step that samples the next frame's tokens, the reward's sign and the end."""

    def dream(state: State, action: Tensor, generator: torch.Generator):
        batch = action.shape[0]
        noise = uniform_noise(model, (batch,), generator, action)
        outcome = torch.rand((batch, 2), generator=generator, device=action.device)
        return model.imagine(state, action, noise, outcome)

    return dream


@torch.no_grad()
def imagine_from_tokens(
    model: REMWorldModel,
    agent: ActorCritic,
    context: dict[str, Tensor],
    horizon: int,
    generator: torch.Generator,
    *,
    hard_ends: bool = False,
) -> Trajectory:
    """Dream ``horizon`` steps from the last frame of real contexts, as REM's agent does.

    Args:
        model: REM's world model.
        agent: picks the actions, the first at the context's last (real) frame.
        context: ``obs`` (B, C, H, W, 3) uint8, ``action``, ``is_first`` and ``is_terminal``
            (B, C) of C real steps; the action taken at the last frame is not read.
        horizon: imagined steps H.
        generator: the randomness of tokens, rewards, ends and actions.
        hard_ends: unused: sampled continue flags are 0 or 1 already.

    Returns:
        B trajectories whose s_0 is the code map of the last real frame; ``start`` is
        1 - is_terminal of that frame.
    """
    state = model.observe(context["obs"], context["action"][:, :-1], context["is_first"])
    features = model.features(model.latent(state))  # (B, 64 * code_size)
    trajectory = rollout(
        model, agent, state, features, horizon, generator, dream=sampled_outcomes(model)
    )
    start = 1.0 - context["is_terminal"][:, -1].to(trajectory.reward.dtype)
    return dataclasses.replace(trajectory, start=start)


def read_token_frame(
    model: REMWorldModel,
    agent: ActorCritic,
    state: dict[str, Tensor],
    obs: Tensor,
    is_first: Tensor,
    generator: torch.Generator,
) -> tuple[Tensor, State]:
    """A real frame (B, H, W, 3) uint8 and episode starts (B,) -> (features (B, F), model state).

    The features are the code map of the frame's tokens; the model state passes through
    unchanged, as acting does not run the world model.
    """
    return model.features(model.tokenizer.tokenize(obs)), state["model"]
