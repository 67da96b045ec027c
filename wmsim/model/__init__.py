"""World models: encoders, sequence backbones, heads, decoders.

This package knows nothing of replay, training, export or serving
(``tests/test_import_hygiene.py``). World models are chosen by config type:
:class:`LatentWorldModelConfig` (one latent per frame, any backbone) or
:class:`RSSMConfig` (DreamerV2's RSSM) or :class:`REMConfig` (REM's tokens on a RetNet).
"""

from __future__ import annotations

from wmsim.model.contract import AgentWorldModel, WorldModel
from wmsim.model.rem import REMConfig, REMWorldModel
from wmsim.model.rssm import RSSMConfig, RSSMWorldModel
from wmsim.model.world_model import LatentWorldModel, LatentWorldModelConfig

WorldModelConfig = LatentWorldModelConfig | RSSMConfig | REMConfig
"""Any world model's config; the type selects the model."""

WORLD_MODELS: dict[type, type[WorldModel]] = {
    LatentWorldModelConfig: LatentWorldModel,
    RSSMConfig: RSSMWorldModel,
    REMConfig: REMWorldModel,
}


def make_world_model(config: WorldModelConfig, num_actions: int, **factory) -> WorldModel:
    """Build the world model that ``config``'s type names (an ``nn.Module`` too)."""
    return WORLD_MODELS[type(config)](config, num_actions, **factory)


__all__ = [
    "AgentWorldModel",
    "LatentWorldModel",
    "LatentWorldModelConfig",
    "REMConfig",
    "REMWorldModel",
    "RSSMConfig",
    "RSSMWorldModel",
    "WorldModel",
    "WorldModelConfig",
    "make_world_model",
]
