"""Mamba-2 backbone: DRAMA's sequence model, a stack of Mamba-2 (SSD) mixers.

References: Dao & Gu, "Transformers are SSMs" (ICML 2024) for Mamba-2's
state-space duality (SSD); Wang et al., "DRAMA: Mamba-Enabled Model-Based
Reinforcement Learning Is Sample and Parameter Efficient" (ICLR 2025) for the
sizes: 2 pre-norm residual blocks of width 512 with no MLP, d_state 16,
expand 2, head size 64 (so 16 heads), conv width 4, and a final RMSNorm.

Each mixer projects a token to [z, x, B, C, dt], runs x, B, C through a
depthwise causal conv (width 4) and SiLU, then per head h (A_h = -exp(A_log_h)):

    dt_t = softplus(dt_t + dt_bias_h)
    H_t  = exp(dt_t A_h) H_{t-1} + dt_t x_t B_t^T       H: (head size, d_state)
    y_t  = H_t C_t + D_h x_t
    out  = out_proj(RMSNorm(y * silu(z)))

The parallel form is the chunked SSD algorithm in plain PyTorch (no loop over
time steps): within a chunk a masked "attention" with decays exp(segment sums
of dt A), across chunks one small matrix of chunk-to-chunk decays applied to
the chunk end states. The step form is the recurrence above with the conv's
last inputs and H as state; H is kept in at least fp32.

Episode starts (``episode_resets``, on by default) cut both the SSM state and
the conv window, so nothing before an episode start reaches it, in either
form. DRAMA itself lets state flow across episode ends inside a training
window; ``episode_resets=False`` reproduces that (``is_first`` is then
ignored, in both forms).

State per layer l: ``conv{l}`` (conv width - 1, conv channels), the conv's
last inputs, oldest first; ``ssm{l}`` (heads, head size, d_state).

On CUDA, with mamba-ssm and causal-conv1d installed, the parallel form runs
their fused kernels instead of the conv and scan here (mamba_fused.py, same
signatures; ``kernels_for`` picks). Exports always trace the code here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wmsim.model.backbones import mamba_fused
from wmsim.model.backbones.base import SequenceBackbone, State, TensorSpec, input_projection
from wmsim.model.decays import decay_from_start, decay_matrix


@dataclass(frozen=True)
class MambaConfig:
    """DRAMA's sizes by default."""

    width: int = 512
    """Token width (d_model), which is also the output size."""
    layers: int = 2
    """Mamba-2 blocks (pre-norm residual, no MLP)."""
    state: int = 16
    """SSM state size per head (d_state; DRAMA overrides Mamba-2's 128)."""
    heads: int = 16
    """SSM heads; the head size is expand * width / heads (DRAMA: 64)."""
    expand: int = 2
    """Inner width over token width."""
    conv: int = 4
    """Width of the depthwise causal convolution."""
    chunk: int = 32
    """Steps per chunk of the parallel scan. Exact for any size; only speed depends on it
    (DRAMA's GPU kernels use 256; 32 is the fastest on a CPU, see benchmarks/scan.py)."""
    dt_min: float = 1e-3
    """Smallest initial step size."""
    dt_max: float = 0.1
    """Largest initial step size."""
    a_min: float = 1.0
    """Smallest initial decay rate -A."""
    a_max: float = 16.0
    """Largest initial decay rate -A."""
    episode_resets: bool = True
    """Episode starts cut the SSM state and the conv window; False lets state flow (DRAMA)."""


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
    """Chunked SSD: ``H_t = exp(dt_t a) (1 - r_t) H_{t-1} + dt_t x_t b_t^T``, ``y_t = H_t c_t``.

    Args:
        x: (B, T, heads, P) inputs.
        dt: (B, T, heads) positive step sizes.
        a: (heads,) negative decay rates.
        b: (B, T, N) input projections, shared by the heads.
        c: (B, T, N) output projections, shared by the heads.
        resets: (B, T) bool, the state entering step t is zeroed.
        initial: (B, heads, P, N) state before step 0.
        chunk: steps per chunk.

    Returns:
        y (B, T, heads, P) and the state after the last step, (B, heads, P, N).
    """
    batch, length, heads, _ = x.shape
    pad = -length % chunk
    chunks = (length + pad) // chunk

    def chunked(t: Tensor) -> Tensor:  # (B, T, ...) -> (B, chunks, chunk, ...), zero-padded
        t = F.pad(t, [0, 0] * (t.dim() - 2) + [0, pad])
        return t.reshape(batch, chunks, chunk, *t.shape[2:])

    # padding steps have dt = 0: they decay nothing and add nothing
    x = chunked(x).permute(0, 3, 1, 2, 4)  # (B, heads, chunks, chunk, P)
    dt = chunked(dt).permute(0, 3, 1, 2)  # (B, heads, chunks, chunk)
    b, c = chunked(b).unsqueeze(1), chunked(c).unsqueeze(1)  # (B, 1, chunks, chunk, N)
    log_a = dt * a[:, None, None]
    r = chunked(resets).unsqueeze(1)  # (B, 1, chunks, chunk)
    # dt scales each input; it multiplies the narrower operand (the chunk x chunk weights, or
    # b with N columns) rather than x with P, which saves a pass over the widest tensor

    # 1. within each chunk: a causal "attention" of c against b, weighted by the decays
    within = decay_matrix(log_a, r)  # (B, heads, chunks, chunk[t], chunk[s])
    y = (within * (c @ b.transpose(-1, -2)) * dt.unsqueeze(-2)) @ x  # (B, heads, chunks, chunk, P)
    # 2. the state each chunk adds by its end
    added = x.transpose(-1, -2) @ ((within[..., -1, :] * dt).unsqueeze(-1) * b)  # (.., P, N)
    # 3. the state entering each chunk: the initial state and the added ones, decayed
    # through whole chunks (any reset in a chunk stops everything from before it)
    through = F.pad(log_a.sum(-1), (1, 0))  # (B, heads, chunks + 1)
    cut = F.pad(r.any(-1), (1, 0))  # (B, 1, chunks + 1)
    sources = torch.cat([initial.unsqueeze(2), added], 2)  # (B, heads, chunks + 1, P, N)
    entering = torch.einsum("bhij,bhjpn->bhipn", decay_matrix(through, cut), sources)
    # 4. what the entering state contributes at each step of its chunk
    from_start = decay_from_start(log_a, r)  # (B, heads, chunks, chunk)
    y = y + (from_start.unsqueeze(-1) * c) @ entering[:, :, :-1].transpose(-1, -2)
    y = y.permute(0, 2, 3, 1, 4).reshape(batch, chunks * chunk, heads, -1)
    return y[:, :length], entering[:, :, -1]


