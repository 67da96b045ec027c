"""Transformer backbone: STORM's one-token-per-frame model with a fixed-size KV cache.

Reference: Zhang et al., "STORM: Efficient Stochastic Transformer based World
Models for Reinforcement Learning" (NeurIPS 2023): each frame's latent and
action become one token; 2 post-LN blocks of width 512 with 8 heads, FFN 1024,
dropout 0.1; training windows of 64 frames.

Two changes make it a served, resettable simulator rather than a training-time
model, and both keep the parallel and recurrent forms equal:

- Attention looks back at most ``window`` tokens, and only within the current
  episode. The recurrent form keeps each layer's keys and values in a ring
  buffer of ``window`` slots (fixed shapes, slot ``pos % window`` written by a
  one-hot blend), so a step costs the same at step 10 or step 10 million, and
  each row of a batch resets on its own.
- Positions are rotary (RoPE) instead of STORM's learned absolute table, which
  only covers 64 positions: attention then depends on how far back a token is,
  never on how long the episode has run. Angles are computed from small
  relative offsets, so precision does not decay over long dreams.

State per layer l: ``k{l}``, ``v{l}`` (window, heads, head_dim); shared:
``slot_pos`` (window,), the position each slot was written at, -1 if empty.
The current position is ``slot_pos.max() + 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from wmsim.model.backbones.base import SequenceBackbone, State, TensorSpec, input_projection, reset
from wmsim.model.networks import rotate


@dataclass(frozen=True)
class TransformerConfig:
    """STORM's sizes by default."""

    width: int = 512
    """Token width, which is also the output size."""
    layers: int = 2
    """Transformer blocks."""
    heads: int = 8
    """Attention heads; width / heads must be even (rotary pairs)."""
    ffn: int = 1024
    """Hidden size of each block's feed-forward layer."""
    window: int = 64
    """Tokens a query can see, itself included (STORM's training length)."""
    dropout: float = 0.1
    """Dropout on each block's attention and feed-forward outputs."""
    rope_base: float = 10_000.0
    """Base of the rotary frequencies."""


