"""``wmsim agent train`` and ``wmsim eval``: their arguments and the work behind them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from wmsim.errors import UserError


@dataclass(frozen=True)
class AgentTrainArgs:
    """Train the reference agent: the full loop on a real game, or in a gymnasium env.

    With --game it plays the real game, learns its world model and trains in
    imagination; with --env it trains in any gymnasium env through its API alone.
    """

    out: Path
    """Run directory: config, replay, checkpoint, metrics, TensorBoard logs."""
    game: str | None = None
    """The full loop: play this real game, learn its world model, train the agent in it."""
    env: str | None = None
    """Train in this gymnasium env id instead (e.g. wmsim/Breakout-dream-v0), then
    evaluate on the real game."""
    env_steps: int = 100_000
    """Env steps the run should reach (the Atari 100k budget); with --resume, more than done."""
    preset: str = "storm"
    """Agent preset: storm, drama, s5, dreamerv2, rem, or their tiny forms (a CPU hour)."""
    resume: bool = False
    """Continue the run in --out from its checkpoint."""
    world_model: Path | None = None
    """With --game: start from the world model of this run (`wmsim train --out`, or an agent
    run): its config, weights and optimizer state, in place of the preset's untrained one."""
    seed: int = 0
    """Seeds the world model, the agent, the sampling and the game."""
    device: str = "auto"
    """cpu, cuda, ..., or auto: the accelerator if there is one."""
    server: str | None = None
    """With --env: a `wmsim serve` address (host:port) to dream on."""
    num_envs: int = 16
    """With --env: envs stepped side by side."""
    model: str | None = None
    """With --env and a wmsim dream env: the bundle to dream in (a path or a stored model's
    name; default: the env's, the game's shipped model)."""
    ends: Literal["sampled", "likely"] | None = None
    """With --env and a wmsim dream env: how dream episodes end, sampled with the continue
    head's probability or where an end is more likely than not (default: the env's)."""
    latents: Literal["sampled", "mode"] | None = None
    """With --env and a wmsim dream env: how each dream step takes its latents, drawn from
    the model's prediction or its most likely class (default: the env's, mode)."""
    max_episode_steps: int | None = None
    """With --env: truncate episodes after this many steps (default: the env's registered
    limit). Short dream episodes restart often from real contexts, where a dream is closest
    to the game; the value function bootstraps across the cut."""
    eval_game: str | None = None
    """With --env: the real game to evaluate on (default: the one in a wmsim env id)."""
    train_every: int | None = None
    """Env steps per training round (default: the preset's)."""
    imagine_batch: int | None = None
    """Imagined trajectories per actor-critic update (default: the preset's)."""
    warmup_steps: int | None = None
    """Random-policy steps before training (default: the preset's)."""
    eval_every: int | None = None
    """Env steps between real-game evaluations, 0 for none (default: the preset's)."""
    eval_episodes: int | None = None
    """Episodes per evaluation during training (default: the preset's)."""
    checkpoint_every: int | None = None
    """Env steps between checkpoints (default: the preset's)."""
    eval_max_frames: int | None = None
    """Frame cap of a training-time evaluation episode (default: the protocol's 108,000)."""
    context: int | None = None
    """Real steps an imagined trajectory starts from (default: the preset's)."""
    horizon: int | None = None
    """Imagined steps per trajectory, or rollout steps per update with --env (default: the
    preset's)."""


OVERRIDES = (
    "train_every", "imagine_batch", "warmup_steps", "eval_every", "eval_episodes",
    "checkpoint_every", "eval_max_frames", "context", "horizon",
)  # fmt: skip


def agent_train(args: AgentTrainArgs, *, progress: bool = True) -> dict[str, float]:
    """Run ``wmsim agent train``; return the last evaluation's metrics."""
    from wmsim.devices import resolve_device

    if (args.game is None) == (args.env is None):
        raise UserError("pass exactly one of --game (the full loop) and --env (a gymnasium env)")
    if args.env_steps < 1:
        raise UserError("--env-steps must be positive")
    overrides = {k: getattr(args, k) for k in OVERRIDES if getattr(args, k) is not None}
    device = resolve_device(args.device)
    if args.env is not None:
        from wmsim.agent.gym_loop import train_in_env

        if args.world_model is not None:
            raise UserError("--world-model goes with --game; with --env the env is the model")
        return train_in_env(args, overrides, device, progress=progress)
    if args.server is not None:
        raise UserError("--server goes with --env; the full loop trains its own world model")
    from wmsim.agent.loop import resolve_agent, train_agent
    from wmsim.games import resolve_game

    resolved = resolve_agent(
        resolve_game(args.game), args.preset, args.seed, overrides, world_model=args.world_model
    )
    return train_agent(
        Path(args.out),
        resolved,
        args.env_steps,
        resume=args.resume,
        device=device,
        progress=progress,
    )


