"""Tianshou's DQN inside a dream: a third outside library trains on a learned simulator.

    pip install tianshou==2.0.1      # run with 2.0.1 (Python 3.11+); it uses the torch already here
    python clients/examples/tianshou_dream.py --total-steps 20000 --envs 8
    wmsim serve &                                   # or dream on a server: 127.0.0.1:50051
    python clients/examples/tianshou_dream.py --server 127.0.0.1:50051

Tianshou has its own vector API, which steps any subset of its envs and resets them
one by one, so here each of its ``--envs`` sub-envs is one dream,
``gymnasium.make("wmsim/<Game>-dream-v0", obs_type="latent")``, inside Tianshou's
``DummyVectorEnv`` (one model call per env and step; wmsim's ``DreamVectorEnv``
steps all its envs in one call, which Tianshou's API has no place for). Latent
observations (the model's 1,024 one-hot floats) need no decoding and suit an MLP.

Actions must be integers: a wmsim env refuses anything else with a ``ValueError``.
DQN's actions (an argmax) and ``Collector.collect(random=True)`` (the action space's
own samples) are integers, but Tianshou's ``RandomActionPolicy`` sends floats (a
float32 tensor), so it cannot drive a wmsim env as it is.
"""

from __future__ import annotations

import argparse
import time

import gymnasium
import torch
from tianshou.algorithm import DQN
from tianshou.algorithm.modelfree.dqn import DiscreteQLearningPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.data import Collector, VectorReplayBuffer
from tianshou.env import DummyVectorEnv
from tianshou.trainer import OffPolicyTrainerParams
from tianshou.utils.net.common import Net

import wmsim  # noqa: F401  registers wmsim/<Game>-dream-v0


def main() -> None:
    """Train Tianshou's DQN on latent dream envs and print a summary line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--game", default="Breakout")
    parser.add_argument("--total-steps", type=int, default=20_000, help="env steps, all envs")
    parser.add_argument("--envs", type=int, default=8, help="dreams in Tianshou's vector env")
    parser.add_argument("--max-episode-steps", type=int, default=1000)
    parser.add_argument("--server", default=None, help="host:port of a wmsim serve")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads per env")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    def dream() -> gymnasium.Env:
        return gymnasium.make(f"wmsim/{args.game}-dream-v0", obs_type="latent",
                              max_episode_steps=args.max_episode_steps, server=args.server,
                              threads=args.threads)  # fmt: skip

    envs = DummyVectorEnv([dream for _ in range(args.envs)])
    envs.seed(args.seed)  # sub-env i gets seed + i, as gymnasium's vector envs do
    torch.manual_seed(args.seed)
    probe = dream()
    space, actions = probe.observation_space, probe.action_space
    probe.close()

    net = Net(state_shape=space.shape, action_shape=actions.n, hidden_sizes=[256, 256])
    policy = DiscreteQLearningPolicy(model=net, action_space=actions, observation_space=space,
                                     eps_training=0.1, eps_inference=0.0)  # fmt: skip
    algorithm = DQN(policy=policy, optim=AdamOptimizerFactory(lr=1e-3), gamma=0.99,
                    n_step_return_horizon=3, target_update_freq=500)  # fmt: skip
    buffer = VectorReplayBuffer(max(args.total_steps, 1_000), buffer_num=args.envs)
    collector = Collector(algorithm, envs, buffer, exploration_noise=True)
    collector.reset()
    collector.collect(n_step=args.envs * 32, random=True)  # warm-up: integer samples

    started = time.perf_counter()
    per_epoch = min(args.total_steps, 5_000)
    result = algorithm.run_training(
        OffPolicyTrainerParams(
            training_collector=collector, max_epochs=max(1, args.total_steps // per_epoch),
            epoch_num_steps=per_epoch, collection_step_num_env_steps=args.envs,
            update_step_num_gradient_steps_per_sample=1 / args.envs, batch_size=64,
            test_in_training=False, show_progress=False, verbose=False,
        )
    )  # fmt: skip
    seconds = time.perf_counter() - started
    policy.set_eps_inference(0.0)
    played = Collector(algorithm, envs).collect(n_episode=args.envs, reset_before_collect=True)
    envs.close()
    print(f"done steps={result.train_step} episodes={result.train_episode} "
          f"updates={result.update_step} greedy_return={played.returns_stat.mean:.4g} "
          f"seconds={seconds:.4g} steps_per_s={result.train_step / seconds:.4g}")  # fmt: skip


if __name__ == "__main__":
    main()
