"""Retention (RetNet) in its three forms, with episode resets: the core of REM's world model.

References: Sun et al., "Retentive Network: A Successor to Transformer for
Large Language Models" (2023); Cohen et al., "Improving Token-Based World
Models with Parallel Observation Prediction" (REM, ICML 2024), whose heads
decay at gamma_h = 1 - exp(linspace(ln 1/32, ln 1/512, heads)).

Per head, with a state S (d_k x d_v) and reset flags r_n (the state entering
token n is zeroed, as at an episode start):

    recurrent:  S_n = gamma (1 - r_n) S_{n-1} + k_n^T v_n,   o_n = q_n S_n
    parallel:   O = (Q K^T * D) V + (Q S_0) * xi,  D[i, j] = gamma^(i - j), xi_i = gamma^(i + 1),
                each zeroed where a reset lies in (j, i] or in [0, i]
    chunkwise:  the parallel form inside chunks of C tokens, the recurrence across them

All three take the same arguments and return the same outputs and final state
(``tests/model/test_retention.py``). Positions (xPos / rotary) are applied to
q and k before retention, by the layer that calls it.

Shapes: q, k (B, H, T, d_k); v (B, H, T, d_v); S (B, H, d_k, d_v); resets (B, T).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from wmsim.model.decays import decay_from_start, decay_matrix


def rem_decays(heads: int) -> Tensor:
    """REM's per-head decays: 1 - exp(linspace(ln 1/32, ln 1/512, heads)), in float64."""
    return 1.0 - torch.exp(
        torch.linspace(math.log(1 / 32), math.log(1 / 512), heads, dtype=torch.float64)
    )


def _log_decays(gamma: Tensor, q: Tensor) -> Tensor:
    """Per-head log gamma broadcast over the tokens of q: (B, H, T)."""
    return gamma.log().to(q.dtype)[None, :, None].expand(q.shape[0], -1, q.shape[2])


def retention_parallel(
    q: Tensor, k: Tensor, v: Tensor, gamma: Tensor, resets: Tensor, state: Tensor
) -> tuple[Tensor, Tensor]:
    """The parallel form over all T tokens: outputs (B, H, T, d_v) and the state after them.

    Args:
        q: (B, H, T, d_k) queries.
        k: (B, H, T, d_k) keys.
        v: (B, H, T, d_v) values.
        gamma: (H,) decays in (0, 1).
        resets: (B, T) bool, the state entering token t is zeroed.
        state: (B, H, d_k, d_v) state before token 0.
    """
    log_decay = _log_decays(gamma, q)
    resets = resets.unsqueeze(1)  # (B, 1, T), shared by the heads
    weights = decay_matrix(log_decay, resets)  # (B, H, T, T)
    carried = decay_from_start(log_decay, resets)  # (B, H, T)
    out = ((q @ k.transpose(-1, -2)) * weights) @ v + (q @ state) * carried.unsqueeze(-1)
    # the final state is the last row of the same decays, applied to k^T v
    final = (k * weights[:, :, -1].unsqueeze(-1)).transpose(-1, -2) @ v
    return out, final + carried[:, :, -1, None, None] * state


def retention_step(
    q: Tensor, k: Tensor, v: Tensor, gamma: Tensor, is_first: Tensor, state: Tensor
) -> tuple[Tensor, Tensor]:
    """The recurrent form for one token: q, k (B, H, d_k), v (B, H, d_v), is_first (B,).

    Returns:
        o (B, H, d_v) and the next state (B, H, d_k, d_v).
    """
    decay = gamma.to(q.dtype)[None, :, None, None] * (~is_first).to(q.dtype)[:, None, None, None]
    state = decay * state + k.unsqueeze(-1) * v.unsqueeze(-2)
    return (q.unsqueeze(-2) @ state).squeeze(-2), state


def _in_chunks(
    q: Tensor, k: Tensor, v: Tensor, gamma: Tensor, resets: Tensor, state: Tensor, chunk: int
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """:func:`retention_parallel` on chunks in turn, and the states entering each chunk.

    The states stay a list: only the caller that needs them pays for stacking.
    """
    outputs, entering = [], []
    for start in range(0, q.shape[2], chunk):  # chunks, not tokens
        part = slice(start, start + chunk)
        entering.append(state)
        out, state = retention_parallel(
            q[:, :, part], k[:, :, part], v[:, :, part], gamma, resets[:, part], state
        )
        outputs.append(out)
    return torch.cat(outputs, 2), state, entering


def retention_per_block(
    q: Tensor, k: Tensor, v: Tensor, gamma: Tensor, resets: Tensor, state: Tensor, block: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The chunkwise form with chunks of ``block`` tokens, also returning the state entering each.

    Same arguments as :func:`retention_parallel`. REM's parallel training path
    needs S_(t-1), the state before each block t, for the prediction tokens.

    Returns:
        outputs (B, H, T, d_v), the state after T tokens, and the states entering
        each block (B, ceil(T / block), H, d_k, d_v), before that block's resets.
    """
    out, state, entering = _in_chunks(q, k, v, gamma, resets, state, block)
    return out, state, torch.stack(entering, 1)


def retention_chunkwise(
    q: Tensor, k: Tensor, v: Tensor, gamma: Tensor, resets: Tensor, state: Tensor, chunk: int
) -> tuple[Tensor, Tensor]:
    """The chunkwise form: :func:`retention_parallel` on chunks of ``chunk`` tokens in turn.

    Same arguments and results as :func:`retention_parallel`; memory grows with
    T * chunk rather than T^2.
    """
    out, state, _ = _in_chunks(q, k, v, gamma, resets, state, chunk)
    return out, state
