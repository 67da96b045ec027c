"""The reference agent in any gymnasium env, through its API alone: ``wmsim agent train --env ID``.

This is the proof that an outside library can train in a dream: the agent
sees only ``gymnasium.make_vec(ID)`` (a wmsim dream env in-process, or served
with ``--server``), never a world model. It reads the last ``STACK`` frames
through a small CNN, rolls out ``horizon`` steps of every env, and updates
with the same actor-critic losses as in imagination (DreamerV3's form of the
lambda-return: episode ends in a real rollout cut the return, and the step
into a reset is left out). The result is then evaluated on the real game.

Observations must be frames (H, W, 3) uint8 and actions ``Discrete``; the
vector env's autoreset mode must be NEXT_STEP (gymnasium's default).
"""

from __future__ import annotations

import dataclasses
import re
import time
from contextlib import closing
from typing import Any

import gymnasium
import numpy as np
import torch
from torch import Tensor, nn

from wmsim.agent.actor_critic import ActorCritic, ActorCriticConfig, ReturnNorm
from wmsim.agent.config import AgentConfig, agent_preset
from wmsim.agent.evaluate import evaluate_policy, training_eval_seed
from wmsim.configs import from_dict, to_dict
from wmsim.errors import UserError
from wmsim.run_dir import RunDirectory
from wmsim.train.optim import OPTIMIZERS

STACK = 4
"""Frames the agent sees at once: one frame shows no motion."""


