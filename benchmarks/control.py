"""Does a good policy do better in the dream, as it does in the real game?

A dream that draws the ball can still be useless for training an agent: if
returning the ball earns nothing in the dream, no policy can learn to return
it. This plays two policies, uniformly random and the paddle tracker that
`wmsim collect --policy tracker` uses (it reads the ball and the paddle from
the frame's pixels, so it plays dream frames and real frames alike), for the
same number of steps in the real game (the bundle's own settings) and in the
bundle's dream, with sampled latents and with the mode, and prints rewards and
ends per 1,000 steps and the share of frames that show a ball in play. A dream
fit to train in shows the tracker's advantage that the real game shows.

    python benchmarks/control.py [--bundle wmsim/bundles/Breakout.wmsim] [--envs 32]
        [--steps 640] [--episode-steps 64] [--json out.json]

Dream episodes start from the bundle's start contexts and end where an end is
more likely than not (``ends="likely"``), or after ``--episode-steps``; the
tracker's epsilon is 0. Breakout-like games only (the tracker needs a paddle).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gymnasium
import numpy as np

import wmsim  # noqa: F401  registers the dream ids
from wmsim.bundle import open_bundle
from wmsim.bundle_dream import real_env
from wmsim.collect.tracker import TrackerPolicy, red_pixels
from wmsim.store import EMBEDDED


def ball_in_play(frames: np.ndarray) -> np.ndarray:
    """(n,) bool: a ball (red pixels) between the bricks and the paddle."""
    size = frames.shape[1]
    return red_pixels(frames)[:, int(0.45 * size) : int(0.85 * size)].any((1, 2))


def policies(kind: str, meanings: list[str], n: int, seed: int):
    """act(obs (n, H, W, 3), first (n,)) -> actions (n,)."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        return lambda obs, first: rng.integers(len(meanings), size=len(obs))
    trackers = [TrackerPolicy(meanings, np.random.default_rng(seed + i), epsilon=0.0)
                for i in range(n)]  # fmt: skip
    return lambda obs, first: np.array(
        [t(o, f) for t, o, f in zip(trackers, obs, first, strict=True)]
    )


def play_dream(bundle: Path, kind: str, latents: str, args) -> dict[str, float]:
    envs = gymnasium.make_vec(f"wmsim/{open_bundle(bundle).game}-dream-v0", num_envs=args.envs,
                              model=str(bundle), ends="likely", latents=latents,
                              max_episode_steps=args.episode_steps)  # fmt: skip
    act = policies(kind, envs.unwrapped.simulator.spec["actions"], args.envs, args.seed)
    obs, _ = envs.reset(seed=args.seed)
    first, done = np.ones(args.envs, bool), np.zeros(args.envs, bool)
    rewards, ends, ball = 0.0, 0, 0
    for _ in range(args.steps):
        obs, reward, terminated, truncated, _ = envs.step(act(obs, first))
        rewards += float(reward[~done].sum())  # a step out of an end is a reset (NEXT_STEP)
        ends += int(terminated[~done].sum())
        ball += int(ball_in_play(obs).sum())
        first, done = done, terminated | truncated
    envs.close()
    steps = args.envs * args.steps
    return {"rewards_per_1000": 1000 * rewards / steps, "ends_per_1000": 1000 * ends / steps,
            "ball_in_play": ball / steps}  # fmt: skip


def play_real(spec: dict, kind: str, args) -> dict[str, float]:
    env = real_env(spec)
    act = policies(kind, list(spec["actions"]), 1, args.seed)
    obs, _ = env.reset(seed=args.seed)
    first, rewards, ends, ball = True, 0.0, 0, 0
    steps = args.envs * args.steps
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(
            int(act(obs[None], np.array([first]))[0])
        )
        lost = terminated or info.get("life_loss", False)
        rewards, ends, ball = rewards + reward, ends + lost, ball + ball_in_play(obs[None])[0]
        first = terminated or truncated
        if first:
            obs, _ = env.reset()
    env.close()
    return {"rewards_per_1000": 1000 * rewards / steps, "ends_per_1000": 1000 * ends / steps,
            "ball_in_play": ball / steps}  # fmt: skip


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=EMBEDDED / "Breakout.wmsim")
    parser.add_argument("--envs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=640, help="steps per env")
    parser.add_argument("--episode-steps", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    spec = open_bundle(args.bundle).spec
    rows = {}
    for kind in ("random", "tracker"):
        rows[f"real game, {kind}"] = play_real(spec, kind, args)
        for latents in ("sampled", "mode"):
            rows[f"dream ({latents} latents), {kind}"] = play_dream(
                args.bundle, kind, latents, args
            )
    starts = spec["training"].get("starts", "episode")
    print(f"{args.bundle}: {args.envs * args.steps} steps per row; dream episodes of at most "
          f"{args.episode_steps} steps from its {starts} starts, likely ends\n")  # fmt: skip
    print(f"{'':40s} {'rewards/1000':>12s} {'ends/1000':>10s} {'ball in play':>13s}")
    for name, row in rows.items():
        print(f"{name:40s} {row['rewards_per_1000']:12.1f} {row['ends_per_1000']:10.1f} "
              f"{row['ball_in_play']:13.2f}")  # fmt: skip
    for where in ("real game", "dream (sampled latents)", "dream (mode latents)"):
        gain = rows[f"{where}, tracker"]["rewards_per_1000"] / max(
            rows[f"{where}, random"]["rewards_per_1000"], 1e-9
        )
        print(f"tracker / random rewards, {where}: {gain:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
