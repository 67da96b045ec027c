"""PPO inside a dream: a CleanRL-style single-file PPO trained on a learned Atari simulator.

    python clients/examples/ppo_dream.py --total-steps 100000 --num-envs 8
    wmsim serve &                                    # or dream on a server: 127.0.0.1:50051
    python clients/examples/ppo_dream.py --server 127.0.0.1:50051 --save agent.pt

PPO with a clipped objective, a clipped value loss, an entropy bonus and GAE
(Schulman et al. 2017, arXiv:1707.06347; CleanRL's ``ppo_atari.py`` line for line
where it can be), on ``wmsim/<Game>-dream-v0``'s native vector env: one model
call steps all ``--num-envs`` dreams. The env resets ended episodes in the same
step (SAME_STEP), so a truncated episode bootstraps from the value of its last
observation (``infos["final_obs"]``). The agent sees one 64x64 RGB frame, not a
stack of four. A token-guarded server takes ``$WMSIM_TOKEN``. ``--help`` lists
every option.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium
import numpy as np
import torch
import tyro
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers.vector import RecordEpisodeStatistics
from torch import nn
from torch.distributions import Categorical

import wmsim  # noqa: F401  registers wmsim/<Game>-dream-v0


@dataclass(frozen=True)
class Config:
    """PPO on a dream vector env."""

    game: str = "Breakout"
    """The Atari game whose dream to train in (``wmsim/<game>-dream-v0``)."""
    total_steps: int = 100_000
    """Env steps to train for, over all envs (rounded down to whole rollouts, at least one)."""
    num_envs: int = 8
    """Dreams stepped together in one batched model call."""
    num_steps: int = 128
    """Steps per env in each rollout."""
    max_episode_steps: int = 1000
    """Truncate a dream episode after this many steps."""
    server: str | None = None
    """host:port of a ``wmsim serve`` to dream on; None dreams in this process."""
    threads: int | None = None
    """onnxruntime threads of an in-process dream; None: one per core."""
    seed: int = 0
    """Seeds the dreams, the agent's initialisation and its action and minibatch sampling."""
    device: str = "cpu"
    """The torch device of the agent."""
    save: Path | None = None
    """Save the agent's state_dict here at the end, and this config next to it (.config.json)."""
    learning_rate: float = 2.5e-4
    """Adam's step size, annealed linearly to 0 over the updates."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """lambda of generalised advantage estimation."""
    num_minibatches: int = 4
    """Minibatches per rollout."""
    update_epochs: int = 4
    """Passes over each rollout."""
    clip_coef: float = 0.1
    """Clip range of the probability ratio and of the value change."""
    ent_coef: float = 0.01
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    max_grad_norm: float = 0.5
    """Clip the gradient to this global norm."""

    def __post_init__(self):
        if min(self.total_steps, self.num_envs, self.num_steps, self.num_minibatches) < 1:
            raise ValueError("total_steps, num_envs, num_steps and num_minibatches must be >= 1")
        if self.batch_size % self.num_minibatches:
            raise ValueError(f"num_minibatches ({self.num_minibatches}) must divide "
                             f"num_envs * num_steps ({self.batch_size})")  # fmt: skip

    @property
    def batch_size(self) -> int:
        """Transitions per rollout."""
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        """Rollouts (and PPO updates) in the run."""
        return max(1, self.total_steps // self.batch_size)


def layer_init(layer: nn.Module, std: float = np.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights and constant biases, as CleanRL (and OpenAI baselines) initialise."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class Agent(nn.Module):
    """Actor-critic on a Nature-CNN encoder (Mnih et al. 2015) sized for 64x64x3 uint8 frames."""

    def __init__(self, num_actions: int):
        super().__init__()
        self.encoder = nn.Sequential(
            layer_init(nn.Conv2d(3, 32, 8, stride=4)), nn.ReLU(),  # (B, 32, 15, 15)
            layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),  # (B, 64, 6, 6)
            layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(),  # (B, 64, 4, 4)
            nn.Flatten(), layer_init(nn.Linear(64 * 4 * 4, 512)), nn.ReLU(),  # (B, 512)
        )  # fmt: skip
        self.actor = layer_init(nn.Linear(512, num_actions), std=0.01)  # near-uniform at first
        self.critic = layer_init(nn.Linear(512, 1), std=1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs (B, 64, 64, 3) uint8 -> action logits (B, A), values (B,)."""
        features = self.encoder(obs.permute(0, 3, 1, 2).float() / 255.0)
        return self.actor(features), self.critic(features).squeeze(-1)