class FrameAgent(nn.Module):
    """A CNN over the last STACK frames, then the actor-critic.

    Args:
        config: the actor-critic.
        frame_shape: (H, W, 3) of one frame.
        num_actions: size of the discrete action space.
    """

    def __init__(self, config: ActorCriticConfig, frame_shape: tuple[int, ...], num_actions: int):
        super().__init__()
        height, width, channels = frame_shape
        self.encoder = nn.Sequential(
            nn.Conv2d(channels * STACK, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten(),
        )  # fmt: skip
        with torch.no_grad():
            size = self.encoder(torch.zeros(1, channels * STACK, height, width)).shape[-1]
        self.project = nn.Sequential(nn.Linear(size, 512), nn.ReLU())
        self.actor_critic = ActorCritic(config, 512, num_actions)

    def features(self, frames: Tensor) -> Tensor:
        """Stacked frames (..., STACK, H, W, 3) uint8 -> features (..., 512)."""
        lead = frames.shape[:-4]
        x = frames.reshape(-1, *frames.shape[-4:]).permute(0, 1, 4, 2, 3).flatten(1, 2)
        return self.project(self.encoder(x.float() / 255.0)).reshape(*lead, -1)


def push(stack: np.ndarray, obs: np.ndarray, is_first: np.ndarray) -> np.ndarray:
    """The stacks (B, STACK, H, W, 3) after frames ``obs`` (B, H, W, 3); a first frame fills all."""
    shifted = np.concatenate([stack[:, 1:], obs[:, None]], 1)
    return np.where(is_first[:, None, None, None, None], obs[:, None], shifted)


class FramePolicy:
    """A trained :class:`FrameAgent` acting in the real game; the state is its frame stacks."""

    def __init__(self, agent: FrameAgent, generator: torch.Generator, *, greedy: bool = False):
        self.agent, self.generator, self.greedy = agent, generator, greedy
        self.device = next(agent.parameters()).device

    def initial(self, batch: int) -> np.ndarray | None:
        """No frames yet: the first frame fills the stack."""
        return None

    @torch.no_grad()
    def act(self, state, obs: np.ndarray, is_first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frames (B, H, W, 3) and episode starts (B,) -> (actions (B,), frame stacks)."""
        stack = push(np.repeat(obs[:, None], STACK, 1) if state is None else state, obs, is_first)
        features = self.agent.features(torch.from_numpy(stack).to(self.device))
        return self.agent.actor_critic.act(
            features, self.generator, self.greedy
        ).cpu().numpy(), stack


def _eval_game(args: Any) -> str:
    from wmsim.games import resolve_game

    if args.eval_game is not None:
        return resolve_game(args.eval_game)
    match = re.fullmatch(r"(?:wmsim:)?wmsim/(\w+)-dream-v\d+", args.env)
    if match is None:
        raise UserError(f"which real game does {args.env!r} play? name it with --eval-game")
    return resolve_game(match.group(1))


def _make_envs(args: Any) -> gymnasium.vector.VectorEnv:
    kwargs = {"server": args.server} if args.server else {}
    if args.model is not None:
        kwargs["model"] = args.model
    if args.ends is not None:
        kwargs["ends"] = args.ends
    if args.latents is not None:
        kwargs["latents"] = args.latents
    if args.max_episode_steps is not None:
        if args.max_episode_steps < 1:
            raise UserError(f"--max-episode-steps must be positive, got {args.max_episode_steps}")
        kwargs["max_episode_steps"] = args.max_episode_steps
    try:
        envs = gymnasium.make_vec(args.env, num_envs=args.num_envs, **kwargs)
    except gymnasium.error.Error as error:
        raise UserError(f"cannot make {args.env!r}: {error}") from None
    space = envs.single_observation_space
    if not (len(space.shape or ()) == 3 and space.shape[-1] == 3 and space.dtype == np.uint8):
        raise UserError(f"{args.env} observes {space}; the agent reads (H, W, 3) uint8 frames")
    if not isinstance(envs.single_action_space, gymnasium.spaces.Discrete):
        raise UserError(f"{args.env} acts in {envs.single_action_space}; the agent needs Discrete")
    mode = envs.metadata.get("autoreset_mode", gymnasium.vector.AutoresetMode.NEXT_STEP)
    if mode != gymnasium.vector.AutoresetMode.NEXT_STEP:
        raise UserError(f"{args.env} resets in mode {mode}; the agent needs NEXT_STEP")
    return envs


def _update(
    agent: FrameAgent,
    optimizer,
    norm: ReturnNorm,
    rollout: dict[str, np.ndarray],
    device,
    update: int,
) -> dict[str, float]:
    """Actor-critic update ``update`` (from 0) on (B, T) steps and (B, T + 1) frame stacks."""
    t = {k: torch.from_numpy(v).to(device) for k, v in rollout.items()}
    ac = agent.actor_critic
    features = agent.features(t["stacks"])  # (B, T + 1, 512), with gradients into the CNN
    done = t["done"].float()
    loss, metrics, statistics = ac.objective(
        features, t["actions"], t["rewards"], 1.0 - t["terminated"].float(), norm,
        lam=ac.config.lam * (1.0 - done), weight=t["valid"].float(),
    )  # fmt: skip
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(agent.parameters(), ac.config.grad_clip)
    optimizer.step()
    ac.update_slow(update)
    ac.update_statistics(norm, statistics)
    return {**{k: float(v) for k, v in metrics.items()}, "grad_norm": float(grad_norm)}


def _rollout(envs, agent, generator, stack, obs, after_done, horizon, device):
    """``horizon`` steps of every env: the rollout, and the carried (stack, obs, after_done)."""
    keys = ("stacks", "actions", "rewards", "terminated", "done", "valid")
    steps: dict[str, list] = {k: [] for k in keys}
    for _ in range(horizon):
        with torch.no_grad():
            features = agent.features(torch.from_numpy(stack).to(device))
            actions = agent.actor_critic.act(features, generator).cpu().numpy()
        steps["stacks"].append(stack)
        steps["valid"].append(~after_done)  # the step out of a last frame is a reset, not a step
        obs, reward, terminated, truncated, _ = envs.step(actions)
        steps["actions"].append(actions)
        steps["rewards"].append(np.asarray(reward, np.float32))
        steps["terminated"].append(np.asarray(terminated))
        steps["done"].append(np.asarray(terminated | truncated))
        stack = push(stack, obs, after_done)
        after_done = steps["done"][-1]
    steps["stacks"].append(stack)
    rollout = {k: np.stack(v, 1) for k, v in steps.items()}
    return rollout, stack, obs, after_done


def train_in_env(args: Any, overrides: dict[str, Any], device: torch.device, *, progress=True):
    """Train a :class:`FrameAgent` in ``args.env``, then evaluate it on the real game."""
    config = dataclasses.replace(agent_preset(args.preset), **overrides)
    config = dataclasses.replace(
        config, actor_critic=dataclasses.replace(config.actor_critic, form="dreamerv3")
    )
    game = _eval_game(args)
    run_dir = RunDirectory(args.out, "env", resume=args.resume)
    with closing(_make_envs(args)) as envs:
        return _train(run_dir, envs, config, game, args, device, progress)


def _train(
    run_dir: RunDirectory,
    envs: gymnasium.vector.VectorEnv,
    config: AgentConfig,
    game: str,
    args: Any,
    device: torch.device,
    progress: bool,
) -> dict[str, float]:
    # the real game is played as the env's frames were made (a dream's bundle records it)
    resize = envs.metadata.get("real_game", {}).get("resize", "area")
    resolved = {"kind": "env", "env": args.env, "game": game, "preset": args.preset,
                "seed": args.seed, "num_envs": args.num_envs, "ends": args.ends, "resize": resize,
                "max_episode_steps": args.max_episode_steps, "model": args.model,
                "latents": args.latents,
                "agent": to_dict(config)}  # fmt: skip
    saved = run_dir.open(resolved, tuple(resolved), device)
    torch.manual_seed(args.seed)
    num_actions = int(envs.single_action_space.n)
    frame_shape = envs.single_observation_space.shape
    agent = FrameAgent(config.actor_critic, frame_shape, num_actions).to(device)
    ac = config.actor_critic
    trainable = [p for p in agent.parameters() if p.requires_grad]
    optimizer = OPTIMIZERS[ac.optimizer](trainable, lr=ac.lr, eps=ac.eps)
    norm, generator = ReturnNorm(ac.return_decay, ac.return_range), torch.Generator(device)
    generator.manual_seed(args.seed)
    env_steps, updates = 0, 0
    if saved is not None:
        agent.load_state_dict(saved["agent"])
        optimizer.load_state_dict(saved["optimizer"])
        norm.load_state_dict(saved["return_norm"])
        generator.set_state(saved["rng_torch"])
        env_steps, updates = saved["env_steps"], saved["updates"]

    def checkpoint():
        run_dir.save({
            "config": resolved, "env_steps": env_steps, "updates": updates,
            "frame_shape": list(frame_shape), "num_actions": num_actions,
            "agent": agent.state_dict(), "optimizer": optimizer.state_dict(),
            "return_norm": norm.state_dict(), "rng_torch": generator.get_state(),
        })  # fmt: skip

    obs, _ = envs.reset(seed=args.seed + env_steps)
    stack, after_done = push(np.zeros((len(obs), STACK, *frame_shape), np.uint8), obs,
                             np.ones(len(obs), bool)), np.zeros(len(obs), bool)  # fmt: skip
    started, start_steps = time.perf_counter(), env_steps
    last_eval: dict[str, float] = {}
    next_checkpoint = env_steps + config.checkpoint_every
    next_eval = env_steps + config.eval_every if config.eval_every else None

    def evaluate():
        # periodic evaluations play the preset's episodes; `wmsim eval` plays the final one
        result = evaluate_policy(
            FramePolicy(agent.eval(), generator), game, config.eval_episodes,
            seed=training_eval_seed(env_steps), max_frames=config.eval_max_frames, resize=resize,
        )  # fmt: skip
        agent.train()
        log.log(env_steps, "eval", result)
        return result

    with run_dir.running(env_steps, args.env_steps, checkpoint, progress=progress) as (log, bar):
        while env_steps < args.env_steps:
            rollout, stack, obs, after_done = _rollout(
                envs, agent, generator, stack, obs, after_done, config.horizon, device
            )
            metrics = _update(agent, optimizer, norm, rollout, device, updates)
            env_steps, updates = env_steps + rollout["actions"].size, updates + 1
            bar.update(rollout["actions"].size)
            rate = (env_steps - start_steps) / (time.perf_counter() - started)
            log.log(env_steps, "train", {**metrics, "env_steps_per_s": rate})
            if next_eval is not None and next_eval <= env_steps < args.env_steps:
                last_eval = evaluate()
                next_eval = env_steps + config.eval_every
            if env_steps >= next_checkpoint or env_steps >= args.env_steps:
                checkpoint()
                next_checkpoint = env_steps + config.checkpoint_every
        last_eval = evaluate()
    return last_eval


def load_env_policy(
    saved: dict[str, Any], device: torch.device, generator: torch.Generator, *, greedy: bool
) -> FramePolicy:
    """The policy of a checkpoint written by :func:`train_in_env`."""
    config: AgentConfig = from_dict(saved["config"]["agent"])
    agent = FrameAgent(config.actor_critic, tuple(saved["frame_shape"]), saved["num_actions"])
    agent.load_state_dict(saved["agent"])
    return FramePolicy(agent.to(device).eval(), generator, greedy=greedy)
