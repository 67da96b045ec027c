"""Playing the real game into a replay: ``wmsim collect``.

Each env plays in its own loop (:func:`play`) and writes its own stream. With
several envs, each loop runs in its own process and writes its own chunks, so
emulators never wait for one another and nothing crosses a process boundary
per step: collection scales with the cores like bare emulation does
(``benchmarks/collect.py``).

Collection is resumable: the replay's size is the progress, so running the
same command again continues until the replay holds ``steps`` steps. A rerun
plays new streams with new seeds, so it never repeats an episode.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Protocol

import numpy as np
import tyro
from tqdm import tqdm

from wmsim.collect.atari import AtariConfig, AtariEnv, checked
from wmsim.collect.tracker import TrackerPolicy
from wmsim.collect.workers import run_in_processes
from wmsim.errors import UserError
from wmsim.replay.format import make_manifest
from wmsim.replay.reader import Replay
from wmsim.replay.writer import ReplayLock, ReplayWriter


def step_flags(terminated: bool, truncated: bool) -> tuple[bool, bool]:
    """Turn gymnasium's end flags into the replay's (``is_last``, ``is_terminal``).

    This is the only place the two vocabularies meet: an episode's last step is
    terminal when the game is over (there is no continuation to bootstrap
    from), and merely last when it was cut by the frame cap.
    """
    return bool(terminated or truncated), bool(terminated)


class Policy(Protocol):
    """Chooses the action of one env."""

    def __call__(self, obs: np.ndarray, is_first: bool) -> int:
        """The action for observation ``obs`` (H, W, 3); ``is_first`` marks a new episode."""
        ...


class RandomPolicy:
    """Uniformly random actions, drawn a block at a time (one draw per step costs ~7 us)."""

    def __init__(self, num_actions: int, rng: np.random.Generator, *, block: int = 4096):
        self.num_actions, self.rng, self.block = num_actions, rng, block
        self._drawn: list[int] = []

    def __call__(self, obs: np.ndarray, is_first: bool) -> int:
        """A uniform action."""
        if not self._drawn:
            self._drawn = self.rng.integers(self.num_actions, size=self.block).tolist()[::-1]
        return self._drawn.pop()


POLICIES: dict[str, Callable[[list[str], np.random.Generator, float, float], Policy]] = {
    "random": lambda meanings, rng, epsilon, offset: RandomPolicy(len(meanings), rng),
    "tracker": lambda meanings, rng, epsilon, offset: TrackerPolicy(
        meanings, rng, epsilon=epsilon, offset=offset
    ),
}
"""Policies by name: (action meanings, rng, epsilon, offset) -> policy."""


@dataclass(frozen=True)
class PlayResult:
    """What one :func:`play` loop did."""

    rows: int
    """Rows written."""
    episodes: int
    """Episodes that ended."""
    seconds: float
    """Wall-clock time of the loop, env start-up excluded."""


def play(
    env: AtariEnv,
    policy: Policy,
    writer: ReplayWriter,
    steps: int,
    *,
    seed: int,
    report: Callable[[int], bool] = lambda rows: True,
) -> PlayResult:
    """Play ``steps`` steps of ``env`` and append them to ``writer``.

    Row t holds the frame seen at step t and the action taken there (see
    :mod:`wmsim.replay.format`). After an episode's last frame the env is
    reset, and the next row starts a new episode.

    Args:
        env: the game; reset with ``seed`` first.
        policy: chooses actions.
        writer: receives one row per step.
        steps: rows to write.
        seed: seeds the first reset.
        report: called every 256 rows and at the end with the rows written so
            far; playing stops early when it returns False.
    """
    obs, _ = env.reset(seed=seed)
    started = time.perf_counter()
    reward, life_loss = 0.0, False
    is_first, is_last, is_terminal = True, False, False
    episodes = 0
    for t in range(1, steps + 1):
        action = 0 if is_last else policy(obs, is_first)  # no action is taken at a last frame
        writer.add({
            "obs": obs, "action": action, "reward": reward, "is_first": is_first,
            "is_last": is_last, "is_terminal": is_terminal, "life_loss": life_loss,
        })  # fmt: skip
        if t == steps or (t % 256 == 0 and not report(t)):
            break
        if is_last:
            obs, _ = env.reset()
            reward, life_loss = 0.0, False
            is_first, is_last, is_terminal = True, False, False
        else:
            obs, reward, terminated, truncated, info = env.step(action)
            is_first, life_loss = False, info["life_loss"]
            is_last, is_terminal = step_flags(terminated, truncated)
            episodes += is_last
    writer.flush()
    report(writer.rows)
    return PlayResult(writer.rows, episodes, time.perf_counter() - started)


@dataclass(frozen=True)
class CollectConfig:
    """Play the real game and store every step in a replay directory."""

    out: Path
    """Replay directory to create, or to continue if it already holds a replay."""
    steps: int
    """Steps the replay should hold when done; running again continues up to this."""
    env: Annotated[AtariConfig, tyro.conf.OmitArgPrefixes] = AtariConfig()
    policy: Literal["random", "tracker"] = "random"
    """Who plays: random (uniform actions) or tracker (Breakout: the paddle follows the ball,
    so the data holds rallies and broken walls; wmsim.collect.tracker)."""
    epsilon: float = 0.25
    """Share of uniformly random actions of the tracker policy."""
    offset: float = 0.0
    """The tracker's largest aiming shift, as a share of the screen width, drawn anew at every
    serve (0: it aims at the ball); with about 0.12 it misses about half the balls it meets,
    with the paddle close by."""
    envs: int = 1
    """Emulators played side by side, each in its own process."""
    seed: int = 0
    """Seeds the emulators and the policy; each run of the command gets fresh streams of it."""
    chunk_length: int = 1024
    """Steps per chunk file; a killed collector loses at most its open chunks."""


def stream_seed(seed: int, stream: int) -> int:
    """The emulator seed of a stream: distinct for every stream of every run."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0] >> 1)


