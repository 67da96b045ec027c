"""Fidelity metrics on hand-made frames: a ball drawn, missing, shifted; events; ends."""

import numpy as np
import pytest

from wmsim import fidelity

RED = (200, 72, 72)


def scene(ball=None, paddle_x=20):
    """A 64 x 64 black frame with grey walls, a row of bricks, a paddle and maybe a 2 x 2 ball."""
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[:, :2] = frame[:, -2:] = 142  # walls: large, never a small object
    frame[10:14, 2:-2] = (66, 72, 200)  # bricks
    frame[58:60, paddle_x : paddle_x + 8] = RED  # paddle: 16 pixels, not small
    if ball is not None:
        y, x = ball
        frame[y : y + 2, x : x + 2] = RED
    return frame


def metrics(previous, real, model):
    return fidelity.frame_metrics(previous[None], real[None], model[None])


def test_a_ball_drawn_at_its_place_is_recalled():
    previous, real = scene((30, 30)), scene((32, 33))
    m = metrics(previous, real, real)
    assert m["objects"] == 1 and m["object_recall"] == 1.0 and m["spurious"] == 0
    assert m["mse"] == m["moving_mse"] == 0.0


def test_a_missing_ball_is_not_recalled_and_costs_on_moving_pixels():
    previous, real = scene((30, 30)), scene((32, 33))
    m = metrics(previous, real, scene(None))
    assert m["objects"] == 1 and m["object_recall"] == 0.0
    assert m["moving_mse"] > 50 * m["mse"]  # the whole-frame error hides the ball


def test_a_ball_shifted_by_three_pixels_is_missed_and_spurious():
    previous, real = scene((30, 30)), scene((32, 33))
    shifted = scene((32, 36))
    m = metrics(previous, real, shifted)
    assert m["object_recall"] == 0.0
    assert m["spurious"] > 0  # drawn where no ball is
    assert metrics(previous, real, scene((33, 35)))["object_recall"] == 1.0  # within 1 pixel


def test_a_faded_ball_counts_and_a_faint_blur_does_not():
    previous, real = scene((30, 30)), scene((32, 33))
    faded, faint = scene(None), scene(None)
    faded[32:34, 33:35] = (110, 40, 40)  # 55% of the ball's colour
    faint[32:34, 33:35] = (50, 18, 18)  # 25%
    assert metrics(previous, real, faded)["object_recall"] == 1.0
    assert metrics(previous, real, faint)["object_recall"] == 0.0


def test_paddles_walls_and_bricks_are_not_small_objects():
    previous, real = scene(None, paddle_x=20), scene(None, paddle_x=24)
    assert fidelity.moving_objects(previous, real) == []
    # a ball touching the bricks is part of something large: not judged
    assert fidelity.moving_objects(scene((30, 30)), scene((14, 30))) == []


def test_a_still_ball_is_not_a_moving_object_and_copying_recalls_a_slow_one():
    assert fidelity.moving_objects(scene((30, 30)), scene((30, 30))) == []
    previous, real = scene((30, 30)), scene((31, 31))
    assert metrics(previous, real, previous)["object_recall"] == 1.0


def test_the_background_is_the_most_common_colour():
    frame = np.full((8, 8, 3), (144, 72, 17), np.uint8)
    frame[:2] = 0
    assert tuple(fidelity.background(frame)) == (144, 72, 17)


def test_reward_recall_and_precision():
    real = np.array([0, 1, 0, 0, 1, -1, 0, 0])
    predicted = np.array([0.1, 0.9, 0.7, 0.0, 0.2, -1.0, 0.0, 0.0])
    m = fidelity.event_metrics(predicted, real)
    assert m["reward_events"] == 3
    assert m["reward_recall"] == pytest.approx(2 / 3)
    assert m["reward_precision"] == pytest.approx(2 / 3)
    assert np.isnan(fidelity.event_metrics(np.zeros(4), np.zeros(4))["reward_precision"])


def test_end_recall_precision_and_probability_ratio():
    ends = np.array([True, False, False, True, False])
    cont = np.array([0.2, 0.9, 0.4, 0.6, 0.9])
    m = fidelity.end_metrics(cont, ends)
    assert m["end_events"] == 2
    assert m["end_recall"] == 0.5 and m["end_precision"] == 0.5
    assert m["end_prob_at_ends"] == pytest.approx((0.8 + 0.4) / 2)
    assert m["end_prob_elsewhere"] == pytest.approx((0.1 + 0.6 + 0.1) / 3)
    assert m["end_prob_ratio"] == pytest.approx(((0.8 + 0.4) / 2) / ((0.1 + 0.6 + 0.1) / 3))
