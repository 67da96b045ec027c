"""Atari under the Atari 100k protocol (Kaiser et al., ICLR 2020), as a gymnasium env.

One step is ``frame_skip`` emulator frames with the same action; the
observation is the pixel-wise max of the last two frames (Atari sprites
flicker), resized to ``size`` x ``size`` RGB by area averaging (the papers'
choice) or by block max (:func:`block_max`, which keeps one-pixel objects such
as Breakout's ball at full brightness). The action set is the game's
minimal one. Rewards are raw (unclipped). An episode starts with 1 to
``noop_max`` no-op frames, ends (``terminated``) at game over, and is cut
(``truncated``) at ``max_frames`` emulator frames, no-ops included. A lost life
is reported in ``info["life_loss"]`` and does not end the episode.

The emulator is driven directly through ``ale_py.ALEInterface`` so the whole
pipeline stays close to the cost of emulation (``benchmarks/collect.py``).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Literal

import ale_py
import cv2
import gymnasium
import numpy as np
from ale_py import roms
from gymnasium import spaces

from wmsim.errors import UserError
from wmsim.games import resolve_game, rom_id


@dataclass(frozen=True)
class AtariConfig:
    """How the real game is played and preprocessed; defaults follow the Atari 100k protocol."""

    game: str = "Breakout"
    """Atari game in CamelCase, as in the Atari 100k tables (Breakout, MsPacman, UpNDown)."""
    size: int = 64
    """Observations are size x size RGB frames."""
    frame_skip: int = 4
    """Emulator frames per step, all with the same action."""
    sticky_action_prob: float = 0.0
    """Chance that the emulator repeats the previous action on a frame (STORM's code: 0.25)."""
    noop_max: int = 30
    """Episodes start with a uniform 1..noop_max no-op frames (0: none)."""
    max_frames: int = 108_000
    """Episodes are truncated after this many emulator frames (30 minutes of play)."""
    resize: Literal["area", "max"] = "area"
    """How frames shrink to size x size: area (average, as STORM and DIAMOND) or max (each pixel
    the brightest of its block: a small ball stays a bright spot a model is rewarded to draw)."""


def checked(config: AtariConfig) -> AtariConfig:
    """Validate ``config`` and return it with the game name made canonical.

    Raises:
        UserError: an unknown game or an out-of-range setting.
    """
    if config.size < 8:
        raise UserError(f"size must be at least 8 pixels, got {config.size}")
    if config.frame_skip < 1:
        raise UserError(f"frame_skip must be at least 1, got {config.frame_skip}")
    if not 0.0 <= config.sticky_action_prob <= 1.0:
        raise UserError(f"sticky_action_prob must be in [0, 1], got {config.sticky_action_prob}")
    if config.noop_max < 0:
        raise UserError(f"noop_max must be 0 or more, got {config.noop_max}")
    if config.max_frames <= config.noop_max + config.frame_skip:
        raise UserError(
            f"max_frames ({config.max_frames}) must exceed noop_max + frame_skip "
            f"({config.noop_max + config.frame_skip}), or episodes end before they start"
        )
    if config.resize not in RESIZERS:
        raise UserError(f"resize must be one of {', '.join(RESIZERS)}, got {config.resize!r}")
    if config.size > 210:
        raise UserError(f"size must be at most 210 (the screen's height), got {config.size}")
    if config.resize == "max" and config.size > 160:
        raise UserError(f"resize max cannot enlarge the 160-pixel width to {config.size}")
    return dataclasses.replace(config, game=resolve_game(config.game))


def downsample(frame: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB frame (H, W, 3) to (size, size, 3) so that every pixel counts.

    Thin sprites such as Breakout's two-pixel ball must survive a 3x
    reduction, which plain bilinear sampling does not guarantee. When the frame
    is at least twice the target, it is first averaged over 2x2 blocks (an
    exact area reduction), then bilinearly resized: within one grey level of
    OpenCV's INTER_AREA on average at a fifth of its cost.
    """
    height, width = frame.shape[:2]
    if 2 * size <= min(height, width):
        frame = cv2.resize(frame, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
        return cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)


def block_rows(length: int, size: int) -> np.ndarray:
    """(k, size) source indices: column i lists the pixels of block i, the last one repeated.

    The ``size`` blocks partition ``length`` pixels into runs of k - 1 or k.
    """
    starts = (np.arange(size + 1) * length) // size
    k = int(np.diff(starts).max())
    return np.minimum(starts[:-1] + np.arange(k)[:, None], starts[1:] - 1)


def block_max(frame: np.ndarray, size: int) -> np.ndarray:
    """Shrink an RGB frame (H, W, 3) to (size, size, 3), each pixel the max over its block.

    The blocks partition the frame (210 rows into blocks of 3 or 4, 160 columns
    into 2 or 3 at size 64), so every source pixel is seen exactly once: a
    2 x 4 pixel ball becomes a spot of 2 to 6 pixels at its full colour, where
    an area average leaves about half its brightness on one pixel (docs/collect.md).
    """
    height, width = frame.shape[:2]
    if size > min(height, width):
        raise ValueError(f"block max cannot enlarge a {height}x{width} frame to {size}x{size}")
    rows = _block_indices(height, size)
    shrunk = frame[rows[0]]
    for index in rows[1:]:  # a max over k gathered copies: ~20x faster than reduceat
        np.maximum(shrunk, frame[index], out=shrunk)
    columns = _block_indices(width, size)
    out = shrunk[:, columns[0]]
    for index in columns[1:]:
        np.maximum(out, shrunk[:, index], out=out)
    return out


_block_indices = functools.lru_cache(maxsize=16)(block_rows)


RESIZERS = {"area": downsample, "max": block_max}
"""Resize method name -> function (frame (H, W, 3), size) -> (size, size, 3)."""


class AtariEnv(gymnasium.Env[np.ndarray, np.int64]):
    """One Atari emulator with Atari 100k preprocessing.

    Observations are ``Box(0, 255, (size, size, 3), uint8)``; actions are
    ``Discrete(n)`` over the game's minimal action set; rewards are Python
    floats. ``info`` holds ``lives``, ``life_loss`` and ``episode_frame_number``.

    Args:
        config: game and preprocessing settings.
        render_mode: ``"rgb_array"`` renders the full-resolution (210, 160, 3)
            max-pooled frame behind the last observation.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, config: AtariConfig | None = None, *, render_mode: str | None = None):
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise UserError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.config = checked(config or AtariConfig())
        self.render_mode = render_mode
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner on stderr
        self.ale = ale_py.ALEInterface()
        self.ale.setFloat("repeat_action_probability", self.config.sticky_action_prob)
        self.ale.setInt("max_num_frames_per_episode", self.config.max_frames)
        self._load_rom(int(np.random.SeedSequence().generate_state(1)[0] >> 1))
        self._actions = self.ale.getMinimalActionSet()
        self.action_meanings = [action.name for action in self._actions]
        self.action_space = spaces.Discrete(len(self._actions))
        size = self.config.size
        self.observation_space = spaces.Box(0, 255, (size, size, 3), np.uint8)
        height, width = self.ale.getScreenDims()
        self._screens = np.zeros((2, height, width, 3), np.uint8)  # the last two frames
        self._newest = 0  # which of the two holds the last frame
        self._frame = np.zeros((height, width, 3), np.uint8)  # their pixel-wise max
        self._lives = self.ale.lives()
        self._resize = RESIZERS[self.config.resize]

    def _load_rom(self, ale_seed: int) -> None:
        # ALE takes its seed (no-op-free randomness, sticky actions) when a ROM is loaded.
        self.ale.setInt("random_seed", ale_seed)
        self.ale.loadROM(roms.get_rom_path(rom_id(self.config.game)))

    def _advance(self, action: ale_py.Action, frames: int) -> float:
        """Play ``frames`` frames of ``action``, keeping the last two screens; stop at game over.

        When the game ends before the last frame, or fewer than two frames are
        played, the observation is the final frame alone.
        """
        reward, kept = 0.0, 0
        for i in range(frames):
            reward += self.ale.act(action)
            over = self.ale.game_over()
            if over or i >= frames - 2:
                self._newest ^= 1  # the two slots alternate, so no frame is copied
                self.ale.getScreenRGB(self._screens[self._newest])
                kept += 1
            if over:
                break
        if kept == 0:
            self.ale.getScreenRGB(self._screens[self._newest])
        if kept < 2:
            self._screens[self._newest ^ 1] = self._screens[self._newest]
        return reward

    def _observation(self) -> np.ndarray:
        np.maximum(self._screens[0], self._screens[1], out=self._frame)
        return self._resize(self._frame, self.config.size)

    def _info(self, life_loss: bool) -> dict[str, Any]:
        return {
            "lives": self._lives,
            "life_loss": life_loss,
            "episode_frame_number": self.ale.getEpisodeFrameNumber(),
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode with a random number of no-op frames."""
        super().reset(seed=seed)
        if seed is not None:
            self._load_rom(int(self.np_random.integers(2**31)))
        noop_max = self.config.noop_max
        for _ in range(100):  # a game lost within the no-ops starts over
            self.ale.reset_game()
            noops = int(self.np_random.integers(1, noop_max + 1)) if noop_max else 0
            self._advance(ale_py.Action.NOOP, noops)
            if not self.ale.game_over():
                break
        else:
            raise RuntimeError(f"{self.config.game} ends during every no-op start; lower noop_max")
        self._lives = self.ale.lives()
        return self._observation(), self._info(life_loss=False)

    def step(self, action: int | np.integer) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Play one step: ``frame_skip`` frames of ``action``."""
        reward = self._advance(self._actions[action], self.config.frame_skip)
        terminated = self.ale.game_over(with_truncation=False)
        truncated = not terminated and self.ale.game_truncated()
        lives = self.ale.lives()
        life_loss = lives < self._lives
        self._lives = lives
        return self._observation(), reward, terminated, truncated, self._info(life_loss)

    def snapshot(self) -> tuple:
        """The game where it is now, emulator and random streams included, for :meth:`restore`."""
        return (
            self.ale.cloneState(include_rng=True),
            self._screens.copy(),
            self._newest,
            self._lives,
        )

    def restore(self, snapshot: tuple) -> np.ndarray:
        """Go back to a :meth:`snapshot` of this env; returns its observation."""
        state, screens, self._newest, self._lives = snapshot
        self.ale.restoreState(state)
        self._screens[:] = screens
        return self._observation()

    def render(self) -> np.ndarray | None:
        """Return the full-resolution frame behind the last observation (``rgb_array``)."""
        if self.render_mode == "rgb_array":
            return self._frame.copy()
        return None
