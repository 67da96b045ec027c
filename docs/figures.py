"""Draw the README's pictures from the real emulator: ``python docs/figures.py``."""

from pathlib import Path

import cv2
import numpy as np

from wmsim.collect.atari import AtariEnv


def preprocessing(path: Path, steps: int = 6, seed: int = 4) -> None:
    """Top: full 210x160 frames; bottom: the 64x64 frames wmsim stores, scaled up."""
    env = AtariEnv(render_mode="rgb_array")
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    env.step(1)  # FIRE launches the ball
    while not env.render()[100:185, 8:152].any():  # until the ball is in the open field
        env.step(int(rng.integers(4)))
    full, small = [], []
    for _ in range(steps):
        obs, *_ = env.step(int(rng.integers(4)))
        full.append(env.render())
        small.append(cv2.resize(obs, (160, 160), interpolation=cv2.INTER_NEAREST))
    gap = np.full((210, 4, 3), 255, np.uint8)
    top = np.concatenate(sum(([f, gap] for f in full), [])[:-1], axis=1)
    pad = np.full((160, 4, 3), 255, np.uint8)
    bottom = np.concatenate(sum(([s, pad] for s in small), [])[:-1], axis=1)
    picture = np.concatenate([top, np.full((4, top.shape[1], 3), 255, np.uint8), bottom])
    cv2.imwrite(str(path), picture[..., ::-1])


if __name__ == "__main__":
    preprocessing(Path(__file__).parent / "breakout-preprocessing.png")
