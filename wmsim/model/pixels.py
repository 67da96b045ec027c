"""Frames as network inputs, and the reconstruction loss that makes small moving objects count.

A squared error summed over the frame (STORM, DreamerV3) prices every pixel
alike, so a ball of a few pixels is the last thing a model learns: leaving it
out costs less than the noise of the rest of the frame (Hafner, PlaNet
issue #21). :func:`reconstruction_loss` adds ``motion_weight`` times the error
on the pixels that *move*: those that differ from the previous real frame by
more than ``threshold`` (summed over channels), dilated by one pixel so that
the object's next place is covered too. With ``motion_weight = 0`` it is the
papers' loss. Measured on this project's CPU: with block-max frames a weight
of 20 drew Breakout's ball in 97% of held-out frames after 5 minutes of
autoencoder training, plain MSE in none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from wmsim.model.distributions import at_least_fp32


def frames_to_input(frames: Tensor) -> Tensor:
    """uint8 frames (..., H, W, 3) -> float (N, 3, H, W) in [0, 1]."""
    return frames.reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0


def moving_pixels(frames: Tensor, is_first: Tensor, threshold: float) -> Tensor:
    """Which pixels move: frames (B, T, H, W, 3) uint8, is_first (B, T) -> (B, T, H, W) bool.

    A pixel moves at step t when it differs from step t-1 by more than
    ``threshold`` (values in [0, 1], summed over channels), or neighbours one
    that does (a 3 x 3 dilation). The first step of a window or an episode has
    no previous frame, so nothing moves there.
    """
    x = frames.float() / 255.0
    change = (x[:, 1:] - x[:, :-1]).abs().sum(-1) > threshold  # (B, T-1, H, W)
    change &= ~is_first[:, 1:, None, None]
    change = torch.cat([torch.zeros_like(change[:, :1]), change], 1)  # (B, T, H, W)
    dilated = F.max_pool2d(change.flatten(0, 1)[:, None].float(), 3, stride=1, padding=1)
    return dilated[:, 0].reshape(change.shape) > 0


def reconstruction_loss(
    recon: Tensor,
    frames: Tensor,
    is_first: Tensor,
    *,
    motion_weight: float = 0.0,
    threshold: float = 0.05,
) -> Tensor:
    """Squared error summed over pixels, averaged over frames, moving pixels weighted up.

    Args:
        recon: (B * T, 3, H, W) decoded frames.
        frames: (B, T, H, W, 3) uint8 real frames.
        is_first: (B, T) episode starts.
        motion_weight: extra weight of the moving pixels' error (0: plain MSE).
        threshold: change that makes a pixel move (see :func:`moving_pixels`).
    """
    recon = at_least_fp32(recon)  # bf16 under autocast
    error = (recon - frames_to_input(frames).to(recon.dtype)).square()  # (B * T, 3, H, W)
    if motion_weight:
        moving = moving_pixels(frames, is_first, threshold).flatten(0, 1)[:, None]
        error = error * (1.0 + motion_weight * moving.to(error.dtype))
    return error.sum((1, 2, 3)).mean()
