"""Draw docs/collect.md's and docs/agent.md's pictures from the real emulator.

    python docs/figures.py [RUN]

With RUN (a ``wmsim train`` or ``wmsim agent train`` directory of a Breakout
model) it also draws what that model's latents keep of real frames.
"""

import sys
from pathlib import Path

import cv2
import numpy as np

from wmsim.collect.atari import AtariConfig, AtariEnv, block_max


def ball_in_play(
    steps: int, seed: int, resize: str = "area"
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``steps`` full 210x160 frames with the ball in the open field, and their 64x64 forms."""
    env = AtariEnv(AtariConfig(resize=resize), render_mode="rgb_array")
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    env.step(1)  # FIRE launches the ball
    while not env.render()[100:185, 8:152].any():  # until the ball is in the open field
        env.step(int(rng.integers(4)))
    full, small = [], []
    for _ in range(steps):
        obs, *_ = env.step(int(rng.integers(4)))
        full.append(env.render())
        small.append(obs)
    return full, small


def row(frames: list[np.ndarray], size: int) -> np.ndarray:
    """Frames scaled to ``size`` pixels high, side by side with white gaps."""
    nearest = cv2.INTER_NEAREST
    scaled = [cv2.resize(f, (f.shape[1] * size // f.shape[0], size), interpolation=nearest)
              for f in frames]  # fmt: skip
    gap = np.full((size, 4, 3), 255, np.uint8)
    return np.concatenate(sum(([f, gap] for f in scaled), [])[:-1], axis=1)


def stack(rows: list[np.ndarray]) -> np.ndarray:
    """Rows one above the other with white gaps."""
    gap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    return np.concatenate(sum(([r, gap] for r in rows), [])[:-1])


def preprocessing(path: Path, steps: int = 6, seed: int = 4) -> None:
    """Top: full 210x160 frames; then the 64x64 frames by area average and by block max."""
    full, small = ball_in_play(steps, seed)
    maxed = [block_max(frame, 64) for frame in full]
    cv2.imwrite(str(path), stack([row(full, 210), row(small, 160), row(maxed, 160)])[..., ::-1])


def reconstruction(run: Path, path: Path, steps: int = 6, seed: int = 4) -> None:
    """Top: 64x64 frames with the ball in play; bottom: what ``run``'s model decodes.

    Each frame is decoded from its most likely latent; all are scaled up.
    """
    import torch

    from wmsim.replay import Replay
    from wmsim.train.checkpoint import load_checkpoint, world_model_of

    saved = load_checkpoint(run)
    model = world_model_of(saved, torch.device("cpu"))
    resize = Replay(Path(saved["config"]["data"])).env.get("resize", "area")
    _, small = ball_in_play(steps, seed, resize)
    with torch.no_grad():
        post = model.encode(torch.from_numpy(np.stack(small))[None])
        latent = torch.nn.functional.one_hot(post.argmax(-1), post.shape[-1]).flatten(-2)
        decoded = (model.decode(latent.float())[0].numpy() * 255).round().astype(np.uint8)
    cv2.imwrite(str(path), stack([row(small, 160), row(list(decoded), 160)])[..., ::-1])


if __name__ == "__main__":
    preprocessing(Path(__file__).parent / "breakout-preprocessing.png")
    if len(sys.argv) > 1:
        reconstruction(Path(sys.argv[1]), Path(__file__).parent / "breakout-reconstruction.png")
