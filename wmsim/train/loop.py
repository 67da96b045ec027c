"""Training a world model on a replay: ``wmsim train``.

A run directory holds ``config.json`` (the resolved config), ``checkpoint.pt``
(written atomically every ``checkpoint_every`` steps, at the end and on
Ctrl-C), ``metrics.jsonl`` and ``tb/`` (TensorBoard). ``--resume`` restores
the model, optimizer, every random generator and the sampler's counts, so on
CPU with a fixed seed a resumed run ends exactly where an uninterrupted one
would (``tests/train/test_loop.py``).

Under ``torchrun`` (or with ``--nproc``) the run trains data-parallel: each
process draws ``batch / world`` windows per step, the gradients are averaged,
and rank 0 alone writes the directory and evaluates (:mod:`wmsim.train.distributed`,
``docs/world-models.md``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from wmsim.configs import from_dict, to_dict
from wmsim.devices import autocast_dtype, resolve_device
from wmsim.errors import UserError
from wmsim.model import REMConfig, make_world_model
from wmsim.replay import Replay
from wmsim.run_dir import RunDirectory, deferred_interrupts
from wmsim.train.config import TrainConfig, preset
from wmsim.train.distributed import (
    ParallelLoss,
    Ranks,
    agree,
    broadcast_parameters,
    gather,
    join,
    leave,
    rank_seed,
    rank_share,
    ranks_from_env,
    split_batch,
)
from wmsim.train.evaluate import evaluate
from wmsim.train.step import make_optimizer, world_model_step
from wmsim.train.windows import Windows


@dataclass(frozen=True)
class TrainArgs:
    """Train a world model on a replay directory."""

    data: Path
    """Replay directory written by `wmsim collect`."""
    out: Path
    """Run directory: config, checkpoint, metrics, TensorBoard logs."""
    steps: int | None = None
    """Gradient steps the run should reach; with --resume, more than were done (default:
    30,000 for a tiny preset, the shipped model's recipe; 100,000 for the papers' presets)."""
    preset: str | None = None
    """storm, dreamerv2, drama, s5, rem, or a tiny one: tiny, tiny-gru, tiny-dreamerv2,
    tiny-drama, tiny-s5, tiny-rem (default: storm with a GPU, tiny-s5 without; on --resume,
    the run's)."""
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
    log_every: int | None = None
    """Steps between logged training metrics (default: the preset's)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Arithmetic of the training step: bf16 autocast (about 1.9x faster on CPUs with AVX512-BF16
    and on GPUs), fp32, or auto: bf16 where the hardware has it natively."""
    nproc: int = 1
    """Processes on this machine, one GPU each (or CPU processes), training data-parallel: the
    command starts torchrun with them. --batch is the global batch, split over them."""


def with_defaults(args: TrainArgs) -> tuple[TrainArgs, str | None]:
    """``args`` with the preset and steps filled in, and a line saying what was chosen, if any.

    Without --preset a resumed run keeps its own; a new one takes ``storm`` where torch
    sees an accelerator and ``tiny-s5`` (sized for a CPU) where it does not.
    """
    name, said = args.preset, []
    if name is None:
        saved = args.out / "config.json"
        if args.resume and saved.is_file():
            name = json.loads(saved.read_text()).get("preset")
        if name is None:
            name = "tiny-s5" if resolve_device(args.device).type == "cpu" else "storm"
            said.append(f"--preset {name} (no accelerator: a preset sized for a CPU)"
                        if name == "tiny-s5" else f"--preset {name}")  # fmt: skip
    steps = args.steps
    if steps is None:
        steps = DEFAULT_STEPS["tiny" if name.startswith("tiny") else "paper"]
        said.append(f"--steps {steps}")
    note = f"training with {' and '.join(said)}; pass them to choose" if said else None
    return dataclasses.replace(args, preset=name, steps=steps), note


DEFAULT_STEPS = {"tiny": 30_000, "paper": 100_000}
"""Steps without --steps: the shipped default model's 30,000 for a tiny preset (about 70 min on
a 2-core CPU); for the papers' presets about the world-model updates of STORM's Atari 100k run
(one per env step)."""


def resolve(args: TrainArgs, replay: Replay) -> dict[str, Any]:
    """The run's full config: the preset with the command's overrides, as saved JSON."""
    overrides = {
        name: getattr(args, name)
        for name in ("batch", "length", "eval_every", "checkpoint_every", "log_every")
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


class Trainer:
    """Everything a run keeps between steps: model, optimizer, randomness, data split.

    Each of ``ranks`` draws its own share of the batch with its own random
    streams; with more than one, the gradients are averaged over them.
    """

    def __init__(self, args: TrainArgs, device: torch.device, ranks: Ranks | None = None):
        self.replay = Replay(args.data)
        self.resolved = resolve(args, self.replay)
        self.config: TrainConfig = from_dict(self.resolved["train"])
        c, seed, ranks = self.config, args.seed, ranks or Ranks()
        self.ranks, self.seed, self.rank_batch = ranks, seed, split_batch(c.batch, ranks)
        self.device = device
        self.event_share = rank_share(c.event_share, c.batch, ranks)
        self.windows = Windows(self.replay, c, device, rank_seed(seed, ranks.rank), args.data)
        torch.manual_seed(seed)
        self.model = make_world_model(c.model, len(self.replay.action_meanings)).to(device)
        self.optimizer = make_optimizer(self.model, c)
        self.learner = self.model if ranks.world == 1 else ParallelLoss(self.model, device)
        # REM's dead-code restarts move codebook entries onto each rank's own batch
        self.edits_parameters = (
            isinstance(c.model, REMConfig) and c.model.tokenizer.restart_dead_codes
        )
        if not ranks.main:  # rank 0's stream seeded the model, the same on every rank
            torch.manual_seed(rank_seed(seed, ranks.rank))
        self.autocast = autocast_dtype(args.precision, device)
        self.step = 0

    def train_step(self) -> dict[str, float]:
        """One gradient step on a sampled batch; returns this rank's metrics."""
        batch = self.windows.batch(self.rank_batch, self.event_share)
        metrics = world_model_step(
            self.learner, self.optimizer, batch, self.config, self.step, self.windows.noise,
            self.autocast,
        )  # fmt: skip
        if self.edits_parameters:
            broadcast_parameters(self.model, self.ranks)
        self.step += 1
        return metrics

    def evaluate(self) -> dict[str, float]:
        """Open-loop metrics on the held-out windows."""
        if len(self.windows.held_out["obs"]) == 0:
            return {}
        life_loss_ends = self.config.model.life_loss_ends
        return evaluate(
            self.model, self.windows.held_out, self.config.context, life_loss_ends=life_loss_ends
        )

    def streams(self) -> dict[str, Any]:
        """This rank's randomness and sampler counts: what resuming it exactly needs."""
        return {**self.windows.streams(), "rng_torch": torch.get_rng_state()}

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds: rank 0's streams as a one-process run's, the others' apart.

        Every rank must call it (it gathers the streams on rank 0); only rank 0's is complete.
        """
        streams = gather(self.streams(), self.ranks)
        return {
            "step": self.step,
            "config": self.resolved,
            "action_meanings": self.replay.action_meanings,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **(streams[0] if streams else {}),
            "world": self.ranks.world,
            "other_ranks": streams[1:],
        }

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue from a checkpoint's state, possibly saved by another number of ranks.

        A rank the saved run had takes its streams back; a rank it lacked starts
        streams of its own, seeded by the run's seed, its rank and the step.
        """
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.step = saved["step"]
        saved_ranks = [saved, *saved.get("other_ranks", [])]
        if self.ranks.rank >= len(saved_ranks):  # its streams start afresh, and torch's
            fresh = rank_seed(self.seed, self.ranks.rank, self.step)
            self.windows.seed(fresh)
            torch.manual_seed(fresh)
            return
        streams = saved_ranks[self.ranks.rank]
        self.windows.restore(streams)
        torch.set_rng_state(streams["rng_torch"])


def train(args: TrainArgs, *, progress: bool = True) -> dict[str, float]:
    """Train until the run in ``args.out`` reaches ``args.steps`` steps; return the last evaluation.

    Under torchrun every process calls it; rank 0 returns the evaluation, the others ``{}``.

    Raises:
        UserError: bad data, preset or run directory (see the messages).
        KeyboardInterrupt: on Ctrl-C or SIGTERM (a scheduler's stop), after the step under
            way and a checkpoint at it.
    """
    args, note = with_defaults(args)
    preset(args.preset)  # an unknown name is the first thing to report
    ranks = ranks_from_env()
    if args.nproc != 1:
        raise UserError("--nproc starts torchrun on the command line; under torchrun leave it out")
    run_dir = RunDirectory(args.out, "train", resume=args.resume, writer=ranks.main)
    device = join(ranks, resolve_device(args.device))
    try:
        last_eval = _train(args, run_dir, Trainer(args, device, ranks), progress, note)
    except KeyboardInterrupt:
        leave(ranks)  # all ranks stopped at one step; torchrun ends rank 0 if the others exit
        raise
    leave(ranks)
    return last_eval


def _train(
    args: TrainArgs, run_dir: RunDirectory, trainer: Trainer, progress: bool, note: str | None
) -> dict[str, float]:
    saved = run_dir.open(trainer.resolved, ("preset", "game", "seed", "train"), trainer.device)
    if saved is not None:
        trainer.restore(saved)
    ranks = trainer.ranks
    if note and progress and ranks.main:  # said once the input is known good: errors stay one line
        print(f"wmsim train: {note}", file=sys.stderr)

    def take_step(interrupted: Callable[[], bool]) -> tuple[dict[str, float], bool]:
        return agree(trainer.train_step(), interrupted(), ranks, trainer.device)

    return run_steps(run_dir, trainer, args.steps, take_step, "loss", progress=progress)


def run_steps(
    run_dir: RunDirectory,
    trainer: Any,
    steps: int,
    take_step: Callable[[Callable[[], bool]], tuple[dict[str, float], bool]],
    shown: str,
    *,
    progress: bool = True,
) -> dict[str, float]:
    """A run's loop to ``steps``: log, evaluate and checkpoint on ``trainer.config``'s schedule.

    ``take_step(interrupted)`` takes one step and returns its metrics and whether to stop
    (every rank of a run learns of a stop at the same step); ``shown`` names the metric the
    progress bar shows. ``trainer`` has ``step``, ``config``, ``evaluate()`` and ``state()``
    (and ``ranks``: only the main one evaluates). Returns the last evaluation.
    """
    c, last_eval = trainer.config, {}
    main = getattr(trainer, "ranks", Ranks()).main
    with (
        run_dir.running(
            trainer.step, steps, lambda: run_dir.save(trainer.state()), progress=progress
        ) as (log, bar),
        deferred_interrupts() as interrupted,
    ):
        while trainer.step < steps:
            metrics, stop = take_step(interrupted)
            bar.update(1)
            bar.set_postfix({shown: f"{metrics[shown]:.1f}"}, refresh=False)
            done = trainer.step == steps
            if trainer.step % c.log_every == 0 or done:
                log.log(trainer.step, "train", metrics)
            if main and (trainer.step % c.eval_every == 0 or done):
                last_eval = trainer.evaluate()
                log.log(trainer.step, "eval", last_eval)
            if trainer.step % c.checkpoint_every == 0 or done:
                run_dir.save(trainer.state())
            if stop:
                raise KeyboardInterrupt
    return last_eval
