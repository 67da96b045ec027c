"""Helpers shared by tests: synthetic replays whose frames spell out where they came from, and an
old bundle."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from wmsim.replay.format import make_manifest
from wmsim.replay.writer import ReplayLock, ReplayWriter

FORMAT_1_BUNDLE = Path(__file__).parent / "data" / "breakout-format1.wmsim"
"""The Breakout default wmsim shipped before bundle format 2 (Gumbel-max noise, one uniform per
class): tests dream it to show that format-1 bundles still load and dream."""

SYNTHETIC_ENV = {"game": "Synthetic", "size": 4, "frame_skip": 4, "sticky_action_prob": 0.0,
                 "noop_max": 0, "max_frames": 1000}  # fmt: skip


def synthetic_row(stream: int, t: int, first: bool, last: bool) -> dict:
    """A row whose frame spells out where it came from: (t % 256, stream, t // 256)."""
    obs = np.zeros((4, 4, 3), np.uint8)
    obs[..., 0], obs[..., 1], obs[..., 2] = t % 256, stream, t // 256
    return {
        "obs": obs, "action": (stream + t) % 4, "reward": float(t), "is_first": first,
        "is_last": last, "is_terminal": last and t % 2 == 0, "life_loss": t % 7 == 0,
    }  # fmt: skip


def write_synthetic(directory: Path, episodes_per_stream: list[list[int]], chunk_length: int):
    """A replay with one stream per list; each stream holds episodes of the given lengths.

    An episode of length L has L + 1 rows (first .. last). Returns the streams' ids.
    """
    manifest = make_manifest(SYNTHETIC_ENV, ["NOOP", "FIRE", "RIGHT", "LEFT"])
    with ReplayLock(directory, manifest) as lock:
        streams = lock.new_streams(len(episodes_per_stream))
        for stream, lengths in zip(streams, episodes_per_stream, strict=True):
            with ReplayWriter(directory, stream, chunk_length=chunk_length) as writer:
                t = 0
                for length in lengths:
                    for k in range(length + 1):
                        writer.add(synthetic_row(stream, t, k == 0, k == length))
                        t += 1
    return streams


class FakeTask:
    """A picklable stand-in for a collection task: fails, ends at once, or plays until stopped."""

    def __init__(self, out: Path, behaviour: str):
        self.config = SimpleNamespace(out=out)
        self.behaviour = behaviour

    def run(self, report):
        import time

        from wmsim.errors import UserError

        if self.behaviour == "fail":
            raise ValueError("this task fails")
        if self.behaviour == "user error":
            raise UserError("bad input, said once")
        rows, limit = 0, {"slow": 6000, "short": 100}.get(self.behaviour, 0)
        while rows < limit and report(rows):
            time.sleep(0.005)
            rows += 1
        return rows
