"""How the reference agent imagines in, and acts through, each kind of world model.

The actor-critic is the same on every world model; where its trajectories
start and how it reads a real frame are not. Latent-per-frame models (STORM,
DRAMA, S5, GRU) imagine from a real context and act as STORM does
(:mod:`wmsim.agent.imagination`); DreamerV2's RSSM imagines from every
posterior state of replayed windows and acts on the posterior
(:mod:`wmsim.agent.posterior`); REM imagines from the last of 2 real frames
with POP steps and acts on the tokenizer's code map of the frame
(:mod:`wmsim.agent.tokens`). :data:`STRATEGIES` picks by config type, in
one place, as :data:`wmsim.model.WORLD_MODELS` picks the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from wmsim.agent.actor_critic import ActorCritic
from wmsim.agent.imagination import Trajectory, imagine, read_latent_frame
from wmsim.agent.posterior import imagine_from_posteriors, read_posterior_frame
from wmsim.agent.tokens import imagine_from_tokens, read_token_frame
from wmsim.errors import UserError
from wmsim.model import AgentWorldModel, LatentWorldModelConfig, REMConfig, RSSMConfig
from wmsim.model.contract import State


@dataclass(frozen=True)
class Strategy:
    """One kind of world model's imagination and acting."""

    imagine: Callable[..., Trajectory]
    """(model, agent, context, horizon, generator, *, hard_ends) -> imagined trajectories."""
    read: Callable[..., tuple[Tensor, State]]
    """(model, agent, state, frames (B, H, W, 3), is_first (B,), generator) -> (features
    (B, F), model state): what the actor reads of a real frame."""
    context_keys: tuple[str, ...]
    """The replay fields :attr:`imagine` reads of each window."""
    act_on: tuple[str, ...]
    """The ``ActorCriticConfig.act_on`` values the reading honours."""


STRATEGIES: dict[type, Strategy] = {
    LatentWorldModelConfig: Strategy(
        imagine, read_latent_frame, ("obs", "action", "is_first"), ("prior", "posterior")
    ),
    RSSMConfig: Strategy(
        imagine_from_posteriors, read_posterior_frame,
        ("obs", "action", "is_first", "is_terminal"), ("posterior",),
    ),
    REMConfig: Strategy(
        imagine_from_tokens, read_token_frame,
        ("obs", "action", "is_first", "is_terminal"), ("posterior",),
    ),
}  # fmt: skip
"""World-model config type -> how the reference agent learns in it and acts through it."""


def strategy_for(config: object) -> Strategy:
    """The strategy of the world model that ``config`` configures.

    Raises:
        UserError: the reference agent does not run on that kind of world model.
    """
    if type(config) not in STRATEGIES:
        raise UserError(
            f"the reference agent does not run on a {type(config).__name__} world model yet; "
            "it runs on the latent-per-frame ones, DreamerV2's RSSM and REM"
        )
    return STRATEGIES[type(config)]


class RealPolicy:
    """Acts in the real game with a world model and an actor, as its strategy reads frames.

    The state is data: :meth:`initial` makes it and :meth:`act` returns the next.

    Args:
        model: the world model, in eval mode.
        agent: the actor-critic.
        generator: randomness of latents and actions.
        greedy: take the most likely action instead of sampling (DRAMA evaluates so).
    """

    def __init__(
        self,
        model: AgentWorldModel,
        agent: ActorCritic,
        generator: torch.Generator,
        *,
        greedy: bool = False,
    ):
        self.model, self.agent, self.generator, self.greedy = model, agent, generator, greedy
        self.read = strategy_for(model.config).read
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
    ) -> tuple[Tensor, State]:
        """Frames (B, H, W, 3) uint8 and episode starts (B,) -> (features (B, F), model state).

        :meth:`act` adds the action taken to the model state.
        """
        obs = torch.from_numpy(np.ascontiguousarray(obs)).to(self.device)
        is_first = torch.from_numpy(np.asarray(is_first, bool)).to(self.device)
        return self.read(self.model, self.agent, state, obs, is_first, self.generator)

    @torch.no_grad()
    def act(
        self, state: dict[str, Tensor], obs: np.ndarray, is_first: np.ndarray
    ) -> tuple[np.ndarray, dict[str, Tensor]]:
        """Frames (B, H, W, 3) uint8 and episode starts (B,) -> (actions (B,), next state)."""
        features, model_state = self.features(state, obs, is_first)
        action = self.agent.act(features, self.generator, self.greedy)
        return action.cpu().numpy(), {"model": model_state, "action": action}
