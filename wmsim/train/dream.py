"""``wmsim dream``: the real game and the model's dream of it, side by side, as a GIF or MP4.

For a token model (REM) a middle panel shows the real frames through its
tokenizer: how much of the game its tokens can carry at all.

Both start from the same held-out real context; then the real game goes on
with the recorded actions, and the model dreams the same actions open-loop,
sampling its latents with a seeded generator, as a dream environment would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wmsim.configs import from_dict
from wmsim.devices import resolve_device
from wmsim.errors import UserError
from wmsim.replay import Replay
from wmsim.train.checkpoint import load_run
from wmsim.train.config import TrainConfig
from wmsim.train.evaluate import episode_windows, split_starts
from wmsim.video import side_by_side, write_video


@dataclass(frozen=True)
class DreamArgs:
    """Write the real game and a model's dream of it side by side.

    With --run, a trained run dreams from held-out data of its replay (torch).
    Without, a model bundle (--model, else the game's default) dreams beside the
    real game played live (onnxruntime).
    """

    out: Path
    """Video to write: .gif or .mp4."""
    run: Path | None = None
    """Run directory written by `wmsim train`."""
    model: str | None = None
    """Without --run: a bundle path or name, or a training run, exported once (default: the
    game's model, see `wmsim models list`)."""
    game: str = "Breakout"
    """Without --run: the game to play and dream."""
    steps: int = 64
    """Dreamed steps after the context."""
    context: int | None = None
    """With --run: real frames to start from (default: the run's evaluation context)."""
    data: Path | None = None
    """With --run: replay to take the context from (default: the one the run trained on)."""
    window: int = 0
    """With --run: which held-out window to start from (0, 1, ...)."""
    seed: int = 0
    """Seeds the dream's latent sampling (and without --run, the real game and its actions)."""
    device: str = "auto"
    """cpu, cuda, ..., or auto."""


def dream(args: DreamArgs) -> Path:
    """Dream from a held-out context of the run's replay and write the video; return its path."""
    if args.out.suffix.lower() not in (".gif", ".mp4"):
        raise UserError(f"--out must end in .gif or .mp4, got {args.out.name!r}")
    if args.steps < 1:
        raise UserError("--steps must be positive")
    if args.run is None:
        from wmsim.bundle_dream import dream_bundle

        device = "auto" if args.device == "auto" else args.device.split(":")[0]
        return dream_bundle(
            args.out, game=args.game, model=args.model, steps=args.steps, seed=args.seed,
            device=device,
        )  # fmt: skip
    device = resolve_device(args.device)
    model, saved = load_run(args.run, device)
    config: TrainConfig = from_dict(saved["config"]["train"])
    context = args.context or config.context
    replay = Replay(args.data or Path(saved["config"]["data"]))
    if replay.env["game"] != saved["config"]["game"]:
        raise UserError(
            f"{args.run} dreams {saved['config']['game']}, "
            f"but {replay.directory} holds {replay.env['game']}"
        )
    span = context + args.steps
    held_out = split_starts(replay, span, config.holdout)[1]
    starts = episode_windows(replay, held_out, span, args.window + 1)
    if len(starts) <= args.window:
        raise UserError(
            f"the held-out data has {len(starts)} windows of {span} steps within one episode; "
            "ask for fewer --steps or an earlier --window"
        )
    window = replay.gather(starts[args.window : args.window + 1], span)
    tensors = {k: torch.from_numpy(v).to(device) for k, v in window.items()}
    generator = torch.Generator(device).manual_seed(args.seed)
    with torch.no_grad():
        state = model.observe(
            tensors["obs"][:, :context],
            tensors["action"][:, : context - 1].long(),
            tensors["is_first"][:, :context],
        )
        dreamed = []
        for k in range(args.steps):
            noise = torch.rand((1, *model.noise_shape), generator=generator, device=device)
            state, _, _, latent = model.step(
                state, tensors["action"][:, context - 1 + k].long(), noise
            )
            dreamed.append(model.decode(latent)[0])
        # a token model's best possible dream: the real frames through its tokenizer
        tokens = model.reconstruct(tensors["obs"][0]) if hasattr(model, "reconstruct") else None
    real = window["obs"][0]
    dream_frames = np.concatenate([real[:context], _to_uint8(torch.stack(dreamed))])
    tokenized = None if tokens is None else _to_uint8(tokens)
    write_video(args.out, side_by_side(real, dream_frames, context, tokenized))
    return args.out


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    """Frames in [0, 1] -> uint8 on the host."""
    return (frames.cpu().numpy() * 255).round().astype(np.uint8)
