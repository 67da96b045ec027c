"""Training configs and the presets named after the papers.

A preset is a :class:`TrainConfig`: the world model and how it is optimized
and evaluated. ``storm``, ``dreamerv2`` and ``drama`` carry the papers'
hyperparameters (STORM, Zhang et al. 2023; DreamerV2, Hafner et al. 2021; DRAMA,
Wang et al. 2025), and ``rem`` REM's (Cohen et al. 2024: its tokenizer, RetNet and
POP); ``s5`` is STORM's world model with the S5 stack of Lu et al. 2023 ("Structured
State Space Models for In-Context Reinforcement Learning") as its sequence model. The
``tiny`` ones are small enough to learn Breakout on a laptop CPU in minutes,
for tests and demos.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wmsim.errors import UserError
from wmsim.model import LatentWorldModelConfig, REMConfig, RSSMConfig, WorldModelConfig
from wmsim.model.backbones import GRUConfig, MambaConfig, S5Config, TransformerConfig
from wmsim.model.retnet import RetNetConfig
from wmsim.model.tokenizer import TokenizerConfig


@dataclass(frozen=True)
class TrainConfig:
    """How a world model is trained and evaluated; saved, resolved, with every checkpoint."""

    model: WorldModelConfig = field(default_factory=LatentWorldModelConfig)
    """The world model."""
    batch: int = 16
    """Windows per batch."""
    length: int = 64
    """Steps per window."""
    optimizer: str = "adam"
    """adam, or laprop (DRAMA)."""
    lr: float = 1e-4
    """The optimizer's learning rate."""
    eps: float = 1e-8
    """The optimizer's epsilon."""
    weight_decay: float = 0.0
    """The optimizer's weight decay (L2 for Adam, decoupled for LaProp)."""
    grad_clip: float = 1000.0
    """Gradients are clipped to this global norm."""
    warmup: int = 0
    """Steps of linear learning-rate warm-up."""
    sampler: str = "uniform"
    """How windows are drawn: uniform or dfs (DRAMA)."""
    event_share: float = 0.0
    """Share of each batch drawn from windows where a reward or an end arrives, so the sparse
    heads see them (0: the sampler alone, as the papers)."""
    holdout: float = 0.1
    """Last share of every stream kept out of training, for evaluation."""
    context: int = 8
    """Real frames an evaluation dream starts from (STORM: 8)."""
    horizon: int = 16
    """Dreamed steps an evaluation compares with the real ones."""
    eval_windows: int = 64
    """Held-out windows per evaluation."""
    eval_every: int = 500
    """Steps between evaluations."""
    checkpoint_every: int = 500
    """Steps between checkpoints."""
    log_every: int = 25
    """Steps between logged training metrics."""


TINY_LATENT = {
    "depth": 16, "stoch": 32, "classes": 32, "head_width": 128, "head_layers": 1,
    # BatchNorm, as STORM: without it the categorical bottleneck sits for thousands of steps
    # at the mean frame (the decoder learns to ignore latents that are noise at first);
    # a sigmoid output (DRAMA) reaches black exactly
    "norm": True, "decoder_sigmoid": True,
    # the ball: moving pixels' error weighted 21x (wmsim.model.pixels); the papers weigh all alike
    "motion_weight": 20.0,
}  # fmt: skip
TINY_TRAINING = {
    "batch": 8, "length": 24, "lr": 1e-3, "eval_every": 250, "checkpoint_every": 250,
    "event_share": 0.25,  # a quarter of the windows hold a reward or an end (papers: none)
}  # fmt: skip

PRESETS: dict[str, TrainConfig] = {
    "storm": TrainConfig(
        model=LatentWorldModelConfig(backbone=TransformerConfig()),
        batch=16, length=64, lr=1e-4, grad_clip=1000.0,
    ),
    "dreamerv2": TrainConfig(
        model=RSSMConfig(),
        batch=16, length=50, lr=2e-4, eps=1e-5, weight_decay=1e-6, grad_clip=100.0,
    ),
    "drama": TrainConfig(
        model=LatentWorldModelConfig(
            # DRAMA lets the SSM state flow across episode ends inside a training window
            backbone=MambaConfig(episode_resets=False),
            stem="drama", depth=16, norm=True, decoder_sigmoid=True, activation="silu",
            head_width=256, head_layers=1, dyn_scale=1.0, rep_scale=0.1,
        ),
        batch=16, length=128, optimizer="laprop", lr=4e-5, eps=1e-20, warmup=1000,
        grad_clip=1000.0, sampler="dfs",
    ),
    "s5": TrainConfig(
        model=LatentWorldModelConfig(backbone=S5Config()),
        batch=16, length=64, lr=1e-4, grad_clip=1000.0,
    ),
    "rem": TrainConfig(
        model=REMConfig(),
        # REM's world-model optimizer; its segments of 10 steps, the first 2 as context
        batch=64, length=10, optimizer="adamw", lr=2e-4, weight_decay=0.05, grad_clip=100.0,
        context=2,
    ),
    "tiny": TrainConfig(
        model=LatentWorldModelConfig(
            backbone=TransformerConfig(
                width=128, layers=2, heads=4, ffn=256, window=32, dropout=0.0
            ),
            **TINY_LATENT,
        ),
        **TINY_TRAINING,
    ),
    "tiny-gru": TrainConfig(
        model=LatentWorldModelConfig(backbone=GRUConfig(width=128), **TINY_LATENT),
        **TINY_TRAINING,
    ),
    "tiny-drama": TrainConfig(
        model=LatentWorldModelConfig(
            backbone=MambaConfig(width=128, heads=4), stem="drama", **TINY_LATENT
        ),
        **{**TINY_TRAINING, "optimizer": "laprop", "eps": 1e-20, "sampler": "dfs"},
    ),
    "tiny-s5": TrainConfig(
        model=LatentWorldModelConfig(backbone=S5Config(width=128, state=128), **TINY_LATENT),
        **TINY_TRAINING,
    ),
    "tiny-rem": TrainConfig(
        model=REMConfig(
            tokenizer=TokenizerConfig(channels=16, code_size=128),
            retnet=RetNetConfig(width=128, layers=2, heads=2, ffn=256, dropout=0.0),
            head_width=128, tokenizer_frames=64,
        ),
        **{**TINY_TRAINING, "length": 12, "optimizer": "adamw", "weight_decay": 0.05,
           "grad_clip": 100.0, "context": 2},
    ),
    "tiny-dreamerv2": TrainConfig(
        model=RSSMConfig(
            deter=128, hidden=128, stoch=32, classes=32, depth=16, head_width=128, head_layers=1,
            motion_weight=TINY_LATENT["motion_weight"],
        ),
        **{**TINY_TRAINING, "eps": 1e-5, "grad_clip": 100.0},
    ),
}  # fmt: skip
"""Preset name -> its training config."""


def preset(name: str) -> TrainConfig:
    """The preset called ``name``.

    Raises:
        UserError: no such preset; the message lists them.
    """
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]