def causal_conv(
    x: Tensor, window: Tensor, weight: Tensor, bias: Tensor, is_first: Tensor
) -> tuple[Tensor, Tensor]:
    """Depthwise causal convolution continuing from ``window``, blind to earlier episodes.

    Args:
        x: (B, T, C) inputs.
        window: (B, K - 1, C) the inputs before x, oldest first.
        weight: (C, K) taps, oldest first.
        bias: (C,).
        is_first: (B, T) bool; a tap reaching back before the latest episode start reads 0.

    Returns:
        (B, T, C) outputs and the next window (B, K - 1, C), zero before the last start.
    """
    taps = weight.shape[1]
    inputs = torch.cat([window.to(x.dtype), x], 1)  # (B, K - 1 + T, C)
    out = F.conv1d(inputs.transpose(1, 2), weight.unsqueeze(1), bias, groups=weight.shape[0])
    out = out.transpose(1, 2)  # (B, T, C)
    # episode index of every input; the window belongs to the episode x starts in
    episode = F.pad(is_first.long().cumsum(1), (taps - 1, 0))  # (B, K - 1 + T)
    current = episode[:, taps - 1 :]
    # few outputs have taps reaching back across a start: take back what those taps added
    crossing = episode.unfold(1, taps, 1) != current.unsqueeze(-1)  # (B, T, K)
    rows, steps, tap = crossing.nonzero(as_tuple=True)
    added = (inputs[rows, steps + tap] * weight[:, tap].T).to(out.dtype)  # (crossings, C)
    out = out.index_put((rows, steps), -added, accumulate=True)
    keep = (episode[:, -(taps - 1) :] == current[:, -1:]).unsqueeze(-1)
    return out, inputs[:, -(taps - 1) :] * keep


