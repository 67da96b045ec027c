"""Configs as plain JSON: dataclasses tagged with their class name, and back.

Resolved configs are saved next to every checkpoint and bundle. A union field
(a backbone, a world model) keeps its type through the ``"type"`` tag, and
reading refuses a tag or a field it does not know, so an old file never
loads silently into a changed class.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from wmsim.errors import UserError


def config_classes() -> dict[str, type]:
    """Every config class that may appear in a saved config, by name."""
    from wmsim.agent.actor_critic import ActorCriticConfig
    from wmsim.agent.config import AgentConfig
    from wmsim.collect.atari import AtariConfig
    from wmsim.model import LatentWorldModelConfig, REMConfig, RSSMConfig
    from wmsim.model.backbones import BACKBONES
    from wmsim.model.retnet import RetNetConfig
    from wmsim.model.tokenizer import TokenizerConfig
    from wmsim.train.config import TrainConfig

    classes = [AtariConfig, LatentWorldModelConfig, RSSMConfig, TrainConfig]
    classes += [REMConfig, RetNetConfig, TokenizerConfig, AgentConfig, ActorCriticConfig]
    classes += [config for config, _ in BACKBONES.values()]
    return {cls.__name__: cls for cls in classes}


def to_dict(config: Any) -> Any:
    """A dataclass (possibly nested) as JSON-ready dicts with ``"type"`` tags."""
    if dataclasses.is_dataclass(config):
        fields = {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
        return {"type": type(config).__name__, **fields}
    if isinstance(config, (list, tuple)):
        return [to_dict(item) for item in config]
    return config


def from_dict(data: Any) -> Any:
    """Inverse of :func:`to_dict`.

    Raises:
        UserError: an unknown type tag or field, e.g. from another wmsim version.
    """
    if isinstance(data, list):
        return [from_dict(item) for item in data]
    if not isinstance(data, dict) or "type" not in data:
        return data
    classes = config_classes()
    name = data["type"]
    if name not in classes:
        raise UserError(f"the saved config names an unknown type {name!r}")
    cls = classes[name]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known - {"type"}
    if unknown:
        raise UserError(f"the saved {name} has fields this wmsim does not know: {sorted(unknown)}")
    values = {k: from_dict(v) for k, v in data.items() if k != "type"}
    for f in dataclasses.fields(cls):
        if isinstance(values.get(f.name), list) and not isinstance(f.default, list):
            values[f.name] = tuple(values[f.name])
    return cls(**values)
