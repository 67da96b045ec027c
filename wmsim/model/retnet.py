"""RetNet decoder over tokens: REM's sequence model, in parallel, chunkwise and recurrent forms.

References: Sun et al., "Retentive Network" (2023); REM (Cohen et al., ICML
2024) for the sizes: 5 pre-LN layers of width 256, 4 heads (head size 64),
FFN 1024 with swish, dropout 0.1. Each layer's multi-scale retention:

    q, k = rotate(W_q x, n), rotate(W_k x, n) / sqrt(d_head)   rotary "theta shift" at index n
    o = GroupNorm_heads(retention(q, k, W_v x))                 per-head decays gamma_h
    out = W_o(silu(W_g x) * o)

Positions are absolute token indices, passed in: the world model decides
them (REM's prediction tokens reuse the next frame's positions). The
recurrent state is one (d_head x d_head) matrix per head and layer, named
``s{l}``; resets (episode starts) zero it, in every form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wmsim.model.networks import rotate
from wmsim.model.retention import (
    rem_decays,
    retention_chunkwise,
    retention_parallel,
    retention_per_block,
    retention_step,
)

States = dict[str, Tensor]
"""Layer l's retention state under ``s{l}``: (B, heads, head size, head size)."""


@dataclass(frozen=True)
class RetNetConfig:
    """REM's sizes by default."""

    width: int = 256
    """Token width."""
    layers: int = 5
    """Decoder layers."""
    heads: int = 4
    """Retention heads; width / heads must be even (rotary pairs)."""
    ffn: int = 1024
    """Hidden size of each layer's feed-forward network."""
    dropout: float = 0.1
    """Dropout on each layer's retention and feed-forward outputs."""


