"""A random agent on a ``wmsim serve``: the smallest complete remote client.

    wmsim serve &                                   # in another shell: 127.0.0.1:50051
    python clients/examples/random_agent.py --server 127.0.0.1:50051 --envs 8 --steps 500

It plays ``--envs`` dreams at once with uniformly random actions through
gymnasium's vector API, exactly as it would play them in-process (drop
``server=`` and the same seeds give the same dreams), and prints the episodes
that ended, their returns and lengths, and the steps per second.
"""

from __future__ import annotations

import argparse
import time

import gymnasium
import numpy as np

import wmsim  # noqa: F401  registers wmsim/<Game>-dream-v0


def main() -> None:
    """Play random actions on the server's dreams and report the episodes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default="127.0.0.1:50051", help="host:port of wmsim serve")
    parser.add_argument("--game", default="Breakout")
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=500, help="vector steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--token", default=None, help="the server's --token (or WMSIM_TOKEN)")
    args = parser.parse_args()

    envs = gymnasium.make_vec(f"wmsim/{args.game}-dream-v0", num_envs=args.envs,
                              server=args.server, token=args.token)  # fmt: skip
    rng = np.random.default_rng(args.seed)
    envs.reset(seed=args.seed)
    returns, lengths = np.zeros(args.envs), np.zeros(args.envs, int)
    finished: list[tuple[float, int]] = []
    started = time.perf_counter()
    for _ in range(args.steps):
        actions = rng.integers(envs.single_action_space.n, size=args.envs)
        _, rewards, terminated, truncated, _ = envs.step(actions)
        returns += rewards
        lengths += 1
        for i in np.flatnonzero(terminated | truncated):  # NEXT_STEP: reset on the next step
            finished.append((float(returns[i]), int(lengths[i])))
            returns[i], lengths[i] = 0.0, -1  # the reset step (reward 0) adds nothing
    seconds = time.perf_counter() - started
    envs.close()
    print(f"{args.game} on {args.server}: {args.envs} envs x {args.steps} steps in {seconds:.1f} s "
          f"({args.envs * args.steps / seconds:.0f} env steps/s)")  # fmt: skip
    if finished:
        episode_returns, episode_lengths = zip(*finished, strict=True)
        print(f"{len(finished)} episodes ended: return {np.mean(episode_returns):.3f} on average, "
              f"{np.mean(episode_lengths):.1f} steps long")  # fmt: skip
    else:
        print("no episode ended yet")


if __name__ == "__main__":
    main()