class Block(nn.Module):
    """Post-LN block (STORM): attention -> dropout -> residual -> LN; FFN likewise."""

    def __init__(self, config: TransformerConfig, *, device=None, dtype=None):
        super().__init__()
        d = config.width
        kw = {"device": device, "dtype": dtype}
        self.heads, self.head_dim = config.heads, d // config.heads
        self.qkv = nn.Linear(d, 3 * d, bias=False, **kw)
        self.out = nn.Linear(d, d, bias=False, **kw)
        self.norm1 = nn.LayerNorm(d, **kw)
        self.ffn = nn.Sequential(
            nn.Linear(d, config.ffn, **kw), nn.ReLU(), nn.Linear(config.ffn, d, **kw)
        )
        self.norm2 = nn.LayerNorm(d, **kw)
        self.dropout = nn.Dropout(config.dropout)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (..., d) -> q, k, v (..., heads, head_dim)."""
        q, k, v = self.qkv(x).chunk(3, -1)
        shape = (*x.shape[:-1], self.heads, self.head_dim)
        return q.reshape(shape), k.reshape(shape), v.reshape(shape)

    def finish(self, x: Tensor, attended: Tensor) -> Tensor:
        """Residuals and feed-forward around the attention output (..., heads, head_dim)."""
        x = self.norm1(x + self.dropout(self.out(attended.flatten(-2))))
        return self.norm2(x + self.dropout(self.ffn(x)))


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """q (B, T, H, d), k and v (B, S, H, d), mask (B, T, S) -> (B, T, H, d)."""
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
    return torch.einsum("bhts,bshd->bthd", torch.softmax(scores, -1), v)


class TransformerBackbone(SequenceBackbone):
    """STORM's transformer with windowed, per-episode attention and a ring-buffer cache."""

    def __init__(self, config: TransformerConfig, input_dim: int, *, device=None, dtype=None):
        super().__init__()
        if config.width % (2 * config.heads):
            raise ValueError(f"width {config.width} must split into {config.heads} even heads")
        self.config, self.input_dim, self.output_dim = config, input_dim, config.width
        kw = {"device": device, "dtype": dtype}
        self.embed = input_projection(input_dim, config.width, bias=True, **kw)
        self.blocks = nn.ModuleList(Block(config, **kw) for _ in range(config.layers))
        half = config.width // config.heads // 2
        inv_freq = config.rope_base ** (-torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def state_spec(self) -> dict[str, TensorSpec]:
        """k{l}, v{l}: (window, heads, head_dim) per layer; slot_pos: (window,) int64."""
        c = self.config
        kv = TensorSpec((c.window, c.heads, c.width // c.heads), torch.float32)
        spec = {f"{kind}{layer}": kv for layer in range(c.layers) for kind in "kv"}
        spec["slot_pos"] = TensorSpec((c.window,), torch.int64)
        return spec

    def initial_state(self, batch_size: int, device=None, dtype=None) -> State:
        """Empty cache: zero keys and values, every slot_pos -1."""
        state = super().initial_state(batch_size, device, dtype)
        state["slot_pos"] = state["slot_pos"] - 1
        return state

    def step(self, x: Tensor, is_first: Tensor, state: State) -> tuple[Tensor, State]:
        """One token: x (B, D), is_first (B,) -> h (B, width), next state; writes one slot."""
        window = self.config.window
        state = reset(state, self.initial_state(x.shape[0], x.device, x.dtype), is_first)
        position = state["slot_pos"].max(-1).values + 1  # (B,)
        slots = torch.arange(window, device=x.device)
        write = slots.unsqueeze(0) == (position % window).unsqueeze(1)  # (B, W)
        slot_pos = torch.where(write, position.unsqueeze(1), state["slot_pos"])
        valid = slot_pos >= 0
        offset = torch.where(valid, slot_pos - position.unsqueeze(1), 0)  # (B, W), <= 0
        h, next_state = self.embed(x), {"slot_pos": slot_pos}
        blend = write[:, :, None, None]
        for layer, block in enumerate(self.blocks):
            q, k, v = block.project(h)  # (B, H, d)
            keys = torch.where(blend, k.unsqueeze(1), state[f"k{layer}"])  # (B, W, H, d)
            values = torch.where(blend, v.unsqueeze(1), state[f"v{layer}"])
            next_state[f"k{layer}"], next_state[f"v{layer}"] = keys, values
            # the query sits at offset 0; each key is rotated by how far back it is
            rotated = rotate(keys, offset.unsqueeze(-1), self.inv_freq)
            attended = attend(q.unsqueeze(1), rotated, values, valid.unsqueeze(1))
            h = block.finish(h, attended.squeeze(1))
        return h, next_state

    def forward(self, x: Tensor, is_first: Tensor, state: State) -> tuple[Tensor, State]:
        """Parallel form: x (B, T, D), is_first (B, T) -> h (B, T, width), final state.

        Queries see the cached slots and the chunk's own tokens, masked to the
        same episode and the last ``window`` positions, exactly as step would.
        """
        length, window = x.shape[1], self.config.window
        t = torch.arange(length, device=x.device)
        slot_pos = state["slot_pos"]  # (B, W)
        start = slot_pos.max(-1).values + 1  # (B,) position of the chunk's first token
        # the latest episode start at or before t inside the chunk, -1 if none
        # (a masked max rather than cummax, which ONNX lacks; T x T is small)
        starts = torch.where(is_first, t, -1).unsqueeze(1)  # (B, 1, T)
        last_reset = torch.where(t.unsqueeze(1) >= t, starts, -1).amax(-1)  # (B, T)
        fresh = last_reset >= 0
        position = torch.where(fresh, t - last_reset, start.unsqueeze(1) + t)  # (B, T)

        same_episode = last_reset.unsqueeze(2) == last_reset.unsqueeze(1)
        behind = t.unsqueeze(1) - t.unsqueeze(0)  # (T, T): how far key j is behind query t
        chunk_mask = same_episode & (behind >= 0) & (behind < window)
        cache_age = position.unsqueeze(2) - slot_pos.unsqueeze(1)  # (B, T, W)
        cache_mask = ~fresh.unsqueeze(2) & (slot_pos >= 0).unsqueeze(1) & (cache_age < window)
        mask = torch.cat([cache_mask, chunk_mask], -1)  # (B, T, W + T)

        # rotary angles from small numbers: shift the cached episode's positions by its start
        base = (start - window).unsqueeze(1)
        query_pos = torch.where(fresh, position, position - base)
        cache_pos = torch.where(slot_pos >= 0, slot_pos - base, 0)
        key_pos = torch.cat([cache_pos, query_pos], 1)

        h, chunk_keys, chunk_values = self.embed(x), [], []
        for layer, block in enumerate(self.blocks):
            q, k, v = block.project(h)  # (B, T, H, d)
            keys = torch.cat([state[f"k{layer}"], k], 1)
            values = torch.cat([state[f"v{layer}"], v], 1)
            q = rotate(q, query_pos.unsqueeze(-1), self.inv_freq)
            keys = rotate(keys, key_pos.unsqueeze(-1), self.inv_freq)
            h = block.finish(h, attend(q, keys, values, mask))
            chunk_keys.append(k)
            chunk_values.append(v)
        final = self._final_state(state, position, last_reset, fresh, chunk_keys, chunk_values)
        return h, final

    def _final_state(self, state, position, last_reset, fresh, chunk_keys, chunk_values) -> State:
        """The ring after writing every token of the chunk in turn, computed in one go."""
        window, length = self.config.window, position.shape[1]
        slots = torch.arange(window, device=position.device)
        t = torch.arange(length, device=position.device)
        in_last_episode = last_reset == last_reset[:, -1:]  # (B, T)
        writes = in_last_episode.unsqueeze(2) & ((position % window).unsqueeze(2) == slots)
        latest = torch.where(writes, t[None, :, None], -1).max(1).values  # (B, W)
        written = latest >= 0
        keep = ~written & ~fresh[:, -1:]  # untouched, and no episode started in the chunk
        index = latest.clamp(min=0)
        slot_pos = torch.where(
            written,
            position.gather(1, index),
            torch.where(keep, state["slot_pos"], -1),
        )
        final = {"slot_pos": slot_pos}
        gather_index = index[:, :, None, None].expand(-1, -1, *chunk_keys[0].shape[2:])
        for layer in range(len(self.blocks)):
            for kind, chunk in (("k", chunk_keys[layer]), ("v", chunk_values[layer])):
                old = state[f"{kind}{layer}"]
                new = chunk.gather(1, gather_index)
                kept = torch.where(keep[:, :, None, None], old, torch.zeros_like(old))
                final[f"{kind}{layer}"] = torch.where(written[:, :, None, None], new, kept)
        return final
