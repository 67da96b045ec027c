"""The full Atari 100k loop: ``wmsim agent train --game G --preset P --env-steps N --out RUN``.

As STORM (Zhang et al. 2023) and DRAMA (Wang et al. 2025) run it: play the real
game with the current policy into a replay, and every ``train_every`` env
steps train the world model on replayed windows once, imagine trajectories
from replayed contexts, and update the actor-critic on them once. The first
``warmup_steps`` steps are played by a uniformly random policy. Where dreams
start and how real frames are read depend on the world model
(``wmsim.agent.strategy``): on DreamerV2's RSSM, from every posterior state of
the contexts, and on the posterior filter; on REM, from the last of 2 real
frames, and on the tokenizer's code map of the frame.

A run directory holds ``config.json``, ``replay/`` (every step played, a
replay ``wmsim train`` and ``wmsim data info`` read), ``checkpoint.pt``
(atomic; world model, actor-critic, optimizers, every random generator),
``metrics.jsonl`` and ``tb/``. ``--resume`` continues from the checkpoint with
a new episode in a new replay stream; steps played after the checkpoint stay
in the replay.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wmsim.agent.actor_critic import ActorCritic, ReturnNorm
from wmsim.agent.config import AgentConfig, agent_preset
from wmsim.agent.evaluate import evaluate_policy, training_eval_seed
from wmsim.agent.strategy import STRATEGIES, RealPolicy, strategy_for
from wmsim.collect.atari import AtariConfig, AtariEnv
from wmsim.collect.rollout import step_flags, stream_seed
from wmsim.configs import from_dict, to_dict
from wmsim.errors import UserError
from wmsim.model import make_world_model
from wmsim.replay import SAMPLERS, Replay
from wmsim.replay.format import make_manifest
from wmsim.replay.writer import ReplayLock, ReplayWriter
from wmsim.run_dir import RunDirectory
from wmsim.train.checkpoint import load_checkpoint
from wmsim.train.config import TrainConfig, preset
from wmsim.train.optim import OPTIMIZERS, warm_up
from wmsim.train.step import make_optimizer, to_torch, world_model_step

REPLAY = "replay"


def resolve_agent(
    game: str,
    preset_name: str,
    seed: int,
    overrides: dict[str, Any],
    *,
    world_model: Path | None = None,
) -> dict[str, Any]:
    """The run's full config: the agent preset, its world model's preset, the overrides.

    With ``world_model`` (a run directory) the world model is that run's, as it was
    trained: its config here, its weights when the loop starts (:func:`train_agent`).

    Raises:
        UserError: bad settings, or a world-model run of another game or kind.
    """
    agent = dataclasses.replace(agent_preset(preset_name), **overrides)
    if min(agent.train_every, agent.imagine_batch, agent.context, agent.horizon) < 1:
        raise UserError("--train-every, --imagine-batch, --context and --horizon must be positive")
    train, start, resize = to_dict(preset(agent.world_model)), None, "area"
    if world_model is not None:
        saved = load_checkpoint(world_model)
        if saved["config"].get("game") != game:
            raise UserError(
                f"{world_model} models {saved['config'].get('game')}, not {game}; "
                "pass a world model of the same game"
            )
        train = saved["config"]["train"]
        if type(from_dict(train).model) not in STRATEGIES:
            raise UserError(
                f"{world_model} holds a {saved['config'].get('preset')} world model; the reference "
                "agent trains on the latent-per-frame ones, DreamerV2's RSSM and REM (storm, "
                "drama, s5, dreamerv2, rem and their tiny forms)"
            )
        start = {"run": str(world_model)}  # not its step: that run may train on meanwhile
        # the loop plays the real game with the frames that world model learned from
        resize = Replay(Path(saved["config"]["data"])).env.get("resize", "area")
    open_to = strategy_for(from_dict(train).model).act_on
    if agent.actor_critic.act_on not in open_to:
        raise UserError(
            f"act_on {agent.actor_critic.act_on!r} is not open to this world model; its agent "
            f"acts on: {', '.join(open_to)}"
        )
    return {
        "kind": "agent",
        "preset": preset_name,
        "game": game,
        "seed": seed,
        "agent": to_dict(agent),
        "train": train,
        "world_model_from": start,
        "resize": resize,
    }


class AgentRun:
    """Everything the loop keeps between steps: env, replay, models, optimizers, randomness."""

    def __init__(self, out: Path, resolved: dict[str, Any], device: torch.device):
        self.out, self.resolved, self.device = out, resolved, device
        self.config: AgentConfig = from_dict(resolved["agent"])
        self.train_config: TrainConfig = from_dict(resolved["train"])
        seed = resolved["seed"]
        self.env = AtariEnv(
            AtariConfig(game=resolved["game"], resize=resolved.get("resize", "area"))
        )
        self.num_actions = int(self.env.action_space.n)
        manifest = make_manifest(dataclasses.asdict(self.env.config), self.env.action_meanings)
        self.lock = ReplayLock(out / REPLAY, manifest)
        torch.manual_seed(seed)
        self.model = make_world_model(self.train_config.model, self.num_actions).to(device)
        self.strategy = strategy_for(self.train_config.model)
        self.model_optimizer = make_optimizer(self.model, self.train_config)
        ac = self.config.actor_critic
        self.agent = ActorCritic(ac, self.model.feature_size, self.num_actions).to(device)
        self.agent_optimizer = OPTIMIZERS[ac.optimizer](
            [p for p in self.agent.parameters() if p.requires_grad], lr=ac.lr, eps=ac.eps
        )
        self.return_norm = ReturnNorm(ac.return_decay, ac.return_range)
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator(device).manual_seed(seed)
        self.sampler = SAMPLERS[self.train_config.sampler]()
        self.env_steps, self.updates, self.episodes = 0, 0, 0

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds."""
        return {
            "config": self.resolved, "action_meanings": self.env.action_meanings,
            "env_steps": self.env_steps, "updates": self.updates, "episodes": self.episodes,
            "model": self.model.state_dict(), "agent": self.agent.state_dict(),
            "model_optimizer": self.model_optimizer.state_dict(),
            "agent_optimizer": self.agent_optimizer.state_dict(),
            "return_norm": self.return_norm.state_dict(),
            "rng_numpy": self.rng.bit_generator.state, "rng_torch": self.generator.get_state(),
            "sampler": {k: torch.from_numpy(v) for k, v in self.sampler.state_dict().items()},
        }  # fmt: skip

    def start_from(self, saved: dict[str, Any]) -> None:
        """Take the world model (weights and optimizer) of another run's checkpoint."""
        self.model.load_state_dict(saved["model"])
        self.model_optimizer.load_state_dict(saved.get("model_optimizer", saved.get("optimizer")))

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue from a checkpoint's state."""
        self.model.load_state_dict(saved["model"])
        self.agent.load_state_dict(saved["agent"])
        self.model_optimizer.load_state_dict(saved["model_optimizer"])
        self.agent_optimizer.load_state_dict(saved["agent_optimizer"])
        self.return_norm.load_state_dict(saved["return_norm"])
        self.rng.bit_generator.state = saved["rng_numpy"]
        self.generator.set_state(saved["rng_torch"])
        self.sampler.load_state_dict({k: v.numpy() for k, v in saved["sampler"].items()})
        self.env_steps, self.updates = saved["env_steps"], saved["updates"]
        self.episodes = saved["episodes"]

    def train_round(self, replay: Replay) -> dict[str, float]:
        """One world-model update and one actor-critic update on imagined trajectories."""
        c, wm = self.config, self.train_config
        self.model.train()
        starts = self.sampler.train_starts(replay.window_starts(wm.length), wm.batch, self.rng)
        batch = to_torch(replay.gather(starts, wm.length), self.device)
        metrics = world_model_step(
            self.model, self.model_optimizer, batch, wm, self.updates, self.generator
        )
        self.model.eval()  # imagination without dropout, BatchNorm on its running statistics
        starts = self.sampler.imagination_starts(
            replay.window_starts(c.context), c.imagine_batch, self.rng
        )
        context = to_torch(
            replay.gather(starts, c.context, self.strategy.context_keys), self.device
        )
        trajectory = self.strategy.imagine(
            self.model, self.agent, context, c.horizon, self.generator, hard_ends=c.hard_ends
        )
        ac = c.actor_critic
        warm_up(self.agent_optimizer, ac.lr, ac.warmup, self.updates)
        loss, ac_metrics, statistics = self.agent.objective(
            trajectory.features, trajectory.actions, trajectory.reward, trajectory.cont,
            self.return_norm, start=trajectory.start,
        )  # fmt: skip
        self.agent_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.agent.parameters(), ac.grad_clip)
        self.agent_optimizer.step()
        self.agent.update_slow(self.updates)
        self.agent.update_statistics(self.return_norm, statistics)
        self.updates += 1
        metrics = {f"model_{k}": v for k, v in metrics.items()}
        metrics.update({k: float(v) for k, v in ac_metrics.items()}, agent_grad_norm=float(norm))
        return metrics

    def policy(self, *, greedy: bool = False) -> RealPolicy:
        """The current policy, for the real game."""
        self.model.eval()
        return RealPolicy(self.model, self.agent, self.generator, greedy=greedy)

    def evaluate(self, episodes: int) -> dict[str, float]:
        """Mean score (and HNS) of ``episodes`` real episodes with the current policy."""
        return evaluate_policy(
            self.policy(), self.resolved["game"], episodes, seed=training_eval_seed(self.env_steps),
            max_frames=self.config.eval_max_frames, resize=self.resolved.get("resize", "area"),
        )  # fmt: skip


