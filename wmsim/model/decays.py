"""Decay matrices of diagonal linear recurrences with resets, shared by the scans that need them.

Mamba-2's SSD scan and RetNet's retention both compute, for a recurrence
``H_t = a_t (1 - r_t) H_{t-1} + (input at t)``, how much of each step's input
survives to each later step. Written once here, used by both.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def decay_matrix(log_decay: Tensor, resets: Tensor) -> Tensor:
    """Decays between every pair of steps of a diagonal linear recurrence with resets.

    For ``H_t = a_t * (1 - r_t) * H_{t-1} + ...``, entry [t, s] is how much of the
    input at step s is left at step t: ``exp(sum_{s < k <= t} log a_k)`` when no
    step in (s, t] resets, else 0 (and 0 for s > t). Segment sums are differences
    of prefix sums in the input's precision, as Mamba-2's kernels compute them; a
    chunk is short enough for that to stay exact to a few ulps.

    Args:
        log_decay: (..., n) log a_t, at most 0.
        resets: (..., n) bool r_t, broadcastable to ``log_decay``.

    Returns:
        (..., n, n), indexed [t, s].
    """
    n = log_decay.shape[-1]
    prefix = log_decay.cumsum(-1)
    segment = prefix.unsqueeze(-1) - prefix.unsqueeze(-2)  # [t, s] = sum over s < k <= t
    count = resets.long().cumsum(-1)  # resets so far: equal counts = no reset in between
    causal = torch.ones(n, n, dtype=torch.bool, device=log_decay.device).tril()
    keep = (count.unsqueeze(-1) == count.unsqueeze(-2)) & causal
    return segment.masked_fill(~keep, -math.inf).exp()


def decay_from_start(log_decay: Tensor, resets: Tensor) -> Tensor:
    """How much of the state before step 0 is left after each step: (..., n).

    ``exp(sum_{k <= t} log a_k)`` while no step in [0, t] resets, else 0.
    """
    return log_decay.cumsum(-1).exp() * (resets.long().cumsum(-1) == 0)
