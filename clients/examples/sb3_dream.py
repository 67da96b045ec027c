"""Stable-Baselines3's PPO inside a dream: an outside library trains on a learned simulator.

    python clients/examples/sb3_dream.py --total-steps 100000 --envs 8 --save ppo_breakout.zip
    wmsim serve &                                   # or dream on a server: 127.0.0.1:50051
    python clients/examples/sb3_dream.py --server 127.0.0.1:50051

``SB3VecEnv`` presents ``--envs`` dreams, stepped in one batched model call, as an
SB3 ``VecEnv``; ``VecMonitor`` records the episodes for SB3's ``ep_info_buffer``.
SB3 sees 64x64x3 uint8 frames and transposes them for its ``CnnPolicy`` itself.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecMonitor
from wmsim_client.sb3 import SB3VecEnv


def main() -> None:
    """Train SB3's PPO on dream envs and print a summary line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--game", default="Breakout")
    parser.add_argument("--total-steps", type=int, default=100_000, help="env steps, all envs")
    parser.add_argument("--envs", type=int, default=8, help="dreams stepped together")
    parser.add_argument("--n-steps", type=int, default=128, help="steps per env per rollout")
    parser.add_argument("--max-episode-steps", type=int, default=1000)
    parser.add_argument("--server", default=None, help="host:port of a wmsim serve")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default=None, help="save the trained PPO here (a .zip)")
    args = parser.parse_args()

    venv = SB3VecEnv(num_envs=args.envs, game=args.game, server=args.server, threads=args.threads,
                     max_episode_steps=args.max_episode_steps)  # fmt: skip
    venv = VecMonitor(venv)  # adds each ended episode's return and length to its info
    # rl-baselines3-zoo's Atari settings, 4 minibatches a rollout
    agent = PPO("CnnPolicy", venv, n_steps=args.n_steps, batch_size=args.envs * args.n_steps // 4,
                n_epochs=4, learning_rate=2.5e-4, clip_range=0.1, ent_coef=0.01, seed=args.seed,
                verbose=0)  # fmt: skip
    started = time.perf_counter()
    agent.learn(args.total_steps)
    seconds = time.perf_counter() - started
    if args.save is not None:
        agent.save(args.save)
    venv.close()
    returns = [info["r"] for info in agent.ep_info_buffer]  # the last 100 episodes
    mean_return = float(np.mean(returns)) if returns else float("nan")
    print(f"done steps={agent.num_timesteps} episodes={venv.episode_count} "
          f"mean_return={mean_return:.4g} seconds={seconds:.4g} "
          f"steps_per_s={agent.num_timesteps / seconds:.4g}")  # fmt: skip


if __name__ == "__main__":
    main()