@dataclass(frozen=True)
class StreamTask:
    """One stream to play: everything a worker process needs, and picklable."""

    config: CollectConfig
    env: AtariConfig
    stream: int
    steps: int

    def run(self, report: Callable[[int], bool] = lambda rows: True) -> PlayResult:
        """Play the stream into the replay."""
        env = AtariEnv(self.env)
        rng = np.random.default_rng([self.config.seed, self.stream])
        policy = POLICIES[self.config.policy](
            env.action_meanings, rng, self.config.epsilon, self.config.offset
        )
        chunk_length = self.config.chunk_length
        with ReplayWriter(self.config.out, self.stream, chunk_length=chunk_length) as writer:
            seed = stream_seed(self.config.seed, self.stream)
            return play(env, policy, writer, self.steps, seed=seed, report=report)


@dataclass(frozen=True)
class CollectResult:
    """What one run of :func:`collect` did."""

    added: int
    """Steps written by this run."""
    total: int
    """Steps the replay holds now."""
    episodes: int
    """Episodes that ended during this run."""
    seconds: float
    """Wall-clock time spent playing and writing (the slowest env, start-up excluded)."""


def collect(config: CollectConfig, *, progress: bool = True) -> CollectResult:
    """Play until the replay at ``config.out`` holds ``config.steps`` steps.

    Raises:
        UserError: bad settings, or ``config.out`` is unusable (a file, a
            directory of something else, a replay of other settings, in use).
        KeyboardInterrupt: after every env has saved what it played.
    """
    if min(config.steps, config.envs, config.chunk_length) < 1 or config.seed < 0:
        raise UserError("--steps, --envs and --chunk-length must be positive, --seed non-negative")
    if not 0.0 <= config.epsilon <= 1.0:
        raise UserError(f"--epsilon must be in [0, 1], got {config.epsilon}")
    if not 0.0 <= config.offset <= 1.0:
        raise UserError(f"--offset must be in [0, 1], got {config.offset}")
    env_config = checked(config.env)
    chunk_bytes = config.chunk_length * env_config.size**2 * 3
    if chunk_bytes > 2**30:
        raise UserError(
            f"a chunk of {config.chunk_length} steps takes {chunk_bytes / 2**30:.1f} GiB of memory "
            "per env; lower --chunk-length"
        )
    probe = AtariEnv(env_config)
    manifest = make_manifest(dataclasses.asdict(env_config), probe.action_meanings)
    probe.close()
    with ReplayLock(config.out, manifest) as lock:
        have = Replay(config.out).num_steps
        missing = config.steps - have
        if missing <= 0:
            return CollectResult(0, have, 0, 0.0)
        k = min(config.envs, missing)
        shares = [missing // k + (i < missing % k) for i in range(k)]
        tasks = [
            StreamTask(config, env_config, s, n)
            for s, n in zip(lock.new_streams(k), shares, strict=True)
        ]
        bar = tqdm(total=config.steps, initial=have, disable=not progress, unit="step")
        try:
            if k == 1:
                results = [tasks[0].run(lambda rows: bar.update(have + rows - bar.n) or True)]
            else:
                lock.share()  # the workers hold the replay beside us
                results = run_in_processes(tasks, lambda rows: bar.update(have + rows - bar.n))
        finally:
            bar.close()
    added = sum(r.rows for r in results)
    seconds = max(r.seconds for r in results)
    return CollectResult(added, have + added, sum(r.episodes for r in results), seconds)
