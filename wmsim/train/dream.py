"""``wmsim dream --run``: a training run's dream beside the real frames it starts from.

For a token model (REM) a middle panel shows the real frames through its
tokenizer: how much of the game its tokens can carry at all.

Both start from the same held-out real context; then the real game goes on
with the recorded actions, and the model dreams the same actions open-loop,
sampling its latents with a seeded generator, as a dream environment would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from wmsim.configs import from_dict
from wmsim.devices import resolve_device
from wmsim.dream import DreamArgs
from wmsim.errors import UserError
from wmsim.replay import Replay
from wmsim.train.checkpoint import load_run
from wmsim.train.config import TrainConfig
from wmsim.train.evaluate import episode_windows, split_starts
from wmsim.video import side_by_side, write_video


def dream_run(args: DreamArgs) -> Path:
    """Dream from a held-out context of the run's replay; write the video, return its path."""
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
        tokens = model.reconstruct(tensors["obs"][0])
    real = window["obs"][0]
    dream_frames = np.concatenate([real[:context], _to_uint8(torch.stack(dreamed))])
    tokenized = None if tokens is None else _to_uint8(tokens)
    write_video(args.out, side_by_side(real, dream_frames, context, tokenized))
    return args.out


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    """Frames in [0, 1] -> uint8 on the host."""
    return (frames.cpu().numpy() * 255).round().astype(np.uint8)
