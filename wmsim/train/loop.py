"""Training a world model on a replay: ``wmsim train``.

A run directory holds ``config.json`` (the resolved config), ``checkpoint.pt``
(written atomically every ``checkpoint_every`` steps, at the end and on
Ctrl-C), ``metrics.jsonl`` and ``tb/`` (TensorBoard). ``--resume`` restores
the model, optimizer, every random generator and the sampler's counts, so on
CPU with a fixed seed a resumed run ends exactly where an uninterrupted one
would (``tests/train/test_loop.py``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from wmsim.configs import from_dict, to_dict
from wmsim.errors import UserError
from wmsim.model import make_world_model
from wmsim.replay import SAMPLERS, Replay
from wmsim.replay.samplers import balanced_starts, event_rows, windows_with_events
from wmsim.run_dir import RunDirectory
from wmsim.train.checkpoint import load_checkpoint
from wmsim.train.config import TrainConfig, preset
from wmsim.train.evaluate import episode_windows, evaluate, split_starts
from wmsim.train.optim import OPTIMIZERS


@dataclass(frozen=True)
class TrainArgs:
    """Train a world model on a replay directory."""

    data: Path
    """Replay directory written by `wmsim collect`."""
    out: Path
    """Run directory: config, checkpoint, metrics, TensorBoard logs."""
    steps: int
    """Gradient steps the run should reach; with --resume, more than were done."""
    preset: str = "storm"
    """storm, dreamerv2, drama, s5, rem, or a tiny one: tiny, tiny-gru, tiny-dreamerv2,
    tiny-drama, tiny-s5, tiny-rem."""
    resume: bool = False
    """Continue the run in --out from its checkpoint."""
    seed: int = 0
    """Seeds the model, the window sampling and the latent noise."""
    device: str = "auto"
    """cpu, cuda, ..., or auto: the accelerator if there is one."""
    batch: int | None = None
    """Windows per batch (default: the preset's)."""
    length: int | None = None
    """Steps per window (default: the preset's)."""
    eval_every: int | None = None
    """Steps between evaluations (default: the preset's)."""
    checkpoint_every: int | None = None
    """Steps between checkpoints (default: the preset's)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Arithmetic of the training step: bf16 autocast (about 1.9x faster on CPUs with AVX512-BF16
    and on GPUs), fp32, or auto: bf16 where the hardware has it natively."""


def resolve_device(name: str) -> torch.device:
    """``auto`` is the current accelerator (CUDA, MPS, ...) if torch sees one, else the CPU."""
    if name == "auto":
        accelerator = (
            torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
        )
        return accelerator or torch.device("cpu")
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise UserError(f"unknown device {name!r}: {error}") from None


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``, or None for plain fp32.

    CPUs without native bf16 (no AVX512-BF16 or AMX) run autocast slower than
    fp32, so ``auto`` takes it only where the hardware has it.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
    return None


def resolve(args: TrainArgs, replay: Replay) -> dict[str, Any]:
    """The run's full config: the preset with the command's overrides, as saved JSON."""
    overrides = {
        name: getattr(args, name)
        for name in ("batch", "length", "eval_every", "checkpoint_every")
        if getattr(args, name) is not None
    }
    train = dataclasses.replace(preset(args.preset), **overrides)
    if min(train.batch, train.length, args.steps) < 1 or train.length < 2:
        raise UserError("--steps and --batch must be positive and --length at least 2")
    return {
        "preset": args.preset,
        "game": replay.env["game"],
        "data": str(args.data),
        "seed": args.seed,
        "train": to_dict(train),
    }


def to_torch(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """Replay windows as tensors on ``device``, actions as int64."""
    out = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
    if "action" in out:
        out["action"] = out["action"].long()
    return out


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``config`` names, over ``model``'s parameters."""
    # a model may ask for parameter groups (REM: decay on some, a slower tokenizer)
    groups = getattr(model, "parameter_groups", None)
    params = groups(config.weight_decay) if groups else model.parameters()
    return OPTIMIZERS[config.optimizer](
        params, lr=config.lr, eps=config.eps, weight_decay=config.weight_decay
    )


def world_model_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    config: TrainConfig,
    step: int,
    generator: torch.Generator,
    autocast: torch.dtype | None = None,
) -> dict[str, float]:
    """One gradient step of ``model`` on ``batch``, the ``step``-th (for the warm-up).

    ``autocast`` runs the forward pass in that dtype (see :func:`autocast_dtype`).
    """
    c = config
    lr = c.lr * min(1.0, (step + 1) / c.warmup) if c.warmup else c.lr
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
        loss, metrics = model.loss(batch, generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
    optimizer.step()
    return {**{k: float(v) for k, v in metrics.items()}, "grad_norm": float(norm), "lr": lr}


class Trainer:
    """Everything a run keeps between steps: model, optimizer, randomness, data split."""

    def __init__(self, args: TrainArgs, device: torch.device):
        self.replay = Replay(args.data)
        self.resolved = resolve(args, self.replay)
        self.config: TrainConfig = from_dict(self.resolved["train"])
        c, seed = self.config, args.seed
        self.train_starts, _ = split_starts(self.replay, c.length, c.holdout)
        if len(self.train_starts) < c.batch:
            raise UserError(
                f"{args.data} holds {self.replay.num_steps} steps: too few for batches of "
                f"{c.batch} windows of {c.length} steps with {c.holdout:.0%} held out; "
                "collect more data or use a shorter --length"
            )
        span = c.context + c.horizon
        held_out = split_starts(self.replay, span, c.holdout)[1]
        eval_starts = episode_windows(self.replay, held_out, span, c.eval_windows)
        self.eval_windows = to_torch(self.replay.gather(eval_starts, span), device)
        torch.manual_seed(seed)
        self.model = make_world_model(c.model, len(self.replay.action_meanings)).to(device)
        self.optimizer = make_optimizer(self.model, c)
        self.rng = np.random.default_rng(seed)
        self.noise = torch.Generator(device).manual_seed(seed)
        self.sampler = SAMPLERS[c.sampler]()
        events = event_rows(self.replay, life_loss=c.model.life_loss_ends)
        self.event_starts = windows_with_events(self.train_starts, events, c.length)
        self.autocast = autocast_dtype(args.precision, device)
        self.device, self.step = device, 0

    def train_step(self) -> dict[str, float]:
        """One gradient step on a sampled batch; returns its metrics."""
        c = self.config
        starts = balanced_starts(
            self.sampler, self.train_starts, self.event_starts, c.batch, c.event_share, self.rng
        )
        batch = to_torch(self.replay.gather(starts, c.length), self.device)
        metrics = world_model_step(
            self.model, self.optimizer, batch, c, self.step, self.noise, self.autocast
        )
        self.step += 1
        return metrics

    def evaluate(self) -> dict[str, float]:
        """Open-loop metrics on the held-out windows."""
        if len(self.eval_windows["obs"]) == 0:
            return {}
        life_loss_ends = getattr(self.config.model, "life_loss_ends", False)
        return evaluate(
            self.model, self.eval_windows, self.config.context, life_loss_ends=life_loss_ends
        )

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds."""
        return {
            "step": self.step,
            "config": self.resolved,
            "action_meanings": self.replay.action_meanings,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng_numpy": self.rng.bit_generator.state,
            "rng_noise": self.noise.get_state(),
            "rng_torch": torch.get_rng_state(),
            "sampler": {k: torch.from_numpy(v) for k, v in self.sampler.state_dict().items()},
        }

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue from a checkpoint's state."""
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.rng.bit_generator.state = saved["rng_numpy"]
        self.noise.set_state(saved["rng_noise"])
        torch.set_rng_state(saved["rng_torch"])
        self.sampler.load_state_dict({k: v.numpy() for k, v in saved["sampler"].items()})
        self.step = saved["step"]


def train(args: TrainArgs, *, progress: bool = True) -> dict[str, float]:
    """Train until the run in ``args.out`` reaches ``args.steps`` steps; return the last evaluation.

    Raises:
        UserError: bad data, preset or run directory (see the messages).
        KeyboardInterrupt: on Ctrl-C or SIGTERM (a scheduler's stop), after saving a
            checkpoint at the current step.
    """
    preset(args.preset)  # an unknown name is the first thing to report
    run_dir = RunDirectory(args.out, "train", resume=args.resume)
    trainer = Trainer(args, resolve_device(args.device))
    saved = run_dir.open(trainer.resolved, ("preset", "game", "seed", "train"), trainer.device)
    if saved is not None:
        trainer.restore(saved)
    c, last_eval = trainer.config, {}
    with run_dir.running(
        trainer.step, args.steps, lambda: run_dir.save(trainer.state()), progress=progress
    ) as (log, bar):
        while trainer.step < args.steps:
            metrics = trainer.train_step()
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.1f}", refresh=False)
            done = trainer.step == args.steps
            if trainer.step % c.log_every == 0 or done:
                log.log(trainer.step, "train", metrics)
            if trainer.step % c.eval_every == 0 or done:
                last_eval = trainer.evaluate()
                log.log(trainer.step, "eval", last_eval)
            if trainer.step % c.checkpoint_every == 0 or done:
                run_dir.save(trainer.state())
    return last_eval


def load_run(run: Path, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A trained model in eval mode and its checkpoint (config, action meanings, ...)."""
    saved = load_checkpoint(run, device)
    return world_model_of(saved, device), saved


def world_model_of(saved: dict[str, Any], device: torch.device) -> torch.nn.Module:
    """The world model in a checkpoint of ``wmsim train`` or ``wmsim agent train``, in eval mode."""
    config: TrainConfig = from_dict(saved["config"]["train"])
    model = make_world_model(config.model, len(saved["action_meanings"])).to(device)
    model.load_state_dict(saved["model"])
    return model.eval()