def train_agent(
    out: Path,
    resolved: dict[str, Any],
    env_steps: int,
    *,
    resume: bool = False,
    device: torch.device,
    progress: bool = True,
) -> dict[str, float]:
    """Run the loop until ``env_steps`` real steps were played; return the last evaluation.

    Raises:
        UserError: bad settings or run directory (see the messages).
        KeyboardInterrupt: on Ctrl-C or SIGTERM, after saving a checkpoint.
    """
    run_dir = RunDirectory(out, "agent", resume=resume)
    keys = ("preset", "game", "seed", "train", "agent", "world_model_from")
    saved = run_dir.open(resolved, keys, device)
    run = AgentRun(out, resolved, device)
    if saved is not None:
        run.restore(saved)
    elif resolved.get("world_model_from"):
        run.start_from(load_checkpoint(Path(resolved["world_model_from"]["run"]), device))
    with run.lock:
        return _play_and_train(run, run_dir, env_steps, progress)


def _play_and_train(
    run: AgentRun, run_dir: RunDirectory, env_steps: int, progress: bool
) -> dict[str, float]:
    c, out = run.config, run.out
    stream = run.lock.new_streams(1)[0]
    writer = ReplayWriter(out / REPLAY, stream, chunk_length=c.chunk_length)
    replay: Replay | None = None
    policy = run.policy()
    policy_state = policy.initial(1)
    obs, _ = run.env.reset(seed=stream_seed(run.resolved["seed"], stream))
    reward, life_loss, is_first, is_last, is_terminal = 0.0, False, True, False, False
    episode_return, returns, metrics, last_eval = 0.0, [], {}, {}
    started, steps_at_start = time.perf_counter(), run.env_steps

    def checkpoint() -> None:
        writer.flush()
        run_dir.save(run.state())

    with (
        closing(writer),
        run_dir.running(run.env_steps, env_steps, checkpoint, progress=progress) as (log, bar),
    ):
        while run.env_steps < env_steps:
            if is_last:
                action = 0  # no action is taken at a last frame
            elif run.env_steps < c.warmup_steps:
                action = int(run.rng.integers(run.num_actions))
            else:
                actions, policy_state = policy.act(policy_state, obs[None], np.array([is_first]))
                action = int(actions[0])
            writer.add({
                "obs": obs, "action": action, "reward": reward, "is_first": is_first,
                "is_last": is_last, "is_terminal": is_terminal, "life_loss": life_loss,
            })  # fmt: skip
            if is_last:  # a row, not a step: the next row starts a new episode
                obs, _ = run.env.reset()
                reward, life_loss, is_first, is_last, is_terminal = 0.0, False, True, False, False
                returns.append(episode_return)
                episode_return, run.episodes = 0.0, run.episodes + 1
                continue
            obs, reward, terminated, truncated, info = run.env.step(action)
            is_first, life_loss = False, info["life_loss"]
            is_last, is_terminal = step_flags(terminated, truncated)
            episode_return += reward
            run.env_steps += 1
            bar.update(1)
            if run.env_steps >= c.warmup_steps and run.env_steps % c.train_every == 0:
                if replay is None:
                    writer.flush()  # the warm-up's steps become trainable at once
                    replay = Replay(out / REPLAY)
                elif run.env_steps % 64 == 0:
                    replay.refresh()
                metrics = run.train_round(replay)
            done = run.env_steps == env_steps
            if run.env_steps % c.log_every == 0 or done:
                rate = (run.env_steps - steps_at_start) / (time.perf_counter() - started)
                shown = {**metrics, "env_steps_per_s": rate, "updates": run.updates}
                if returns:
                    shown.update(episode_return=float(np.mean(returns)), episodes=run.episodes)
                    returns = []
                log.log(run.env_steps, "train", shown)
                if "return" in metrics:
                    bar.set_postfix(ret=f"{metrics['return']:.2f}", refresh=False)
            if c.eval_every and (run.env_steps % c.eval_every == 0 or done):
                last_eval = run.evaluate(c.eval_episodes)
                log.log(run.env_steps, "eval", last_eval)
            if run.env_steps % c.checkpoint_every == 0 or done:
                checkpoint()
    return last_eval