class MultiScaleRetention(nn.Module):
    """Retention with per-head decays, rotary positions, GroupNorm and a swish gate."""

    def __init__(self, config: RetNetConfig, *, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        d, self.heads = config.width, config.heads
        self.head_size = d // config.heads
        self.q, self.k, self.v, self.g = (nn.Linear(d, d, bias=False, **kw) for _ in range(4))
        self.out = nn.Linear(d, d, bias=False, **kw)
        self.norm = nn.GroupNorm(config.heads, d, **kw)
        half = self.head_size // 2
        self.register_buffer(  # REM's thetas: 1 / 10000^linspace(0, 1, d_head / 2)
            "thetas", 10_000 ** -torch.linspace(0, 1, half, dtype=torch.float64), persistent=False
        )
        self.register_buffer("gamma", rem_decays(config.heads), persistent=False)

    def _qkv(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (..., d), positions (...) -> q, k, v (..., heads, head size)."""
        split = (*x.shape[:-1], self.heads, self.head_size)
        thetas = self.thetas.to(x.dtype)
        q = rotate(self.q(x).reshape(split), positions.unsqueeze(-1), thetas)
        k = rotate(self.k(x).reshape(split), positions.unsqueeze(-1), thetas)
        return q, k / math.sqrt(self.head_size), self.v(x).reshape(split)

    def _finish(self, x: Tensor, o: Tensor) -> Tensor:
        """Input x (N, d) and retention output o (N, heads, head size) -> (N, d)."""
        return self.out(F.silu(self.g(x)) * self.norm(o.flatten(-2)))

    def forward(
        self, x: Tensor, positions: Tensor, resets: Tensor, state: Tensor, chunk: int | None
    ) -> tuple[Tensor, Tensor]:
        """x (B, T, d) -> (B, T, d) and the state after T tokens; chunkwise if ``chunk``."""
        q, k, v = (t.transpose(1, 2) for t in self._qkv(x, positions))  # (B, heads, T, size)
        gamma = self.gamma.to(x.dtype)
        if chunk is None:
            o, state = retention_parallel(q, k, v, gamma, resets, state)
        else:
            o, state = retention_chunkwise(q, k, v, gamma, resets, state, chunk)
        out = self._finish(x.flatten(0, 1), o.transpose(1, 2).flatten(0, 1))
        return out.unflatten(0, x.shape[:2]), state

    def forward_pop(
        self,
        x: Tensor,
        positions: Tensor,
        resets: Tensor,
        state: Tensor,
        queries: Tensor,
        query_positions: Tensor,
        block: int,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Real tokens x (B, T, d) and prediction tokens queries (B, N, P, d), N = T / block.

        The real tokens run blockwise and return the state after them. Block
        n's prediction tokens start from the state entering block n (zeroed if
        the block starts an episode) and retain causally over each other, as
        one batch of B * N independent sequences whose states are dropped.
        """
        q, k, v = (t.transpose(1, 2) for t in self._qkv(x, positions))  # (B, heads, T, size)
        gamma = self.gamma.to(x.dtype)
        o, state, entering = retention_per_block(q, k, v, gamma, resets, state, block)
        out = self._finish(x.flatten(0, 1), o.transpose(1, 2).flatten(0, 1))
        pq, pk, pv = (
            t.flatten(0, 1).transpose(1, 2) for t in self._qkv(queries, query_positions)
        )  # (B * N, heads, P, size)
        query_resets = torch.zeros(pq.shape[0], pq.shape[2], dtype=torch.bool, device=x.device)
        query_resets[:, 0] = resets[:, ::block].flatten()
        po, _ = retention_parallel(pq, pk, pv, gamma, query_resets, entering.flatten(0, 1))
        query_out = self._finish(queries.flatten(0, 2), po.transpose(1, 2).flatten(0, 1))
        return out.unflatten(0, x.shape[:2]), query_out.unflatten(0, queries.shape[:3]), state

    def step(
        self, x: Tensor, position: Tensor, is_first: Tensor, state: Tensor
    ) -> tuple[Tensor, Tensor]:
        """One token: x (B, d), position (B,), is_first (B,) -> (B, d), next state."""
        q, k, v = self._qkv(x, position)
        o, state = retention_step(q, k, v, self.gamma.to(x.dtype), is_first, state)
        return self._finish(x, o), state


class RetNetLayer(nn.Module):
    """Pre-LN: x + retention(LN x), then + FFN(LN x) with swish."""

    def __init__(self, config: RetNetConfig, *, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.norm1 = nn.LayerNorm(config.width, **kw)
        self.retention = MultiScaleRetention(config, **kw)
        self.norm2 = nn.LayerNorm(config.width, **kw)
        self.ffn = nn.Sequential(
            nn.Linear(config.width, config.ffn, **kw),
            nn.SiLU(),
            nn.Linear(config.ffn, config.width, **kw),
        )
        self.dropout = nn.Dropout(config.dropout)

    def _feed_forward(self, x: Tensor) -> Tensor:
        return x + self.dropout(self.ffn(self.norm2(x)))

    def forward(
        self, x: Tensor, positions: Tensor, resets: Tensor, state: Tensor, chunk: int | None
    ) -> tuple[Tensor, Tensor]:
        """x (B, T, width) -> (B, T, width) and the state after T tokens."""
        delta, state = self.retention(self.norm1(x), positions, resets, state, chunk)
        return self._feed_forward(x + self.dropout(delta)), state

    def forward_pop(
        self,
        x: Tensor,
        positions: Tensor,
        resets: Tensor,
        state: Tensor,
        queries: Tensor,
        query_positions: Tensor,
        block: int,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """See :meth:`MultiScaleRetention.forward_pop`; returns both outputs and the state."""
        delta, query_delta, state = self.retention.forward_pop(
            self.norm1(x), positions, resets, state, self.norm1(queries), query_positions, block
        )
        x = self._feed_forward(x + self.dropout(delta))
        return x, self._feed_forward(queries + self.dropout(query_delta)), state

    def step(
        self, x: Tensor, position: Tensor, is_first: Tensor, state: Tensor
    ) -> tuple[Tensor, Tensor]:
        """One token: x (B, width) -> (B, width), next state."""
        delta, state = self.retention.step(self.norm1(x), position, is_first, state)
        return self._feed_forward(x + self.dropout(delta)), state


class RetNet(nn.Module):
    """A stack of :class:`RetNetLayer` and a final LayerNorm, with states passed in and out."""

    def __init__(self, config: RetNetConfig, *, device=None, dtype=None):
        super().__init__()
        if config.width % (2 * config.heads):
            raise ValueError(f"width {config.width} must split into {config.heads} even heads")
        self.config = config
        kw = {"device": device, "dtype": dtype}
        self.layers = nn.ModuleList(RetNetLayer(config, **kw) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.width, **kw)

    def initial_state(self, batch: int, device=None, dtype=None) -> States:
        """Zero retention states."""
        size = self.config.width // self.config.heads
        shape = (batch, self.config.heads, size, size)
        return {
            f"s{layer}": torch.zeros(shape, device=device, dtype=dtype or torch.float32)
            for layer in range(self.config.layers)
        }

    def forward(
        self,
        x: Tensor,
        positions: Tensor,
        resets: Tensor,
        states: States,
        chunk: int | None = None,
    ) -> tuple[Tensor, States]:
        """Parallel (or, with ``chunk``, chunkwise) form.

        Args:
            x: (B, T, width) token embeddings.
            positions: (B, T) absolute token indices.
            resets: (B, T) bool, the state entering token t is zeroed.
            states: each layer's state before token 0.
            chunk: tokens per chunk; None runs all T at once.

        Returns:
            (B, T, width) outputs and each layer's state after the last token.
        """
        out = {}
        for i, layer in enumerate(self.layers):
            x, out[f"s{i}"] = layer(x, positions, resets, states[f"s{i}"], chunk)
        return self.norm(x), out

    def step(
        self, x: Tensor, position: Tensor, is_first: Tensor, states: States
    ) -> tuple[Tensor, States]:
        """Recurrent form for one token: x (B, width), position (B,), is_first (B,)."""
        out = {}
        for i, layer in enumerate(self.layers):
            x, out[f"s{i}"] = layer.step(x, position, is_first, states[f"s{i}"])
        return self.norm(x), out

    def forward_pop(
        self,
        x: Tensor,
        positions: Tensor,
        resets: Tensor,
        states: States,
        queries: Tensor,
        query_positions: Tensor,
        block: int,
    ) -> tuple[Tensor, Tensor, States]:
        """REM's parallel training path: real tokens and every block's prediction tokens at once.

        Equal to the sequential definition (``tests/model/test_retnet.py``): for
        each block n, run ``queries[:, n]`` from the current states and drop the
        states they would give, then run the block's real tokens to update them.

        Args:
            x: (B, T, width) real tokens, T a multiple of ``block``.
            positions: (B, T) their absolute indices.
            resets: (B, T) bool, the state entering token t is zeroed.
            states: each layer's state before token 0.
            queries: (B, T / block, P, width) prediction tokens per block.
            query_positions: (B, T / block, P) their absolute indices.
            block: real tokens per block.

        Returns:
            (B, T, width) and (B, T / block, P, width) outputs, and the states after
            the real tokens: the prediction tokens never change them.
        """
        out = {}
        for i, layer in enumerate(self.layers):
            x, queries, out[f"s{i}"] = layer.forward_pop(
                x, positions, resets, states[f"s{i}"], queries, query_positions, block
            )
        return self.norm(x), self.norm(queries), out
