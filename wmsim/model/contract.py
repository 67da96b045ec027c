"""The world-model contract: what training, evaluation, export and dreams may ask of any model.

Every world model (:class:`~wmsim.model.world_model.LatentWorldModel`,
:class:`~wmsim.model.rssm.RSSMWorldModel`, :class:`~wmsim.model.rem.REMWorldModel`)
implements it; ``tests/model/test_world_model_contract.py`` checks each one
against it, and callers use these names only, never ``getattr`` probing.

State is data: :meth:`observe` returns it, :meth:`step` takes and returns it,
and every random draw comes in as a noise tensor of :attr:`noise_shape`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

State = dict[str, Tensor]
"""A model's recurrent state: named tensors with the batch first."""


@runtime_checkable
class WorldModel(Protocol):
    """A world model that learns from replay windows and dreams step by step."""

    config: Any
    """Its config (one of :data:`wmsim.model.WorldModelConfig`); has ``life_loss_ends``."""
    num_actions: int
    clips_rewards: bool
    """It predicts sign(reward), as REM trains on clipped rewards; evaluation compares so."""
    backbone_name: str | None
    """The sequence backbone's name for a latent-per-frame model (``S5``, ...); else None."""

    @property
    def latent_range(self) -> tuple[float, float]:
        """Bounds of :meth:`latent`'s values."""
        ...

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """Shape of the uniform noise :meth:`step` takes per row: one per categorical it draws.

        Each categorical is drawn by its inverse CDF, and a negative value takes its mode
        (:func:`~wmsim.model.distributions.draw`).
        """
        ...

    def loss(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Replay windows (B, T, ...) -> the scalar loss and its named parts."""
        ...

    def export_form(self) -> WorldModel:
        """The model as its exported graphs compute it; for export, never for training.

        The same outputs from the inputs the graphs get (latents as :meth:`step` and
        :meth:`observe` give them), possibly by fewer operations; itself where there is
        no shortcut.
        """
        ...

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """The optimizer's parameter groups, in module order (a resumed optimizer needs it)."""
        ...

    def observe(
        self, frames: Tensor, actions: Tensor, is_first: Tensor, noise: Tensor | None = None
    ) -> State:
        """A real context (B, T, H, W, 3), (B, T - 1), (B, T) -> the state after its last frame."""
        ...

    def step(
        self, state: State, action: Tensor, noise: Tensor | None = None
    ) -> tuple[State, Tensor, Tensor, Tensor]:
        """One dreamed step: (state, action (B,), noise) -> (state, reward, continue, latent)."""
        ...

    def latent(self, state: State) -> Tensor:
        """The state's latent, what :meth:`decode` draws and latent dream envs observe."""
        ...

    def decode(self, latent: Tensor) -> Tensor:
        """Latents (..., L) -> frames (..., H, W, 3) in [0, 1]."""
        ...

    def reconstruct(self, frames: Tensor) -> Tensor | None:
        """uint8 frames through a token model's tokenizer (what its tokens can carry); else None."""
        ...


@runtime_checkable
class AgentWorldModel(WorldModel, Protocol):
    """A world model the reference agent (``wmsim.agent``) learns in: it dreams features.

    How an agent starts its dreams and reads real frames differs by kind of
    model; ``wmsim.agent.strategy`` picks that from a dict keyed by config type.
    """

    @property
    def feature_size(self) -> int:
        """Size F of the features :meth:`imagine` returns, what the actor and critic read."""
        ...

    def initial_state(self, batch_size: int, device=None) -> State:
        """The state of ``batch_size`` rows that have seen nothing."""
        ...

    def imagine(
        self, state: State, action: Tensor, noise: Tensor | None = None
    ) -> tuple[State, Tensor, Tensor, Tensor]:
        """One dreamed step: action (B,) -> (state, features (B, F), reward (B,), continue (B,))."""
        ...


def one_group(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Every parameter in one optimizer group, in module order."""
    return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