def gae(
    rewards: torch.Tensor, values: torch.Tensor, ends: torch.Tensor, next_value: torch.Tensor,
    gamma: float, lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Generalised advantage estimation over a rollout (Schulman et al. 2016, eq. 16).

    rewards, values, ends (T, N): ``ends[t]`` says step t ended its episode, so step t+1
    starts a new one; next_value (N,) is the value after the last step ->
    advantages, returns (T, N).
    """
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(len(rewards))):
        following = values[t + 1] if t + 1 < len(rewards) else next_value
        nonterminal = 1.0 - ends[t]
        delta = rewards[t] + gamma * following * nonterminal - values[t]
        last = delta + gamma * lam * nonterminal * last
        advantages[t] = last
    return advantages, advantages + values


def ppo_loss(
    agent: Agent, batch: dict[str, torch.Tensor], config: Config
) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped PPO loss of a minibatch (obs, actions, logprobs, advantages, returns, values)."""
    logits, values = agent(batch["obs"])
    dist = Categorical(logits=logits)
    log_ratio = dist.log_prob(batch["actions"]) - batch["logprobs"]
    ratio = log_ratio.exp()
    advantages = batch["advantages"]
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    clipped = ratio.clamp(1 - config.clip_coef, 1 + config.clip_coef)
    policy_loss = torch.max(-advantages * ratio, -advantages * clipped).mean()
    # the value may move at most clip_coef from the rollout's value, as in PPO2
    returns, old_values = batch["returns"], batch["values"]
    values_clipped = old_values + (values - old_values).clamp(-config.clip_coef, config.clip_coef)
    value_loss = torch.max((values - returns) ** 2, (values_clipped - returns) ** 2).mean() / 2
    entropy = dist.entropy().mean()
    loss = policy_loss - config.ent_coef * entropy + config.vf_coef * value_loss
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()  # http://joschu.net/blog/kl-approx.html
    stats = {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy}
    return loss, {**{k: v.item() for k, v in stats.items()}, "approx_kl": approx_kl.item()}


def make_envs(config: Config) -> RecordEpisodeStatistics:
    """The dream vector env in SAME_STEP mode, recording each ended episode's return and length."""
    envs = gymnasium.make_vec(
        f"wmsim/{config.game}-dream-v0", num_envs=config.num_envs,
        vectorization_mode="vector_entry_point", autoreset_mode=AutoresetMode.SAME_STEP,
        max_episode_steps=config.max_episode_steps, threads=config.threads, server=config.server,
    )  # fmt: skip
    return RecordEpisodeStatistics(envs)


def collect(
    envs: RecordEpisodeStatistics, agent: Agent, obs: torch.Tensor, generator: torch.Generator,
    config: Config,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:  # fmt: skip
    """Play ``num_steps`` steps from obs (N, 64, 64, 3) -> the rollout (T, N, ...), the next obs."""
    T, N, device = config.num_steps, config.num_envs, obs.device
    rollout = {k: torch.zeros((T, N), device=device) for k in ("logprobs", "rewards", "ends")}
    rollout["obs"] = torch.zeros((T, *obs.shape), dtype=torch.uint8, device=device)
    rollout["actions"] = torch.zeros((T, N), dtype=torch.long, device=device)
    rollout["values"] = torch.zeros((T, N), device=device)
    for t in range(T):
        rollout["obs"][t] = obs
        with torch.no_grad():
            logits, rollout["values"][t] = agent(obs)
        action = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)
        rollout["actions"][t] = action
        rollout["logprobs"][t] = Categorical(logits=logits).log_prob(action)
        next_obs, rewards, terminated, truncated, infos = envs.step(action.cpu().numpy())
        rewards = torch.as_tensor(rewards, dtype=torch.float32, device=device)
        # a truncated episode goes on past the cut: bootstrap from its last observation
        for i in np.flatnonzero(truncated & ~terminated):
            final_obs = torch.as_tensor(infos["final_obs"][i], device=device)
            with torch.no_grad():
                rewards[i] += config.gamma * agent(final_obs[None])[1][0]
        rollout["rewards"][t] = rewards
        rollout["ends"][t] = torch.as_tensor(terminated | truncated, device=device)
        obs = torch.as_tensor(next_obs, device=device)
    return rollout, obs


def update(
    agent: Agent, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
    generator: torch.Generator, config: Config,
) -> dict[str, float]:  # fmt: skip
    """``update_epochs`` passes of minibatch steps over a flat batch (B, ...) -> the last stats."""
    minibatch_size = config.batch_size // config.num_minibatches
    for _ in range(config.update_epochs):
        order = torch.randperm(config.batch_size, generator=generator, device=generator.device)
        for start in range(0, config.batch_size, minibatch_size):
            indices = order[start : start + minibatch_size]
            loss, stats = ppo_loss(agent, {k: v[indices] for k, v in batch.items()}, config)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
            optimizer.step()
    return stats


def train(config: Config) -> dict[str, float]:
    """Train a PPO agent in the dream; returns the run's summary stats (and saves if asked)."""
    torch.manual_seed(config.seed)  # the agent's initialisation
    device = torch.device(config.device)
    generator = torch.Generator(device).manual_seed(config.seed)  # actions and minibatches
    envs = make_envs(config)
    agent = Agent(int(envs.single_action_space.n)).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=config.learning_rate, eps=1e-5)
    obs = torch.as_tensor(envs.reset(seed=config.seed)[0], device=device)
    started = time.perf_counter()
    for step in range(config.num_updates):
        for group in optimizer.param_groups:  # linear annealing to 0
            group["lr"] = config.learning_rate * (1.0 - step / config.num_updates)
        rollout, obs = collect(envs, agent, obs, generator, config)
        with torch.no_grad():
            next_value = agent(obs)[1]
        advantages, returns = gae(rollout["rewards"], rollout["values"], rollout["ends"],
                                  next_value, config.gamma, config.gae_lambda)  # fmt: skip
        batch = {k: rollout[k].flatten(0, 1) for k in ("obs", "actions", "logprobs", "values")}
        batch.update(advantages=advantages.flatten(0, 1), returns=returns.flatten(0, 1))
        stats = update(agent, optimizer, batch, generator, config)
        seconds, steps = time.perf_counter() - started, (step + 1) * config.batch_size
        recent = envs.return_queue  # the last 100 episodes' returns
        mean_return = float(np.mean(recent)) if recent else float("nan")
        print(f"update={step + 1}/{config.num_updates} steps={steps} steps_per_s="
              f"{steps / seconds:.0f} episodes={envs.episode_count} mean_return={mean_return:.4f} "
              f"approx_kl={stats['approx_kl']:.4f}", flush=True)  # fmt: skip
    envs.close()
    lengths = envs.length_queue
    mean_length = float(np.mean(lengths)) if lengths else float("nan")
    summary = {
        "steps": steps, "updates": config.num_updates, "episodes": int(envs.episode_count),
        "mean_return": mean_return, "mean_length": mean_length,
        "seconds": seconds, "steps_per_s": steps / seconds, **stats,
    }  # fmt: skip
    if config.save is not None:
        config.save.parent.mkdir(parents=True, exist_ok=True)
        torch.save(agent.state_dict(), config.save)
        config_json = {**asdict(config), "save": str(config.save)}
        config.save.with_suffix(".config.json").write_text(json.dumps(config_json, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    summary = train(tyro.cli(Config, description=__doc__.split("\n")[0]))
    print("done " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in summary.items()))  # fmt: skip
