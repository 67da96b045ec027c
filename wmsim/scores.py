"""Human-normalized Atari scores and their aggregates (mean, median, IQM).

The random and human reference scores are the standard table of the Atari 100k
papers (DQN zoo ``atari_data.py``; the same values are in REM's
``results/data/{RANDOM,HUMAN}.json``). Both come from runs that start with 1-30
random no-ops and are capped at 108,000 frames.

Aggregation follows the papers: ``mean`` and ``median`` are taken across games
of the per-game mean over runs; ``iqm`` is the interquartile mean (the 25%
trimmed mean) over all (run, game) values, as rliable computes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from wmsim.errors import UserError

RANDOM_SCORES: dict[str, float] = {
    "Alien": 227.8, "Amidar": 5.8, "Assault": 222.4, "Asterix": 210.0, "BankHeist": 14.2,
    "BattleZone": 2360.0, "Boxing": 0.1, "Breakout": 1.7, "ChopperCommand": 811.0,
    "CrazyClimber": 10780.5, "DemonAttack": 152.1, "Freeway": 0.0, "Frostbite": 65.2,
    "Gopher": 257.6, "Hero": 1027.0, "Jamesbond": 29.0, "Kangaroo": 52.0, "Krull": 1598.0,
    "KungFuMaster": 258.5, "MsPacman": 307.3, "Pong": -20.7, "PrivateEye": 24.9,
    "Qbert": 163.9, "RoadRunner": 11.5, "Seaquest": 68.4, "UpNDown": 533.4,
}  # fmt: skip
"""Score of a uniformly random policy per game."""

HUMAN_SCORES: dict[str, float] = {
    "Alien": 7127.7, "Amidar": 1719.5, "Assault": 742.0, "Asterix": 8503.3, "BankHeist": 753.1,
    "BattleZone": 37187.5, "Boxing": 12.1, "Breakout": 30.5, "ChopperCommand": 7387.8,
    "CrazyClimber": 35829.4, "DemonAttack": 1971.0, "Freeway": 29.6, "Frostbite": 4334.7,
    "Gopher": 2412.5, "Hero": 30826.4, "Jamesbond": 302.8, "Kangaroo": 3035.0, "Krull": 2665.5,
    "KungFuMaster": 22736.3, "MsPacman": 6951.6, "Pong": 14.6, "PrivateEye": 69571.3,
    "Qbert": 13455.0, "RoadRunner": 7845.0, "Seaquest": 42054.7, "UpNDown": 11693.2,
}  # fmt: skip
"""Score of the professional human tester per game."""


def human_normalized_score(game: str, score: float) -> float:
    """Return (score - random) / (human - random) for ``game``.

    Raises:
        UserError: ``game`` is not one of the 26 Atari 100k games.
    """
    if game not in HUMAN_SCORES:
        raise UserError(
            f"no human reference score for {game!r}; "
            f"scores exist for the Atari 100k games: {', '.join(HUMAN_SCORES)}"
        )
    return (score - RANDOM_SCORES[game]) / (HUMAN_SCORES[game] - RANDOM_SCORES[game])


def interquartile_mean(values: Sequence[float] | np.ndarray) -> float:
    """Mean of the values left after cutting int(n / 4) from each end of the sorted list.

    This is ``scipy.stats.trim_mean(values, 0.25)``, rliable's IQM.
    """
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if x.size == 0:
        raise ValueError("interquartile_mean of no values")
    cut = int(0.25 * x.size)
    return float(x[cut : x.size - cut].mean())


@dataclass(frozen=True)
class Aggregate:
    """Human-normalized scores of a set of runs, summarised across games."""

    mean: float
    """Mean across games of the per-game mean HNS."""
    median: float
    """Median across games of the per-game mean HNS."""
    iqm: float
    """Interquartile mean over all (run, game) HNS values."""
    games: int
    """Number of games aggregated."""
    runs: int
    """Number of (run, game) scores aggregated."""
    superhuman: int
    """Games whose mean HNS is at least 1."""


def aggregate(scores: Mapping[str, Sequence[float]]) -> Aggregate:
    """Aggregate raw scores, given as game -> one score per run (seed).

    Games may have different numbers of runs; each needs at least one.
    """
    if not scores:
        raise ValueError("aggregate of no games")
    per_game, all_runs = [], []
    for game, runs in scores.items():
        if len(runs) == 0:
            raise ValueError(f"{game} has no runs")
        hns = [human_normalized_score(game, s) for s in runs]
        per_game.append(float(np.mean(hns)))
        all_runs.extend(hns)
    return Aggregate(
        mean=float(np.mean(per_game)),
        median=float(np.median(per_game)),
        iqm=interquartile_mean(all_runs),
        games=len(per_game),
        runs=len(all_runs),
        superhuman=sum(h >= 1.0 for h in per_game),
    )
