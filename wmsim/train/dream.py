"""``wmsim dream``: the real game and the model's dream of it, side by side, as a GIF or MP4.

For a token model (REM) a middle panel shows the real frames through its
tokenizer: how much of the game its tokens can carry at all.

Both start from the same held-out real context; then the real game goes on
with the recorded actions, and the model dreams the same actions open-loop,
sampling its latents with a seeded generator, as a dream environment would.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from wmsim.configs import from_dict
from wmsim.errors import UserError
from wmsim.files import atomic_write_bytes
from wmsim.replay import Replay
from wmsim.train.config import TrainConfig
from wmsim.train.evaluate import episode_windows, split_starts
from wmsim.train.loop import load_run, resolve_device

SCALE, GAP, BAR = 4, 8, 24


@dataclass(frozen=True)
class DreamArgs:
    """Write the real continuation and the dreamed one side by side."""

    run: Path
    """Run directory written by `wmsim train`."""
    out: Path
    """Video to write: .gif or .mp4."""
    steps: int = 64
    """Dreamed steps after the context."""
    context: int | None = None
    """Real frames to start from (default: the run's evaluation context)."""
    data: Path | None = None
    """Replay to take the context from (default: the one the run trained on)."""
    window: int = 0
    """Which held-out window to start from (0, 1, ...)."""
    seed: int = 0
    """Seeds the dream's latent sampling."""
    device: str = "auto"
    """cpu, cuda, ..., or auto."""


def _panel(frame: np.ndarray, label: str) -> np.ndarray:
    """A labelled, enlarged frame: (64, 64, 3) uint8 -> (BAR + 256, 256, 3)."""
    big = cv2.resize(frame, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST)
    bar = np.full((BAR, big.shape[1], 3), 32, np.uint8)
    cv2.putText(bar, label, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (230, 230, 230), 1)
    return np.concatenate([bar, big])


def side_by_side(
    real: np.ndarray, dream: np.ndarray, context: int, tokens: np.ndarray | None = None
) -> np.ndarray:
    """Frames (N, 64, 64, 3) uint8 -> video frames (N, BAR + 256, P * 256 + (P - 1) * GAP, 3).

    P = 2 panels, real and dream; ``tokens``, the real frames through a token
    model's tokenizer, adds a middle one: what the dream could at best show.
    """
    frames = []
    for t in range(len(real)):
        when = f"context {t + 1}/{context}" if t < context else f"step {t - context + 1}"
        panels = [_panel(real[t], f"real  {when}")]
        if tokens is not None:
            panels.append(_panel(tokens[t], "real, tokenized"))
        panels.append(_panel(dream[t], f"dream  {when}" if t >= context else f"real  {when}"))
        gap = np.full((panels[0].shape[0], GAP, 3), 255, np.uint8)
        row = [part for panel in panels for part in (gap, panel)][1:]  # gaps between panels
        frames.append(np.concatenate(row, 1))
    return np.stack(frames)


def write_video(path: Path, frames: np.ndarray, fps: int = 15) -> None:
    """Write (N, H, W, 3) uint8 RGB frames as a looping GIF or an MP4, by the suffix, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        from PIL import Image

        images = [Image.fromarray(frame) for frame in frames]
        buffer = io.BytesIO()
        images[0].save(
            buffer,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=round(1000 / fps),
            loop=0,
        )
        atomic_write_bytes(path, buffer.getvalue())
        return
    # OpenCV picks the container by the suffix, so the temporary name keeps it
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        writer = cv2.VideoWriter(
            str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, frames.shape[2:0:-1]
        )
        if not writer.isOpened():
            raise UserError(
                f"this OpenCV build cannot write {path.suffix} video; write a .gif instead"
            )
        for frame in frames:
            writer.write(frame[..., ::-1])
        writer.release()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def dream(args: DreamArgs) -> Path:
    """Dream from a held-out context of the run's replay and write the video; return its path."""
    if args.out.suffix.lower() not in (".gif", ".mp4"):
        raise UserError(f"--out must end in .gif or .mp4, got {args.out.name!r}")
    if args.steps < 1:
        raise UserError("--steps must be positive")
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
