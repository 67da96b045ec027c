"""One page's game: its dream env, the real game beside it, and what was played.

Every method here blocks (a model call, an emulator, a server round trip, GIF
encoding), so the web server calls them on a worker thread, one at a time per
session. A reset without a seed draws one and reports it, so every episode the
page shows can be played again. Beside the real game, both are reset with the
same seed and stepped with the same actions; they start from different states
all the same: a dream starts from one of its bundle's start contexts (recorded
real play), the real game from its own reset.
"""

from __future__ import annotations

import base64
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np

SEEDS = 2**31
"""Seeds are ints in [0, SEEDS): exact in JavaScript and in every env's seeding."""

MAX_RECORDED = 1800
"""Steps kept for the GIF: the last two minutes at 15 steps per second."""

GIF_SCALE = 4
"""Each frame pixel becomes GIF_SCALE x GIF_SCALE pixels in the GIF (nearest neighbour)."""


def encode_frame(frame: np.ndarray) -> str:
    """(H, W, 3) uint8 -> base64 of its raw RGB bytes, row by row, as the page decodes them."""
    return base64.b64encode(np.ascontiguousarray(frame, np.uint8).tobytes()).decode("ascii")


class PlaySession:
    """A dream env played step by step, optionally beside the real game.

    Args:
        dream: a pixel dream env, as ``gymnasium.make("wmsim/<Game>-dream-v0", ...)`` makes it;
            the session owns it and closes it.
        rng: draws the seeds of resets given none.
    """

    def __init__(self, dream: gymnasium.Env, rng: np.random.Generator):
        self.dream = dream
        self.rng = rng
        self.game: str = dream.unwrapped.game
        self.meanings: list[str] = dream.unwrapped.get_action_meanings()
        self.real: gymnasium.Env | None = None  # the real game, while shown beside
        self.seed: int | None = None  # the episode's seed; None before the first reset
        self.ended = False
        self.steps = 0
        self.score = 0.0
        self.real_score = 0.0
        self.real_over = False
        self.frames: deque[np.ndarray] = deque(maxlen=MAX_RECORDED)
        self.real_frames: deque[np.ndarray] = deque(maxlen=MAX_RECORDED)

    @property
    def running(self) -> bool:
        """Whether a step may be taken: reset once, and the episode not ended."""
        return self.seed is not None and not self.ended

    def reset(self, seed: int | None) -> dict[str, Any]:
        """Start an episode (of both games, beside the real one) -> the page's frame message."""
        self.seed = int(self.rng.integers(SEEDS)) if seed is None else seed
        obs, _ = self.dream.reset(seed=self.seed)
        self.ended, self.steps, self.score = False, 0, 0.0
        self.frames.clear()
        self.frames.append(obs)
        real = None
        if self.real is not None:
            real_obs, _ = self.real.reset(seed=self.seed)
            real = self._real_part(real_obs, 0.0, over=False, reset=True)
        return self._message(obs, action=None, reward=0.0, end=None, why=None, real=real)

    def step(self, action: int, input_id: int | None = None) -> dict[str, Any]:
        """Step the dream (and the real game beside it) -> the page's frame message.

        Raises:
            RuntimeError: before the first reset, or after the episode ended.
        """
        if not self.running:
            raise RuntimeError("the episode ended: reset to play again" if self.ended else
                               "reset before stepping")  # fmt: skip
        obs, reward, terminated, truncated, info = self.dream.step(action)
        self.steps += 1
        self.score += reward
        self.ended = terminated or truncated
        self.frames.append(obs)
        real = None
        if self.real is not None:
            if self.real_over:  # the real game is over: it holds its last frame
                real_obs, real_reward, over = self.real_frames[-1], 0.0, True
            else:
                real_obs, real_reward, real_end, real_cut, _ = self.real.step(action)
                over = real_end or real_cut
            real = self._real_part(real_obs, real_reward, over=over)
        why = "terminated" if terminated else "truncated" if truncated else None
        end = 1.0 - info["continue"]  # the model's probability that the episode ends here
        return self._message(obs, action, reward, end, why, real, input_id)

    def set_beside(self, on: bool) -> dict[str, Any] | None:
        """Show the real game beside the dream (a new episode of both, same seed) or stop.

        Returns the new episode's first frame message when turned on, else None.

        Raises:
            ValueError: the real game's actions differ from the dream's.
        """
        if not on:
            if self.real is not None:
                self.real.close()
            self.real = None
            self.real_frames.clear()
            return None
        if self.real is None:
            from wmsim.bundle_dream import real_env

            real = real_env({"game": self.game, "env": self.dream.metadata["real_game"]})
            if real.action_meanings != self.meanings:
                real.close()
                raise ValueError(
                    f"the real game's actions {real.action_meanings} are not the dream's "
                    f"{self.meanings}: the model was trained on another action set"
                )
            self.real = real
        return self.reset(self.seed)

    def gif(self, fps: float) -> bytes:
        """What was played since the last reset (up to MAX_RECORDED steps) as a looping GIF.

        Beside the real game, the two side by side and labelled; else the dream alone.

        Raises:
            RuntimeError: nothing was played yet.
        """
        from wmsim.video import side_by_side, write_video

        if not self.frames:
            raise RuntimeError("nothing to write yet: reset and play first")
        dream = np.stack(self.frames)
        if len(self.real_frames) == len(dream):
            frames = side_by_side(np.stack(self.real_frames), dream, context=0)
        else:
            frames = dream.repeat(GIF_SCALE, axis=1).repeat(GIF_SCALE, axis=2)
        with tempfile.TemporaryDirectory(prefix="wmsim-play-") as folder:
            path = Path(folder) / "play.gif"
            write_video(path, frames, fps=max(1, round(fps)))
            return path.read_bytes()

    def close(self) -> None:
        """Close both games; closing again does nothing."""
        self.set_beside(False)
        self.dream.close()

    def _real_part(
        self, obs: np.ndarray, reward: float, *, over: bool, reset: bool = False
    ) -> dict[str, Any]:
        if reset:
            self.real_frames.clear()
            self.real_score = 0.0
        self.real_score += reward
        self.real_over = over
        self.real_frames.append(obs)
        return {"frame": encode_frame(obs), "reward": reward, "score": self.real_score,
                "over": over}  # fmt: skip

    def _message(self, obs, action, reward, end, why, real, input_id=None) -> dict[str, Any]:
        height, width = obs.shape[:2]
        return {
            "type": "frame",
            "seed": self.seed,
            "step": self.steps,
            "action": action,
            "input": input_id,  # the id of the page's message that chose the action
            "reward": float(reward),
            "score": self.score,
            "end": end,
            "ended": why,
            "width": width,
            "height": height,
            "frame": encode_frame(obs),
            "real": real,
        }
