"""A paddle-tracking behaviour policy, so that collected data shows the game beyond its start.

Random play in Breakout rarely returns the ball: its episodes break a few
bricks of the bottom rows and lose five lives in about 200 steps, so a world
model trained on them never sees long rallies, a cleared row or a fast ball.
:class:`TrackerPolicy` moves the paddle under the ball, read from the
observation's pixels, and serves when no ball is in play; with probability
``epsilon`` it acts at random instead, so the data still holds every action in
every situation and plenty of lost lives. With ``offset`` it aims beside the
ball, by a shift drawn anew for every serve: it then misses some balls with
the paddle close by, so the data shows what decides a bounce (paddle under the
ball or not) rather than a paddle that is either always there or anywhere.

It reads Breakout's layout (at any observation size): the ball and the paddle
are the red pixels (200, 72, 72, or fainter once area-resized) below the
bricks, the paddle in the bottom tenth of the screen.
"""

from __future__ import annotations

import numpy as np

from wmsim.errors import UserError


def red_pixels(frames: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) frames -> (..., H, W) bool: Breakout's ball and paddle colour.

    A ball faded by area resizing counts too; the side walls' columns are left out.
    """
    r, g, b = np.moveaxis(frames.astype(np.int16), -1, 0)
    red = (r >= 100) & (r - g >= 50) & (r - b >= 50)
    width = frames.shape[-2]
    red[..., : int(0.06 * width)] = red[..., int(0.94 * width) :] = False
    return red


def ball_and_paddle(obs: np.ndarray) -> tuple[float | None, float | None, float | None]:
    """Breakout's ball (row, column) and paddle column in ``obs`` (H, W, 3); None where unseen.

    The paddle's row is the first in the bottom 15% of the screen with three red pixels or
    more; the ball, the red pixels between 45% of the height and that row (the mean of the
    rows and of the columns they fill).
    """
    size = obs.shape[0]
    red = red_pixels(obs)  # (H, W)
    bottom = int(0.85 * size)
    wide = np.flatnonzero(red[bottom:].sum(1) >= 3)  # the paddle's rows
    top = int(0.45 * size)
    region = red[top : bottom + (wide[0] if len(wide) else 0)]
    ball_row = top + np.flatnonzero(region.any(1)).mean() if region.any() else None
    ball = np.flatnonzero(region.any(0)).mean() if region.any() else None
    paddle = np.flatnonzero(red[bottom + wide[0]]).mean() if len(wide) else None
    return ball_row, ball, paddle


class TrackerPolicy:
    """Follow the ball with the paddle; a random action with probability ``epsilon``.

    Args:
        action_meanings: the game's actions; must include FIRE, LEFT and RIGHT.
        rng: draws the random actions.
        epsilon: share of random actions.
        offset: the largest aiming shift, as a share of the screen width (0: aim at the ball).
    """

    def __init__(
        self,
        action_meanings: list[str],
        rng: np.random.Generator,
        *,
        epsilon: float,
        offset: float = 0.0,
    ):
        missing = {"NOOP", "FIRE", "LEFT", "RIGHT"} - set(action_meanings)
        if missing:
            raise UserError(
                f"the tracker policy plays Breakout-like games; this one has no {sorted(missing)}"
            )
        needed = ("NOOP", "FIRE", "LEFT", "RIGHT")
        self.index = {name: action_meanings.index(name) for name in needed}
        self.num_actions, self.rng, self.epsilon = len(action_meanings), rng, epsilon
        self.offset, self.shift = offset, 0.0  # the shift is drawn at every serve
        self.last_ball: float | None = None  # the ball's column one step ago

    def __call__(self, obs: np.ndarray, is_first: bool) -> int:
        """The action for ``obs`` (H, W, 3)."""
        if is_first:
            self.last_ball = None
        _, ball, paddle = ball_and_paddle(obs)
        heading, self.last_ball = self.last_ball, ball
        if self.rng.random() < self.epsilon:
            return int(self.rng.integers(self.num_actions))
        if ball is None or paddle is None:
            if self.offset:
                self.shift = self.rng.uniform(-self.offset, self.offset) * obs.shape[0]
            return self.index["FIRE"]  # serve (or wait for the paddle to appear)
        if heading is not None:
            ball += 2.0 * (ball - heading)  # meet it where it is going
        ball += self.shift
        if ball < paddle - 1:
            return self.index["LEFT"]
        if ball > paddle + 1:
            return self.index["RIGHT"]
        return self.index["NOOP"]
