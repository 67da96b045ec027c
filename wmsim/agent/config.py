"""The full loop's configs, and the presets named after the papers.

An agent preset pairs a world-model preset (``wmsim.train.config.PRESETS``)
with an actor-critic and a schedule. ``storm`` and ``drama`` carry the papers'
values (STORM, Zhang et al. 2023; DRAMA, Wang et al. 2025): one world-model update and one
actor-critic update per env step, 1,024 imagined trajectories of 16 steps from
contexts of 8 frames. ``s5`` is STORM's schedule with DreamerV3's form of the
actor-critic. ``dreamerv2`` is DreamerV2's Atari agent (Hafner et al., ICLR 2021) on
its RSSM: imagination from every posterior state of 16 replayed windows of 50
frames, 15 imagined steps, one update every 16 env steps after 50,000 random
ones. ``rem`` is REM's agent (Cohen et al., ICML 2024) in the form of wmsim's
actor-critic: dreams of 9 policy steps from the last of 2 real frames, 128 per
update, on the tokenizer's code map of each frame, with REM's gamma, lambda,
entropy weight, optimizer and clip (``docs/agent.md`` names the departures).
The ``tiny`` ones train on a laptop CPU within an hour.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from wmsim.agent.actor_critic import ActorCriticConfig
from wmsim.errors import UserError


@dataclass(frozen=True)
class AgentConfig:
    """What ``wmsim agent train`` runs: world model, actor-critic and schedule."""

    world_model: str = "storm"
    """The world-model preset (``wmsim train --preset``) the loop trains."""
    actor_critic: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    """The actor-critic."""
    warmup_steps: int = 1024
    """Env steps of uniformly random play before any training (STORM 1024, DRAMA 1032)."""
    train_every: int = 1
    """Env steps per training round of one world-model update and one actor-critic update."""
    imagine_batch: int = 1024
    """Imagined trajectories per actor-critic update."""
    context: int = 8
    """Real steps an imagined trajectory starts from."""
    horizon: int = 16
    """Imagined steps per trajectory."""
    hard_ends: bool = True
    """Imagined episodes end where the continue logit is negative (STORM, DRAMA), rather
    than continuing with the predicted probability as a discount (DreamerV3)."""
    eval_every: int = 10_000
    """Env steps between evaluations on the real game (0: none during training)."""
    eval_episodes: int = 10
    """Episodes per evaluation during training (``wmsim eval`` runs the final one)."""
    eval_max_frames: int = 108_000
    """Frame cap of an evaluation episode (the protocol's 108,000)."""
    checkpoint_every: int = 2_500
    """Env steps between checkpoints (STORM 2,500)."""
    log_every: int = 250
    """Env steps between logged training metrics."""
    chunk_length: int = 256
    """Replay rows per chunk file; the newest, unfinished chunk is not trained on yet."""


STORM_AC = ActorCriticConfig()
DRAMA_AC = ActorCriticConfig(
    actor_width=256, actor_layers=3, critic_width=512, critic_layers=3, norm="rms",
    activation="silu", optimizer="laprop", lr=4e-5, eps=1e-20, warmup=1000,
    actor_input_norm=True,
)  # fmt: skip
DREAMERV3_AC = ActorCriticConfig(
    form="dreamerv3", act_on="posterior", gamma=1 - 1 / 333, actor_unimix=0.01,
    activation="silu",
)  # fmt: skip
DREAMERV2_AC = ActorCriticConfig(
    form="dreamerv2", act_on="posterior", gamma=0.999, lam=0.95, entropy=1e-3, rho=1.0,
    actor_width=400, actor_layers=4, critic_width=400, critic_layers=4, activation="elu",
    # its target network: a copy of the critic every 100 updates, no regularizer towards it
    slow_decay=0.0, slow_every=100, slow_reg=0.0,
    # one optimizer at the actor's rate (DreamerV2: actor 4e-5, critic 1e-4, separately)
    lr=4e-5, eps=1e-5, grad_clip=100.0,
)  # fmt: skip
DREAMERV2_SCHEDULE = {
    "warmup_steps": 50_000, "train_every": 16, "imagine_batch": 16, "context": 50,
    "horizon": 15, "hard_ends": False,
}  # fmt: skip
REM_AC = ActorCriticConfig(
    # REINFORCE with a baseline, unscaled advantages, the textbook lambda-return
    form="dreamerv2", act_on="posterior", gamma=0.995, lam=0.95, entropy=1e-3, rho=1.0,
    # REM's controller: a 512-wide trunk (Linear and an LSTMCell), SiLU, scalar heads
    actor_width=512, actor_layers=2, critic_width=512, critic_layers=2, activation="silu",
    # REM bootstraps from the critic itself: the slow critic is its copy of one update before
    slow_decay=0.0, slow_every=1, slow_reg=0.0,
    optimizer="adamw", lr=1e-4, eps=1e-8, grad_clip=3.0,
)  # fmt: skip
REM_SCHEDULE = {
    # the world model starts at REM's epoch 25 (5,000 steps); 2 real frames seed 9 policy steps
    "warmup_steps": 5_000, "train_every": 1, "imagine_batch": 128, "context": 2, "horizon": 9,
    "hard_ends": False,  # the ends are sampled: the flags are 0 or 1 already
}  # fmt: skip
TINY = {"actor_width": 128, "critic_width": 128, "lr": 3e-4, "warmup": 0}
TINY_SCHEDULE = {
    # half STORM's context and a sixteenth of its imagined batch: encoding the contexts'
    # frames is most of an update's cost on a CPU
    "warmup_steps": 2000, "train_every": 2, "imagine_batch": 64, "context": 4,
    "eval_every": 5000, "eval_episodes": 10, "checkpoint_every": 1000, "log_every": 200,
}  # fmt: skip

AGENT_PRESETS: dict[str, AgentConfig] = {
    "storm": AgentConfig(world_model="storm", actor_critic=STORM_AC),
    "drama": AgentConfig(world_model="drama", actor_critic=DRAMA_AC, warmup_steps=1032),
    "s5": AgentConfig(world_model="s5", actor_critic=DREAMERV3_AC, hard_ends=False),
    "dreamerv2": AgentConfig(
        world_model="dreamerv2", actor_critic=DREAMERV2_AC, **DREAMERV2_SCHEDULE
    ),
    "tiny": AgentConfig(
        world_model="tiny", actor_critic=dataclasses.replace(STORM_AC, **TINY), **TINY_SCHEDULE
    ),
    "tiny-drama": AgentConfig(
        world_model="tiny-drama",
        actor_critic=dataclasses.replace(
            DRAMA_AC, **{**TINY, "optimizer": "laprop", "actor_layers": 2, "critic_layers": 2}
        ),
        **TINY_SCHEDULE,
    ),
    "tiny-s5": AgentConfig(
        world_model="tiny-s5", actor_critic=dataclasses.replace(DREAMERV3_AC, **TINY),
        hard_ends=False, **TINY_SCHEDULE,
    ),
    "tiny-gru": AgentConfig(
        world_model="tiny-gru", actor_critic=dataclasses.replace(DREAMERV3_AC, **TINY),
        hard_ends=False, **TINY_SCHEDULE,
    ),
    "tiny-dreamerv2": AgentConfig(
        world_model="tiny-dreamerv2",
        actor_critic=dataclasses.replace(
            DREAMERV2_AC, **{**TINY, "actor_layers": 2, "critic_layers": 2}
        ),
        # DreamerV2's 15 imagined steps from every posterior state, of 16 windows of 16 frames:
        # 256 starts, as many frames as the other tiny presets encode per round
        **{**TINY_SCHEDULE, "imagine_batch": 16, "context": 16, "horizon": 15, "hard_ends": False},
    ),
    "rem": AgentConfig(world_model="rem", actor_critic=REM_AC, **REM_SCHEDULE),
    "tiny-rem": AgentConfig(
        world_model="tiny-rem", actor_critic=dataclasses.replace(REM_AC, **TINY),
        **{**TINY_SCHEDULE, **{k: REM_SCHEDULE[k] for k in ("context", "horizon", "hard_ends")}},
    ),
}  # fmt: skip
"""Agent preset name -> its config."""


def agent_preset(name: str) -> AgentConfig:
    """The agent preset called ``name``.

    Raises:
        UserError: no such preset, naming those there are.
    """
    if name not in AGENT_PRESETS:
        raise UserError(f"unknown agent preset {name!r}; choose one of: {', '.join(AGENT_PRESETS)}")
    return AGENT_PRESETS[name]
