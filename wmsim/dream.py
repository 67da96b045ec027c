"""``wmsim dream``: the real game and a model's dream of it, side by side, as a GIF or MP4.

A model bundle dreams beside the real game played live, in onnxruntime
(:mod:`wmsim.bundle_dream`, no torch: it runs on the base install with the
``atari`` extra); a training run dreams from held-out data of its replay, in
torch (:mod:`wmsim.train.dream`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wmsim.errors import UserError


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
    """Write the video ``args`` asks for; return its path."""
    if args.out.suffix.lower() not in (".gif", ".mp4"):
        raise UserError(f"--out must end in .gif or .mp4, got {args.out.name!r}")
    if args.steps < 1:
        raise UserError("--steps must be positive")
    if args.run is not None:
        from wmsim.train.dream import dream_run

        return dream_run(args)
    from wmsim.bundle_dream import dream_bundle

    device = "auto" if args.device == "auto" else args.device.split(":")[0]
    return dream_bundle(
        args.out, game=args.game, model=args.model, steps=args.steps, seed=args.seed,
        device=device,
    )  # fmt: skip
