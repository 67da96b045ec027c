"""Mamba-2's fused CUDA kernels behind the signatures of the pure-PyTorch reference (mamba.py).

``ssd_scan`` runs mamba-ssm's ``mamba_chunk_scan_combined`` (Triton) and
``causal_conv`` runs causal-conv1d's ``causal_conv1d_fn`` (CUDA); each takes and
returns what its namesake in mamba.py does, so the mixer picks one pair or the
other at one call site (``mamba.kernels_for``). Both packages are optional: the
import guard leaves ``AVAILABLE`` False where either is missing, and the
reference runs. The fused pair is unverified until ``scripts/gpu-mamba.sh`` has
run its test (tests/model/backbones/test_mamba_fused.py) on a GPU.

How our arguments map onto ``mamba_chunk_scan_combined`` (mamba-ssm 2.3):

- ``x`` (B, T, heads, P) and ``a`` (heads,), already negative, pass as x and A.
- ``dt`` is already positive (the mixer applies ``softplus(dt + dt_bias)``), so
  ``dt_bias=None, dt_softplus=False`` and the default ``dt_limit`` (no clamp).
- ``b``, ``c`` (B, T, N) are shared by the heads: ngroups 1, B and C (B, T, 1, N).
- ``D=None, z=None``: the skip ``D x`` and the gated RMSNorm stay in the mixer.
- ``resets`` become ``seq_idx = cumsum(resets)`` (``sequence_index``): the
  kernels zero the carried state wherever the index changes, keep each chunk's
  attention within one index, and treat ``initial_states`` as belonging to index
  0. So the first episode continues ``initial``, a reset at step 0 (index 1 from
  the start) drops it, and the final state (``return_final_states``) is the
  state after the last step, inside the last episode: the reference's semantics.
- ``chunk`` is ``chunk_size``; both are exact for any chunk size.

And onto ``causal_conv1d_fn`` (causal-conv1d 1.6 and 1.7): 1.6 refuses ``seq_idx``
together with ``initial_states``, so the window is prepended to x as K - 1 more
steps of index 0 (the episode x starts in, as the reference has it) and the
outputs for those steps are dropped; ``seq_idx`` needs the channel-last layout
((B, C, L) with stride 1 along C), which is (B, L, C) transposed. The kernel reads
a tap as 0 where its index differs from the output's, as the reference does.
``activation=None``: the mixer applies SiLU. The next window is taken in PyTorch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

try:  # optional CUDA kernels; without them the mixer runs the reference
    from causal_conv1d import causal_conv1d_fn
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
except ImportError:
    causal_conv1d_fn = mamba_chunk_scan_combined = None

AVAILABLE = causal_conv1d_fn is not None and mamba_chunk_scan_combined is not None
"""Whether both mamba-ssm and causal-conv1d imported."""


def sequence_index(resets: Tensor) -> Tensor:
    """(B, T) bool resets -> (B, T) int32 ``seq_idx``: 0 until the first reset, +1 at each."""
    return resets.cumsum(1, dtype=torch.int32)


def supports(channels: int, taps: int) -> bool:
    """Whether causal_conv1d_fn takes this conv: 2 to 4 taps, channels a multiple of 8."""
    return 2 <= taps <= 4 and channels % 8 == 0


def ssd_scan(
    x: Tensor,
    dt: Tensor,
    a: Tensor,
    b: Tensor,
    c: Tensor,
    resets: Tensor,
    initial: Tensor,
    chunk: int,
) -> tuple[Tensor, Tensor]:
    """mamba-ssm's fused chunked SSD; arguments and results as ``mamba.ssd_scan``'s.

    x (B, T, heads, P), dt (B, T, heads), a (heads,), b and c (B, T, N), resets (B, T),
    initial (B, heads, P, N) -> y (B, T, heads, P), final state (B, heads, P, N).
    """
    y, final = mamba_chunk_scan_combined(
        x.contiguous(), dt.contiguous(), a, b.unsqueeze(2), c.unsqueeze(2), chunk,
        initial_states=initial.contiguous(), seq_idx=sequence_index(resets),
        return_final_states=True,
    )  # fmt: skip
    return y, final.to(x.dtype)


def causal_conv(
    x: Tensor, window: Tensor, weight: Tensor, bias: Tensor, is_first: Tensor
) -> tuple[Tensor, Tensor]:
    """causal-conv1d's fused depthwise conv; arguments and results as ``mamba.causal_conv``'s.

    x (B, T, C), window (B, K - 1, C), weight (C, K), bias (C,), is_first (B, T)
    -> out (B, T, C), next window (B, K - 1, C).
    """
    taps = weight.shape[1]
    inputs = torch.cat([window.to(x.dtype), x], 1).contiguous()  # (B, K - 1 + T, C)
    episode = F.pad(sequence_index(is_first), (taps - 1, 0))  # (B, K - 1 + T), window: 0
    out = causal_conv1d_fn(
        inputs.transpose(1, 2), weight.to(x.dtype), bias.to(x.dtype), seq_idx=episode
    )  # (B, C, K - 1 + T), channel-last
    keep = (episode[:, -(taps - 1) :] == episode[:, -1:]).unsqueeze(-1)
    return out.transpose(1, 2)[:, taps - 1 :], inputs[:, -(taps - 1) :] * keep
