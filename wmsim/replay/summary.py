"""What a replay holds: episodes, returns, actions (``wmsim data info``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wmsim.replay.reader import Replay


@dataclass(frozen=True)
class ReplaySummary:
    """Counts and statistics of a replay's complete chunks."""

    steps: int
    """Steps (rows) stored."""
    chunks: int
    """Complete chunks."""
    streams: int
    """Streams (one per env per collection run)."""
    returns: list[float]
    """Undiscounted return of every complete episode."""
    lengths: list[int]
    """Steps (actions taken) of every complete episode."""
    terminal: int
    """Complete episodes that ended by game over (the rest were truncated)."""
    unfinished: int
    """Episodes still running where their stream ends."""
    life_losses: int
    """Lives lost over all steps."""
    action_counts: dict[str, int]
    """Action name -> times it was taken."""


def summarize(replay: Replay) -> ReplaySummary:
    """Scan the small per-step fields of ``replay`` (frames are not read)."""
    returns: list[float] = []
    lengths: list[int] = []
    terminal = unfinished = life_losses = 0
    actions = np.zeros(len(replay.action_meanings), np.int64)
    names = ("action", "reward", "is_first", "is_last", "is_terminal", "life_loss")
    for rows in replay.runs(names):
        taken = ~rows["is_last"]
        actions += np.bincount(rows["action"][taken], minlength=len(actions))
        life_losses += int(rows["life_loss"].sum())
        firsts = np.flatnonzero(rows["is_first"])
        cumulative = np.concatenate([[0.0], np.cumsum(rows["reward"], dtype=np.float64)])
        for end in np.flatnonzero(rows["is_last"]):
            earlier = firsts[firsts <= end]
            if len(earlier) == 0:
                continue  # the episode began before this segment
            start = earlier[-1]
            returns.append(float(cumulative[end + 1] - cumulative[start + 1]))
            lengths.append(int(end - start))
            terminal += bool(rows["is_terminal"][end])
        last_end = np.flatnonzero(rows["is_last"])
        unfinished += int(len(firsts) and (len(last_end) == 0 or firsts[-1] > last_end[-1]))
    return ReplaySummary(
        steps=replay.num_steps,
        chunks=len(replay.chunks),
        streams=len({c.stream for c in replay.chunks}),
        returns=returns,
        lengths=lengths,
        terminal=terminal,
        unfinished=unfinished,
        life_losses=life_losses,
        action_counts=dict(zip(replay.action_meanings, actions.tolist(), strict=True)),
    )
