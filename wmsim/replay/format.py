"""The on-disk replay format: a manifest and append-only chunks of steps.

A replay is a directory::

    DIR/wmsim-replay.json          manifest: format version, game and preprocessing, fields
    DIR/chunks/SSSSSSSS-TTTTTT-PPPPPPPPPPPP/   one complete chunk (seq, stream, position)
        obs.npy action.npy reward.npy is_first.npy is_last.npy is_terminal.npy life_loss.npy

Each env writes its own *stream* of consecutive steps, cut into chunks. A
chunk is written under a hidden temporary name and renamed into place once
every file is on disk, so a chunk either exists whole or not at all: a killed
writer loses at most the chunks it had open. ``seq`` numbers chunks in the
order they were completed, so a step's global index (its chunk's offset plus
its row) never changes as the replay grows; ``position`` is the chunk's first
row within its stream.

Row t of a stream holds what the agent saw and did at step t:

- ``obs[t]``: the frame observed;
- ``action[t]``: the action taken at ``obs[t]`` (0 on an ``is_last`` row, where none is taken);
- ``reward[t]``: the reward received on the way into ``obs[t]`` (0 on an ``is_first`` row);
- ``is_first[t]``: ``obs[t]`` starts an episode (the state entering t is the initial state);
- ``is_last[t]``: ``obs[t]`` ends an episode (game over or truncation);
- ``is_terminal[t]``: ``obs[t]`` ends it by game over, so it has no continuation;
- ``life_loss[t]``: a life was lost on the way into ``obs[t]``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from wmsim.errors import UserError

FORMAT_VERSION = 1
MANIFEST = "wmsim-replay.json"
CHUNKS = "chunks"
CHUNK_NAME = re.compile(r"^(\d{8})-(\d{6})-(\d{12})$")


def chunk_name(seq: int, stream: int, position: int) -> str:
    """Directory name of a chunk."""
    return f"{seq:08d}-{stream:06d}-{position:012d}"


def step_fields(obs_shape: tuple[int, ...]) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Name -> (dtype, per-step shape) of every field a step stores."""
    flag = (np.dtype(np.bool_), ())
    return {
        "obs": (np.dtype(np.uint8), tuple(obs_shape)),
        "action": (np.dtype(np.int32), ()),
        "reward": (np.dtype(np.float32), ()),
        "is_first": flag,
        "is_last": flag,
        "is_terminal": flag,
        "life_loss": flag,
    }


def make_manifest(env: dict[str, Any], action_meanings: list[str]) -> dict[str, Any]:
    """The manifest of a new replay of the env described by ``env`` (an AtariConfig as a dict)."""
    from wmsim import __version__

    size = env["size"]
    fields = step_fields((size, size, 3))
    return {
        "format": FORMAT_VERSION,
        "kind": "wmsim-replay",
        "env": env,
        "action_meanings": list(action_meanings),
        "fields": {k: {"dtype": d.str, "shape": list(s)} for k, (d, s) in fields.items()},
        "created_by": f"wmsim {__version__}",
    }


def read_manifest(directory: Path) -> dict[str, Any]:
    """Read and check the manifest of the replay in ``directory``.

    Raises:
        UserError: the directory is missing, holds no replay, or a replay of an
            unknown format version.
    """
    directory = Path(directory)
    if not directory.exists():
        raise UserError(
            f"{directory} does not exist; collect data into it first with "
            f"`wmsim collect --game Breakout --steps 10000 --out {directory}`"
        )
    if not directory.is_dir():
        raise UserError(f"{directory} is a file, not a replay directory; pass the directory")
    path = directory / MANIFEST
    if not path.exists():
        raise UserError(
            f"{directory} is not a wmsim replay (it has no {MANIFEST}); "
            "pass a directory written by `wmsim collect`"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path} cannot be read ({error}); the replay is damaged") from error
    if not isinstance(manifest, dict) or manifest.get("kind") != "wmsim-replay":
        raise UserError(f"{path} is not a wmsim replay manifest; the replay is damaged")
    if manifest.get("format") != FORMAT_VERSION:
        raise UserError(
            f"{directory} holds replay format {manifest.get('format')!r}, "
            f"this wmsim reads format {FORMAT_VERSION}"
        )
    try:
        fields = manifest_fields(manifest)
        if "obs" not in fields or not isinstance(manifest["env"], dict):
            raise ValueError("no obs field or no env")
        list(manifest["action_meanings"])
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise UserError(f"{path} is incomplete ({error!r}); the replay is damaged") from error
    return manifest


def manifest_fields(manifest: dict[str, Any]) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Name -> (dtype, per-step shape), as recorded in a manifest."""
    return {k: (np.dtype(v["dtype"]), tuple(v["shape"])) for k, v in manifest["fields"].items()}
