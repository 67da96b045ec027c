"""Sequence backbones behind one contract (see ``base.py``), chosen by config type."""

from __future__ import annotations

from typing import Any

from wmsim.model.backbones.base import SequenceBackbone, State, TensorSpec
from wmsim.model.backbones.gru import GRUBackbone, GRUConfig
from wmsim.model.backbones.mamba import MambaBackbone, MambaConfig
from wmsim.model.backbones.s5 import S5Backbone, S5Config
from wmsim.model.backbones.transformer import TransformerBackbone, TransformerConfig

BACKBONES: dict[str, tuple[type, type[SequenceBackbone]]] = {
    "transformer": (TransformerConfig, TransformerBackbone),
    "gru": (GRUConfig, GRUBackbone),
    "mamba2": (MambaConfig, MambaBackbone),
    "s5": (S5Config, S5Backbone),
}
"""Name -> (config class, backbone class) of every registered backbone."""

BackboneConfig = TransformerConfig | GRUConfig | MambaConfig | S5Config
"""Any backbone's config; the type selects the backbone."""


def make_backbone(config: Any, input_dim: int, **factory: Any) -> SequenceBackbone:
    """Build the backbone that ``config``'s type names, for inputs of size ``input_dim``."""
    for config_type, backbone in BACKBONES.values():
        if isinstance(config, config_type):
            return backbone(config, input_dim, **factory)
    raise TypeError(f"no backbone is registered for {type(config).__name__}")


__all__ = [
    "BACKBONES",
    "BackboneConfig",
    "GRUConfig",
    "MambaConfig",
    "S5Config",
    "SequenceBackbone",
    "State",
    "TensorSpec",
    "TransformerConfig",
    "make_backbone",
]
