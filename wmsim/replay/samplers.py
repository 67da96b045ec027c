"""How windows are drawn from a replay: uniformly, or by DRAMA's dynamic frequency-based sampling.

A sampler picks window starts among candidates: global step indices, such as
:meth:`Replay.window_starts` or the training part of it. It has two methods,
one per consumer:
``train_starts`` for world-model training batches and ``imagination_starts``
for the real contexts that imagination starts from. Samplers are chosen by
name from :data:`SAMPLERS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from wmsim.replay.reader import Replay


class Sampler(Protocol):
    """Chooses window starts; may keep counts, saved with training checkpoints."""

    def train_starts(
        self, candidates: np.ndarray, batch: int, rng: np.random.Generator
    ) -> np.ndarray:
        """``batch`` of the ``candidates`` (global indices) to start world-model windows at."""
        ...

    def imagination_starts(
        self, candidates: np.ndarray, batch: int, rng: np.random.Generator
    ) -> np.ndarray:
        """``batch`` of the ``candidates`` to start imagination contexts at."""
        ...

    def state_dict(self) -> dict[str, np.ndarray]:
        """What to save to resume sampling exactly."""
        ...

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` saved."""
        ...


def _check(candidates: np.ndarray) -> np.ndarray:
    if len(candidates) == 0:
        raise ValueError("no window to sample: collect more data or sample shorter windows")
    return np.asarray(candidates, np.int64)


def _without_replacement(logits: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of k draws without replacement, P(i) proportional to exp(logits[i]).

    Gumbel top-k: the k largest of logits + Gumbel noise are such a draw.
    """
    if k > len(logits):
        raise ValueError(f"cannot draw {k} distinct windows from {len(logits)} candidates")
    keys = logits + rng.gumbel(size=len(logits))
    return np.argpartition(-keys, k - 1)[:k]


@dataclass
class UniformSampler:
    """Every valid start equally likely, with replacement."""

    def train_starts(
        self, candidates: np.ndarray, batch: int, rng: np.random.Generator
    ) -> np.ndarray:
        """Uniform window starts for a world-model batch."""
        candidates = _check(candidates)
        return candidates[rng.integers(len(candidates), size=batch)]

    def imagination_starts(
        self, candidates: np.ndarray, batch: int, rng: np.random.Generator
    ) -> np.ndarray:
        """Uniform window starts for imagination contexts."""
        return self.train_starts(candidates, batch, rng)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Nothing: uniform sampling keeps no counts."""
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Nothing to restore."""


@dataclass
class DFSSampler:
    """DRAMA's dynamic frequency-based sampling (Wang et al., "Drama", ICLR 2025).

    It counts, per start step i, n_i: world-model batches that started at i,
    and m_i: imagination contexts that started at i. World-model batches favour
    steps trained on least, P(i) ~ exp(-n_i / tau). Imagination favours steps
    the model has trained on more than it has imagined from:
    score_i = n_i - alpha m'_i - beta max(0, n_i - m'_i), with
    m'_i = m_i / imagine_scale, and P(i) ~ exp(score_i / imagine_tau). Both draw
    without replacement and then increment their counts.
    """

    tau: float = 10.0
    """Temperature of world-model sampling (DRAMA: 10)."""
    imagine_tau: float = 10.0
    """Temperature of imagination-start sampling (DRAMA: 10)."""
    imagine_scale: float = 64.0
    """Imagination batch over world-model batch size, scaling m (DRAMA: 1024 / 16)."""
    alpha: float = 1.0
    """Weight of the imagination count in the imagination score."""
    beta: float = 1.0
    """Weight of the trained-more-than-imagined term in the imagination score."""
    train_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """n: world-model windows started at each global step."""
    imagine_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """m: imagination contexts started at each global step."""

    def _grow(self, size: int) -> None:
        # The replay only grows; new steps start with zero counts.
        for name in ("train_counts", "imagine_counts"):
            counts = getattr(self, name)
            if len(counts) < size:
                setattr(
                    self, name, np.concatenate([counts, np.zeros(size - len(counts), np.int64)])
                )

    def train_starts(
        self, candidates: np.ndarray, batch: int, rng: np.random.Generator
    ) -> np.ndarray:
        """Window starts for a world-model batch, favouring rarely trained steps."""
        starts = _check(candidates)
        self._grow(int(starts.max()) + 1)
        chosen = starts[_without_replacement(-self.train_counts[starts] / self.tau, batch, rng)]
        self.train_counts[chosen] += 1
        return chosen

    def imagination_starts(
        self, candidates: np.ndarray, batch: int, rng: np.random.Generator
    ) -> np.ndarray:
        """Window starts for imagination, favouring steps trained on more than imagined from."""
        starts = _check(candidates)
        self._grow(int(starts.max()) + 1)
        n = self.train_counts[starts].astype(np.float64)
        m = self.imagine_counts[starts] / self.imagine_scale
        score = n - self.alpha * m - self.beta * np.maximum(0.0, n - m)
        chosen = starts[_without_replacement(score / self.imagine_tau, batch, rng)]
        self.imagine_counts[chosen] += 1
        return chosen

    def state_dict(self) -> dict[str, np.ndarray]:
        """The two count arrays."""
        return {
            "train_counts": self.train_counts.copy(),
            "imagine_counts": self.imagine_counts.copy(),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore the two count arrays."""
        self.train_counts = np.asarray(state["train_counts"], np.int64).copy()
        self.imagine_counts = np.asarray(state["imagine_counts"], np.int64).copy()


def event_rows(replay: Replay, *, life_loss: bool = True) -> np.ndarray:
    """Sorted global indices of the rows a reward or an end arrives at (lost lives optional)."""
    rows = [np.zeros(0, np.int64)]
    names = ("reward", "is_terminal", "life_loss")
    for indices, run in zip(replay.segment_rows(), replay.runs(names), strict=True):
        event = (run["reward"] != 0) | run["is_terminal"]
        if life_loss:
            event |= run["life_loss"]
        rows.append(indices[event])
    return np.sort(np.concatenate(rows))


def windows_with_events(candidates: np.ndarray, events: np.ndarray, length: int) -> np.ndarray:
    """The candidate starts s whose window has an event among its targets, rows s+1 .. s+length-1.

    Row 0 of a window is context only: the heads predict rows 1 onwards.
    """
    candidates = np.asarray(candidates, np.int64)
    first = np.searchsorted(events, candidates + 1)  # the first event after each start
    inside = first < len(events)
    inside[inside] = events[first[inside]] <= candidates[inside] + length - 1
    return candidates[inside]


def balanced_starts(
    sampler: Sampler,
    candidates: np.ndarray,
    event_candidates: np.ndarray,
    batch: int,
    share: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """A batch of window starts, ``round(share * batch)`` of them drawn from event windows.

    Rewards arrive at under 1% of Breakout's random-play steps and lost lives
    rarer still, so uniform windows teach the reward and continue heads that
    nothing ever happens. The rest of the batch comes from ``sampler`` as
    usual. Without event windows the whole batch does.
    """
    k = int(round(share * batch)) if len(event_candidates) else 0
    drawn = [np.zeros(0, np.int64)]
    if batch - k:
        drawn.append(sampler.train_starts(candidates, batch - k, rng))
    if k:
        drawn.append(event_candidates[rng.integers(len(event_candidates), size=k)])
    return np.concatenate(drawn)


SAMPLERS: dict[str, type[UniformSampler] | type[DFSSampler]] = {
    "uniform": UniformSampler,
    "dfs": DFSSampler,
}
"""Samplers by name, for configs and the command line."""
