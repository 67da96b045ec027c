"""The reconstruction loss: plain squared error, or moving pixels weighted up."""

import torch

from wmsim.model.pixels import frames_to_input, moving_pixels, reconstruction_loss


def frames_with_a_moving_dot():
    frames = torch.zeros(1, 3, 8, 8, 3, dtype=torch.uint8)
    frames[0, 0, 2, 2] = frames[0, 1, 2, 3] = frames[0, 2, 2, 4] = 200
    return frames


def test_moving_pixels_cover_the_old_and_new_place_dilated_and_not_the_first_step():
    frames = frames_with_a_moving_dot()
    moving = moving_pixels(frames, torch.zeros(1, 3, dtype=torch.bool), threshold=0.05)
    assert not moving[0, 0].any()  # no previous frame
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[1:4, 1:5] = True  # (2, 2) and (2, 3), each grown by one pixel
    assert torch.equal(moving[0, 1], expected)
    starts = torch.tensor([[False, False, True]])
    assert not moving_pixels(frames, starts, 0.05)[0, 2].any()  # a new episode: no motion


def test_weight_zero_is_the_papers_loss_and_a_weight_prices_the_moving_error():
    frames = frames_with_a_moving_dot()
    is_first = torch.zeros(1, 3, dtype=torch.bool)
    blank = torch.zeros(3, 3, 8, 8)  # a model that draws nothing
    plain = reconstruction_loss(blank, frames, is_first)
    assert plain == (frames_to_input(frames)).square().sum((1, 2, 3)).mean()
    weighted = reconstruction_loss(blank, frames, is_first, motion_weight=20.0)
    # the dots at steps 1 and 2 move: their error counts 21 times, the first step's once
    dot = 3 * (200 / 255) ** 2  # three channels
    assert torch.isclose(weighted, torch.tensor((dot + 21 * dot + 21 * dot) / 3))