def load_policy(run: Path, device: torch.device, *, greedy: bool, seed: int) -> tuple[Any, dict]:
    """The trained policy of an agent run, and its checkpoint's metadata.

    Raises:
        UserError: ``run`` holds no agent checkpoint.
    """
    from wmsim.train.checkpoint import checkpoint_kind, load_checkpoint

    saved = load_checkpoint(run, device)
    kind = checkpoint_kind(saved)
    generator = torch.Generator(device).manual_seed(seed)
    if kind == "agent":
        from wmsim.agent.actor_critic import ActorCritic
        from wmsim.agent.config import AgentConfig
        from wmsim.agent.strategy import RealPolicy
        from wmsim.configs import from_dict
        from wmsim.train.checkpoint import world_model_of

        num_actions = len(saved["action_meanings"])
        model = world_model_of(saved, device)
        agent_config: AgentConfig = from_dict(saved["config"]["agent"])
        agent = ActorCritic(agent_config.actor_critic, model.feature_size, num_actions).to(device)
        agent.load_state_dict(saved["agent"])
        return RealPolicy(model.eval(), agent.eval(), generator, greedy=greedy), saved
    if kind == "env":
        from wmsim.agent.gym_loop import load_env_policy

        return load_env_policy(saved, device, generator, greedy=greedy), saved
    raise UserError(
        f"{run} holds a world-model run, not an agent; train one with `wmsim agent train`"
    )


@dataclass(frozen=True)
class EvalArgs:
    """Evaluate an agent on the real game under the Atari 100k protocol."""

    agent: Path | None = None
    """The agent's run directory (`wmsim agent train --out`)."""
    game: str | None = None
    """The game (default: the agent's)."""
    episodes: int = 20
    """Episodes to play (STORM 20; DRAMA, DreamerV3, REM 100)."""
    random: bool = False
    """Evaluate the uniformly random policy instead of an agent: the protocol's baseline."""
    greedy: bool = False
    """Take the most likely action (DRAMA) rather than sampling one (STORM)."""
    seed: int = 0
    """Episode i starts from reset(seed=seed + i)."""
    max_frames: int = 108_000
    """Frame cap per episode (the protocol's 108,000 = 30 minutes)."""
    out: Path | None = None
    """The JSON record (default: AGENT/eval.json, or eval-random-GAME.json here)."""
    video: Path | None = None
    """Write the first episode as a video here (.mp4 or .gif; default: beside the record)."""
    device: str = "auto"
    """cpu, cuda, ..., or auto."""
    resize: Literal["auto", "area", "max"] = "auto"
    """How real frames shrink for the agent; auto: as in the env it trained in (a dream env's
    bundle records it), else area (the protocol's)."""


def evaluate_command(args: EvalArgs, *, progress: bool = True) -> tuple[dict, Path]:
    """Run ``wmsim eval``; return the record and where it was written."""
    from wmsim.agent.evaluate import (
        RandomPolicy,
        eval_record,
        play_episodes,
        protocol,
        write_record,
    )
    from wmsim.devices import resolve_device
    from wmsim.games import resolve_game
    from wmsim.video import write_video

    if args.random == (args.agent is not None):
        raise UserError("pass --agent RUN, or --random for the random baseline (one of them)")
    env_steps, run, trained_on = None, None, "area"
    if args.random:
        if args.game is None:
            raise UserError("--random needs --game")
        game = resolve_game(args.game)
        from wmsim.collect.atari import AtariEnv

        probe = AtariEnv(protocol(game))
        policy = RandomPolicy(int(probe.action_space.n), args.seed)
        probe.close()
        out = args.out or Path(f"eval-random-{game}.json")
    else:
        policy, saved = load_policy(
            args.agent, resolve_device(args.device), greedy=args.greedy, seed=args.seed
        )
        game = saved["config"]["game"]
        if args.game is not None and resolve_game(args.game) != game:
            raise UserError(f"{args.agent} plays {game}, not {args.game}; drop --game")
        env_steps, run = saved["env_steps"], str(args.agent)
        out = args.out or Path(args.agent) / "eval.json"
        trained_on = saved["config"].get("resize", "area")
    resize = args.resize if args.resize != "auto" else trained_on
    result = play_episodes(
        policy, game, args.episodes, seed=args.seed, max_frames=args.max_frames, resize=resize,
        record=True, progress=progress,
    )  # fmt: skip
    record = eval_record(
        game, result, run=run, policy="random" if args.random else "agent", env_steps=env_steps,
        seed=args.seed, max_frames=args.max_frames, greedy=args.greedy, resize=resize,
    )  # fmt: skip
    video = args.video or out.with_suffix(".mp4")
    if len(result.frames):
        write_video(video, result.frames, fps=15)
        record["video"] = str(video)
    write_record(out, record)
    return record, out
