"""Checkpoints written atomically: a kill at any moment leaves the previous one readable.

A checkpoint says which loop wrote it (:func:`checkpoint_kind`); the world model
in one is read back by :func:`world_model_of`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from wmsim.configs import from_dict
from wmsim.errors import UserError
from wmsim.files import atomic_write_bytes
from wmsim.model import make_world_model
from wmsim.train.config import TrainConfig

FORMAT_VERSION = 1
CHECKPOINT = "checkpoint.pt"

KINDS = ("train", "agent", "env", "decoder")
"""Which loop wrote a checkpoint: ``wmsim train`` (a world model), ``wmsim agent train
--game`` (an agent and the world model it trained in), ``--env`` (an agent alone) or
``wmsim bundle decoder`` (a decoder for a bundle's model)."""
OLD_KINDS = {None: "train", "world-model": "agent"}
"""Tags of checkpoints from wmsim versions before KINDS: untagged, or "world-model" for
``wmsim agent train --game``; they read as the kind they are."""


def save_checkpoint(run: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (tensors, numbers, strings and containers of them) as the run's checkpoint.

    The whole file is serialized in memory, written under a temporary name,
    synced and renamed over the old one.
    """
    buffer = io.BytesIO()
    torch.save({"format": FORMAT_VERSION, **payload}, buffer)
    atomic_write_bytes(Path(run) / CHECKPOINT, buffer.getvalue())


def checkpoint_kind(saved: dict[str, Any]) -> str:
    """The kind (one of :data:`KINDS`) of the run that wrote checkpoint ``saved``."""
    kind = saved.get("kind")
    return OLD_KINDS.get(kind, kind)


def load_checkpoint(run: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read the run's checkpoint (tensors and plain data only: no code is unpickled).

    Raises:
        UserError: there is none, it is damaged, or of another format version.
    """
    path = Path(run) / CHECKPOINT
    if not path.is_file():
        raise UserError(f"{run} has no checkpoint; train one with `wmsim train --out {run} ...`")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many kinds for a damaged file
        raise UserError(f"{path} is damaged ({error}); it cannot be loaded") from error
    if payload.get("format") != FORMAT_VERSION:
        raise UserError(
            f"{path} is checkpoint format {payload.get('format')!r}; "
            f"this wmsim reads format {FORMAT_VERSION}"
        )
    return payload


def load_run(run: Path, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A trained model in eval mode and its checkpoint (config, action meanings, ...)."""
    saved = load_checkpoint(run, device)
    return world_model_of(saved, device), saved


def world_model_of(saved: dict[str, Any], device: torch.device) -> torch.nn.Module:
    """The world model in a checkpoint of ``wmsim train`` or ``wmsim agent train``, in eval mode."""
    if checkpoint_kind(saved) == "decoder":
        raise UserError(
            "this run is a `wmsim bundle decoder` run: it holds a decoder alone; write the model "
            "with it as a bundle with `wmsim bundle decoder ... --resume --out NAME.wmsim`"
        )
    config: TrainConfig = from_dict(saved["config"]["train"])
    model = make_world_model(config.model, len(saved["action_meanings"])).to(device)
    model.load_state_dict(saved["model"])
    return model.eval()
