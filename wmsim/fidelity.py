"""Fidelity metrics: does a model's frame show what matters, beside copying the last frame?

One numpy module, used by ``wmsim train``'s held-out evaluation (on the torch
model) and by ``wmsim bundle eval`` (on a bundle's own graphs, so shipped
models are measured without torch). Frames are uint8 (N, H, W, 3).

- **Moving pixels** (:func:`moving_mask`): pixels whose colour changed from the
  previous real frame by more than ``MOTION_THRESHOLD`` (summed over channels),
  dilated by one pixel, the same definition the training loss weighs
  (:mod:`wmsim.model.pixels`). A whole-frame error hides a ball; the error on
  these pixels does not.
- **Small moving objects** (:func:`moving_objects`): connected groups of at
  most ``MAX_OBJECT_AREA`` pixels that differ from the background (the frame's
  most common colour) by at least ``OBJECT_CONTRAST``, one of which changed
  that much since the previous real frame: Breakout's and Pong's ball, a
  changed score digit; not paddles, walls or bricks. No game-specific
  knowledge.
- **Object recall**: the share of those objects the model's frame draws at
  their place: some pixel within ``RADIUS`` pixels of the object, on ground
  that is the object or empty background in the real frame, is closer to the
  object's colour than 60% of the object's contrast with the background (a
  faded spot at 40% of the ball's brightness still counts, a grey blur does
  not). Copying the previous frame draws a moving object at its old place, so
  the baseline scores low exactly when the objects move.
- **Spurious pixels**: pixels the model gets wrong by ``SPURIOUS_ERROR`` or
  more, farther than ``RADIUS + 1`` pixels from every real object: speckle and
  ghost balls, which a recall alone would reward.
- **Events**: reward recall and precision (a predicted reward counts when it
  rounds to a non-zero value of the right sign), end recall and precision at
  probability 0.5, and the ratio of the mean end probability where an end
  really comes to the mean elsewhere.
"""

from __future__ import annotations

import numpy as np

MOTION_THRESHOLD = 0.05 * 255
"""Summed channel change (0-765) that makes a pixel move; 0.05 in [0, 1] units, as the loss."""
OBJECT_CONTRAST = 40
"""Summed channel change and contrast with the background (0-765) that makes an object pixel."""
MAX_OBJECT_AREA = 8
"""Larger groups of pixels (paddles, walls, bricks) are not small objects; at 64 x 64 a ball
covers 1 to 6 pixels."""
RADIUS = 1
"""How far from its real place (pixels, Chebyshev) an object may be drawn and still count: at
64 x 64 a ball is about 2 pixels wide, so one ball width off is a miss."""
SPURIOUS_ERROR = 100
"""Summed channel error (0-765) that makes a pixel spurious, away from real objects."""


def _l1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Summed absolute channel difference (..., 3) -> (...)."""
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).sum(-1)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Max-dilate boolean masks (..., H, W) by a (2 radius + 1) square."""
    out = mask.copy()
    for axis in (-2, -1):
        grown = out.copy()
        for shift in range(1, radius + 1):
            for sign in (1, -1):
                rolled = np.roll(out, sign * shift, axis=axis)
                edge = [slice(None)] * out.ndim  # no wrap-around at the border
                edge[axis] = slice(0, shift) if sign > 0 else slice(-shift, None)
                rolled[tuple(edge)] = False
                grown |= rolled
        out = grown
    return out