KERNELS = {
    "reference": (causal_conv, ssd_scan),
    "fused": (mamba_fused.causal_conv, mamba_fused.ssd_scan),
}
"""The parallel form's (conv, scan) pairs: this file's PyTorch, or the CUDA kernels."""


def kernels_for(device: torch.device, channels: int, taps: int) -> str:
    """The KERNELS entry for a conv of ``channels`` x ``taps`` on ``device``.

    "fused" on CUDA where both packages imported and causal_conv1d takes the conv;
    never while torch.export traces (ONNX export goes through it), since the fused
    kernels don't export: a CUDA model exports the reference too.
    """
    if torch.compiler.is_exporting() or torch.jit.is_tracing():
        return "reference"
    fused = mamba_fused.AVAILABLE and mamba_fused.supports(channels, taps)
    return "fused" if device.type == "cuda" and fused else "reference"


class Mamba2Mixer(nn.Module):
    """One Mamba-2 mixer (ngroups 1): in_proj, causal conv, SSD, gated RMSNorm, out_proj."""

    def __init__(self, config: MambaConfig, *, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.config = config
        self.inner = config.expand * config.width
        if self.inner % config.heads:
            raise ValueError(f"expand * width ({self.inner}) must divide into {config.heads} heads")
        self.head_size = self.inner // config.heads
        self.conv_channels = self.inner + 2 * config.state  # x, B, C
        self.in_proj = nn.Linear(
            config.width, self.inner + self.conv_channels + config.heads, bias=False, **kw
        )
        self.conv = nn.Conv1d(
            self.conv_channels, self.conv_channels, config.conv, groups=self.conv_channels, **kw
        )
        # initial step sizes log-uniform in [dt_min, dt_max], stored as softplus^-1
        dt = torch.exp(
            torch.rand(config.heads, **kw) * math.log(config.dt_max / config.dt_min)
            + math.log(config.dt_min)
        ).clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.a_log = nn.Parameter(
            torch.empty(config.heads, **kw).uniform_(config.a_min, config.a_max).log()
        )
        self.d = nn.Parameter(torch.ones(config.heads, **kw))
        self.norm = nn.RMSNorm(self.inner, eps=1e-5, **kw)
        self.out_proj = nn.Linear(self.inner, config.width, bias=False, **kw)

    def _split(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """u (..., width) -> z (..., inner), xBC (..., conv channels), dt (..., heads)."""
        return self.in_proj(u).split([self.inner, self.conv_channels, self.config.heads], -1)

    def _ssm_inputs(self, xbc: Tensor, dt: Tensor) -> tuple[Tensor, ...]:
        """Conv outputs and raw dt -> x (..., heads, P), B, C (..., N), dt (..., heads), in fp32+.

        The SSM runs in at least fp32 whatever the model's dtype: its decays compound.
        """
        kind = torch.promote_types(xbc.dtype, torch.float32)
        x, b, c = F.silu(xbc).to(kind).split([self.inner, self.config.state, self.config.state], -1)
        dt = F.softplus(dt.to(kind) + self.dt_bias.to(kind))
        return x.unflatten(-1, (self.config.heads, self.head_size)), b, c, dt

    def _output(self, y: Tensor, x: Tensor, z: Tensor) -> Tensor:
        """SSM output y and input x (..., heads, P), gate z (..., inner) -> (..., width)."""
        y = (y + self.d.to(y.dtype).unsqueeze(-1) * x).flatten(-2).to(z.dtype)
        return self.out_proj(self.norm(y * F.silu(z)))

    def forward(
        self, u: Tensor, is_first: Tensor, window: Tensor, ssm: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Parallel form: u (B, T, width), is_first (B, T) -> out (B, T, width), window, ssm."""
        z, xbc, dt = self._split(u)
        weight = self.conv.weight.squeeze(1)  # (C, K)
        conv, scan = KERNELS[kernels_for(xbc.device, *weight.shape)]
        xbc, window = conv(xbc, window, weight, self.conv.bias, is_first)
        # the scan's matmuls too stay fp32 under bf16 autocast: its decays compound
        with torch.autocast(u.device.type, enabled=False):
            x, b, c, dt = self._ssm_inputs(xbc, dt)
            a = -self.a_log.to(dt.dtype).exp()
            y, ssm = scan(x, dt, a, b, c, is_first, ssm.to(x.dtype), self.config.chunk)
        return self._output(y, x, z), window, ssm

    def step(
        self, u: Tensor, is_first: Tensor, window: Tensor, ssm: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One step: u (B, width), is_first (B,) -> out (B, width), window, ssm."""
        z, xbc, dt = self._split(u)
        keep = (~is_first).to(u.dtype)
        inputs = torch.cat(
            [window.to(xbc.dtype) * keep[:, None, None], xbc.unsqueeze(1)], 1
        )  # (B, K, C)
        xbc = (inputs * self.conv.weight.squeeze(1).T).sum(1) + self.conv.bias
        x, b, c, dt = self._ssm_inputs(xbc, dt)
        decay = (dt * -self.a_log.to(dt.dtype).exp()).exp() * keep.to(dt.dtype)[:, None]
        ssm = decay[..., None, None] * ssm.to(x.dtype) + torch.einsum("bh,bhp,bn->bhpn", dt, x, b)
        y = torch.einsum("bhpn,bn->bhp", ssm, c)
        return self._output(y, x, z), inputs[:, 1:], ssm


class MambaBackbone(SequenceBackbone):
    """Pre-norm residual Mamba-2 blocks without MLPs and a final RMSNorm (DRAMA)."""

    def __init__(self, config: MambaConfig, input_dim: int, *, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.config, self.input_dim, self.output_dim = config, input_dim, config.width
        self.embed = input_projection(input_dim, config.width, bias=False, **kw)
        self.norms = nn.ModuleList(
            nn.RMSNorm(config.width, eps=1e-5, **kw) for _ in range(config.layers)
        )
        self.mixers = nn.ModuleList(Mamba2Mixer(config, **kw) for _ in range(config.layers))
        self.final_norm = nn.RMSNorm(config.width, eps=1e-5, **kw)
        for mixer in self.mixers:  # residual branches start small in deep stacks (Mamba)
            with torch.no_grad():
                mixer.out_proj.weight /= math.sqrt(config.layers)

    def state_spec(self) -> dict[str, TensorSpec]:
        """conv{l}: (conv - 1, conv channels); ssm{l}: (heads, head size, state), fp32."""
        mixer, c = self.mixers[0], self.config
        spec = {}
        for layer in range(c.layers):
            spec[f"conv{layer}"] = TensorSpec((c.conv - 1, mixer.conv_channels), torch.float32)
            spec[f"ssm{layer}"] = TensorSpec((c.heads, mixer.head_size, c.state), torch.float32)
        return spec

    def _resets(self, is_first: Tensor) -> Tensor:
        return is_first if self.config.episode_resets else torch.zeros_like(is_first)

    def forward(self, x: Tensor, is_first: Tensor, state: State) -> tuple[Tensor, State]:
        """Parallel form: x (B, T, D), is_first (B, T) -> h (B, T, width), final state."""
        is_first, h, out = self._resets(is_first), self.embed(x), {}
        for layer, (norm, mixer) in enumerate(zip(self.norms, self.mixers, strict=True)):
            delta, out[f"conv{layer}"], out[f"ssm{layer}"] = mixer(
                norm(h), is_first, state[f"conv{layer}"], state[f"ssm{layer}"]
            )
            h = h + delta
        return self.final_norm(h), out

    def step(self, x: Tensor, is_first: Tensor, state: State) -> tuple[Tensor, State]:
        """One step: x (B, D), is_first (B,) -> h (B, width), next state."""
        is_first, h, out = self._resets(is_first), self.embed(x), {}
        for layer, (norm, mixer) in enumerate(zip(self.norms, self.mixers, strict=True)):
            delta, out[f"conv{layer}"], out[f"ssm{layer}"] = mixer.step(
                norm(h), is_first, state[f"conv{layer}"], state[f"ssm{layer}"]
            )
            h = h + delta
        return self.final_norm(h), out
