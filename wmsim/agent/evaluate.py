"""Evaluation on the real game under the Atari 100k protocol: ``wmsim eval``.

Episodes are played on ale-py with the settings STORM, DRAMA and REM use for
Atari 100k (Kaiser et al., ICLR 2020): frame skip 4 with a max over the last two
frames, 64x64 RGB, the minimal action set, no sticky actions, 1 to 30 no-op
frames at the start, raw rewards, and the 108,000-frame cap. A lost life does
not end the episode. All episodes run side by side, one batched policy call per
step.

The record (``eval.json``) holds every episode's score and length, the mean,
the human-normalized score of the mean, and the protocol; ``wmsim results``
aggregates records across runs and games.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from wmsim.collect.atari import AtariConfig, AtariEnv
from wmsim.errors import UserError
from wmsim.files import atomic_write_json
from wmsim.runtime.row_parts import cores
from wmsim.scores import HUMAN_SCORES, human_normalized_score


class Policy(Protocol):
    """Acts in a batch of envs; its state is data, made by :meth:`initial`."""

    def initial(self, batch: int) -> Any:
        """The state of ``batch`` envs that have seen nothing."""
        ...

    def act(self, state: Any, obs: np.ndarray, is_first: np.ndarray) -> tuple[np.ndarray, Any]:
        """Frames (B, H, W, 3) uint8 and episode starts (B,) -> (actions (B,), next state)."""
        ...


class RandomPolicy:
    """Uniformly random actions: the protocol's random baseline."""

    def __init__(self, num_actions: int, seed: int):
        self.num_actions, self.rng = num_actions, np.random.default_rng(seed)

    def initial(self, batch: int) -> None:
        """No state."""
        return None

    def act(self, state: None, obs: np.ndarray, is_first: np.ndarray) -> tuple[np.ndarray, None]:
        """Uniform actions."""
        return self.rng.integers(self.num_actions, size=len(obs)), None


@dataclass(frozen=True)
class Episodes:
    """What :func:`play_episodes` played."""

    scores: list[float]
    """Raw score of each episode."""
    lengths: list[int]
    """Agent steps of each episode."""
    frames: np.ndarray
    """(T, H, W, 3) uint8: the first episode's observations, if recorded."""
    seconds: float
    """Wall-clock time."""


def protocol(game: str, max_frames: int = 108_000, resize: str = "area") -> AtariConfig:
    """The Atari 100k evaluation settings for ``game``, frames resized as the agent saw them."""
    return AtariConfig(game=game, max_frames=max_frames, resize=resize)


def play_episodes(
    policy: Policy,
    game: str,
    episodes: int,
    *,
    seed: int = 0,
    max_frames: int = 108_000,
    resize: str = "area",
    record: bool = False,
    progress: bool = False,
) -> Episodes:
    """Play ``episodes`` episodes of the real ``game`` with ``policy``, all side by side.

    Episode i starts from ``reset(seed=seed + i)``; with ``record`` the first
    episode's frames are kept.
    """
    from tqdm import tqdm

    if episodes < 1:
        raise UserError("--episodes must be at least 1")
    started = time.perf_counter()
    envs = [AtariEnv(protocol(game, max_frames, resize)) for _ in range(episodes)]
    obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)])
    state = policy.initial(episodes)
    is_first = np.ones(episodes, bool)
    running = np.ones(episodes, bool)
    scores, lengths = np.zeros(episodes), np.zeros(episodes, np.int64)
    frames = [obs[0]] if record else []
    bar = tqdm(total=episodes, disable=not progress, unit="episode")
    while running.any():
        actions, state = policy.act(state, obs, is_first)
        for i in np.flatnonzero(running):
            obs[i], reward, terminated, truncated, _ = envs[i].step(int(actions[i]))
            scores[i] += reward
            lengths[i] += 1
            if terminated or truncated:
                running[i] = False
                bar.update(1)
        if record and running[0]:
            frames.append(obs[0].copy())
        is_first[:] = False
    bar.close()
    for env in envs:
        env.close()
    recorded = np.stack(frames) if frames else np.zeros((0, *obs.shape[1:]), np.uint8)
    return Episodes(scores.tolist(), lengths.tolist(), recorded, time.perf_counter() - started)


def evaluate_policy(
    policy: Policy, game: str, episodes: int, *, seed: int, max_frames: int, resize: str = "area"
) -> dict[str, float]:
    """Mean score (with its spread, the mean length and the HNS) of ``episodes`` real episodes."""
    played = play_episodes(policy, game, episodes, seed=seed, max_frames=max_frames, resize=resize)
    return summarize(game, played)


def training_eval_seed(env_steps: int) -> int:
    """The first episode's seed of an evaluation during training, after ``env_steps`` steps.

    Apart from the seeds the training game starts from, and new at each
    evaluation, so that evaluations do not replay the same few episodes.
    """
    return 10_000 + env_steps


def summarize(game: str, result: Episodes) -> dict[str, float]:
    """Mean score, its spread and standard error, the mean length and (where known) the HNS."""
    mean, std = float(np.mean(result.scores)), float(np.std(result.scores))
    episodes = len(result.scores)
    out = {"score": mean, "score_std": std, "score_se": std / max(episodes - 1, 1) ** 0.5}
    out["episodes"] = float(episodes)
    out["length"] = float(np.mean(result.lengths))
    if game in HUMAN_SCORES:
        out["hns"] = human_normalized_score(game, mean)
    return out


def eval_record(
    game: str,
    result: Episodes,
    *,
    run: str | None,
    policy: str,
    env_steps: int | None,
    seed: int,
    max_frames: int,
    greedy: bool = False,
    resize: str = "area",
) -> dict[str, Any]:
    """The JSON record of an evaluation (see the module docstring)."""
    summary = summarize(game, result)
    return {
        "format": 1,
        "kind": "wmsim-eval",
        "game": game,
        "run": run,
        "policy": policy,
        "greedy": greedy,
        "env_steps": env_steps,
        "episodes": len(result.scores),
        "scores": result.scores,
        "lengths": result.lengths,
        "mean": summary["score"],
        "std": summary["score_std"],
        "hns": summary.get("hns"),
        "seed": seed,
        "protocol": dataclasses.asdict(protocol(game, max_frames, resize)),
        "seconds": result.seconds,
        "machine": f"{platform.machine()}, {platform.system()}, {cores()} cores",
    }


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write an evaluation record atomically."""
    atomic_write_json(Path(path), record)