def moving_mask(previous: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) previous and current real frames -> (N, H, W) pixels that move."""
    return _dilate(_l1(frames, previous) > MOTION_THRESHOLD, 1)


def background(frame: np.ndarray) -> np.ndarray:
    """The most common colour (3,) of a frame (H, W, 3)."""
    packed = frame.reshape(-1, 3).astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], np.int32)
    values, counts = np.unique(packed, return_counts=True)
    top = int(values[counts.argmax()])
    return np.array([top >> 16, (top >> 8) & 255, top & 255], np.uint8)


def _small_component(solid: np.ndarray, seed: tuple[int, int], large: set) -> list | None:
    """The 8-connected pixels of ``solid`` (H, W) around ``seed``, or None if over the area cap.

    ``large`` holds pixels already known to belong to large groups; it grows
    with every rejected search, so each large group is entered a few times at most.
    """
    height, width = solid.shape
    stack, group = [seed], {seed}
    while stack:
        y, x = stack.pop()
        for ny in range(max(y - 1, 0), min(y + 2, height)):
            for nx in range(max(x - 1, 0), min(x + 2, width)):
                if solid[ny, nx] and (ny, nx) not in group:
                    if len(group) == MAX_OBJECT_AREA or (ny, nx) in large:
                        large.update(group)  # part of something large: a wall, the bricks
                        return None
                    group.add((ny, nx))
                    stack.append((ny, nx))
    return sorted(group)


def moving_objects(previous: np.ndarray, frame: np.ndarray) -> list[np.ndarray]:
    """Small moving objects of a real frame (H, W, 3), given the one before: (n, 2) pixel lists.

    An object is a group of connected non-background pixels, at most
    ``MAX_OBJECT_AREA`` of them, at least one of which changed since ``previous``.
    """
    solid = _l1(frame, background(frame)) >= OBJECT_CONTRAST
    moved = solid & (_l1(frame, previous) >= OBJECT_CONTRAST)
    large: set = set()
    taken: set = set()
    objects = []
    for y, x in zip(*np.nonzero(moved), strict=True):
        seed = (int(y), int(x))
        if seed not in taken and seed not in large:
            group = _small_component(solid, seed, large)
            if group is not None:
                taken.update(group)
                objects.append(np.array(group))
    return objects


def drawn(objects: list[np.ndarray], real: np.ndarray, model: np.ndarray) -> int:
    """How many of a real frame's ``objects`` the model's frame (H, W, 3) draws at their place."""
    if not objects:
        return 0
    bg = background(real)
    ground = _l1(real, bg) < OBJECT_CONTRAST  # where a drawn object hides nothing real
    height, width = ground.shape
    count = 0
    for pixels in objects:
        colours = real[pixels[:, 0], pixels[:, 1]]  # (n, 3)
        strongest = colours[_l1(colours, bg).argmax()]
        tolerance = 0.6 * _l1(strongest, bg)
        top, left = np.maximum(pixels.min(0) - RADIUS, 0)
        bottom, right = pixels.max(0) + RADIUS + 1
        here = np.zeros((min(bottom, height) - top, min(right, width) - left), bool)
        here[pixels[:, 0] - top, pixels[:, 1] - left] = True
        window = (slice(top, top + here.shape[0]), slice(left, left + here.shape[1]))
        region = _dilate(here, RADIUS) & (ground[window] | here)
        count += bool((_l1(model[window][region], strongest) < tolerance).any())
    return count


def frame_metrics(previous: np.ndarray, real: np.ndarray, model: np.ndarray) -> dict[str, float]:
    """Model frames against real ones, all (N, H, W, 3) uint8; ``previous``: the real frames before.

    Returns mse (per pixel and channel, values in [0, 1]), moving_mse (on moving
    pixels only), objects (real small moving objects), object_recall (share drawn)
    and spurious (pixels per frame badly wrong away from real objects).
    """
    error = ((model.astype(np.float32) - real.astype(np.float32)) / 255.0) ** 2
    moving = moving_mask(previous, real)
    found = total = 0
    near_objects = np.zeros(real.shape[:3], bool)
    for i in range(len(real)):
        objects = moving_objects(previous[i], real[i])
        total += len(objects)
        found += drawn(objects, real[i], model[i])
        for pixels in objects:
            near_objects[i, pixels[:, 0], pixels[:, 1]] = True
    far = ~_dilate(near_objects, RADIUS + 1)
    spurious = (_l1(model, real) >= SPURIOUS_ERROR) & far
    return {
        "mse": float(error.mean()),
        "moving_mse": float(error[moving].mean()) if moving.any() else float("nan"),
        "objects": total,
        "object_recall": found / total if total else float("nan"),
        "spurious": float(spurious.sum() / max(len(real), 1)),
    }


def event_metrics(predicted: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """Reward recall and precision: predicted and real rewards (N,) -> metrics.

    A prediction is an event when it rounds to a non-zero value; it is right
    when the real reward is non-zero with the same sign.
    """
    guess = np.sign(np.round(predicted))
    truth = np.sign(real)
    hits = (guess != 0) & (guess == truth)
    return {
        "reward_events": int((truth != 0).sum()),
        "reward_recall": _ratio(hits.sum(), (truth != 0).sum()),
        "reward_precision": _ratio(hits.sum(), (guess != 0).sum()),
    }


def end_metrics(continue_prob: np.ndarray, ends: np.ndarray) -> dict[str, float]:
    """End recall, precision and probability ratio: continue probabilities and real ends (N,)."""
    end_prob = 1.0 - continue_prob
    guess = end_prob > 0.5
    elsewhere = float(end_prob[~ends].mean()) if (~ends).any() else float("nan")
    at_ends = float(end_prob[ends].mean()) if ends.any() else float("nan")
    return {
        "end_events": int(ends.sum()),
        "end_recall": _ratio((guess & ends).sum(), ends.sum()),
        "end_precision": _ratio((guess & ends).sum(), guess.sum()),
        "end_prob_at_ends": at_ends,
        # a dream env draws an end from this every step: its false ends compound
        "end_prob_elsewhere": elsewhere,
        "end_prob_ratio": at_ends / elsewhere if elsewhere > 0 else float("nan"),
    }


def _ratio(a, b) -> float:
    return float(a) / float(b) if b else float("nan")
