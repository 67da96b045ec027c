"""S5 backbone: stacked diagonal state-space layers with a resettable parallel scan.

References: Smith, Warrington & Linderman, "Simplified State Space Layers for
Sequence Modeling" (ICLR 2023) for S5; Lu et al., "Structured State Space
Models for In-Context Reinforcement Learning" (NeurIPS 2023) for the reset
operator and the layer used there: x -> S5 -> GELU -> GLU -> + x, 4 layers of
width 256 with a state of 256 (128 conjugate pairs), no norms.

Per layer, a diagonal complex state x (P/2 modes; conjugate symmetry gives
the other half) is initialised from the eigenvalues of HiPPO-LegS's normal
part (HiPPO-N) and discretised by zero-order hold with a learned step per mode:

    Lambda_bar = exp(Lambda dt),  B_bar = (Lambda_bar - 1) / Lambda * B
    x_t = Lambda_bar * x_{t-1} * (1 - is_first_t) + B_bar u_t
    y_t = 2 Re(C x_t) + D u_t

Complex numbers are held as (real, imaginary) pairs of real tensors, so
nothing here needs a complex dtype and the step exports to ONNX.

The parallel form is an associative scan over elements (a, b, c) = (Lambda_bar,
B_bar u_t, is_first_t) with Lu et al.'s reset operator, in logarithmic depth
(odd-even recursion, linear work and memory). The carried state enters as a
first element (1, x_0, 0), as in their code.

State per layer l: ``x{l}`` (2, P/2): real and imaginary parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wmsim.model.backbones.base import SequenceBackbone, State, TensorSpec, input_projection


@dataclass(frozen=True)
class S5Config:
    """Lu et al.'s S5 sizes by default."""

    width: int = 256
    """Token width (H), which is also the output size."""
    layers: int = 4
    """S5 layers."""
    state: int = 256
    """State size P; P/2 complex modes are stored (conjugate symmetry)."""
    dt_min: float = 1e-3
    """Smallest initial step."""
    dt_max: float = 0.1
    """Largest initial step."""


Complex = tuple[Tensor, Tensor]
"""A complex tensor as (real part, imaginary part)."""


def cmul(a: Complex, b: Complex) -> Complex:
    """Complex product of (re, im) pairs."""
    return a[0] * b[0] - a[1] * b[1], a[0] * b[1] + a[1] * b[0]


Element = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]
"""A scan element (a_re, a_im, b_re, b_im, c): x = a * x_before + b, reset first if c."""


def reset_operator(earlier: Element, later: Element) -> Element:
    """Lu et al.'s associative operator: apply ``earlier``, then ``later``, unless it resets.

    (a_i, b_i, c_i) . (a_j, b_j, c_j) = (a_j a_i (1 - c_j) + a_j c_j,
                                         (a_j b_i + b_j)(1 - c_j) + b_j c_j,
                                         c_i (1 - c_j) + c_j)
    """
    a_i, b_i, c_i = earlier[:2], earlier[2:4], earlier[4]
    a_j, b_j, c_j = later[:2], later[2:4], later[4]
    keep = 1.0 - c_j
    a = [p * keep + q * c_j for p, q in zip(cmul(a_j, a_i), a_j, strict=True)]
    b = [(p + q) * keep + q * c_j for p, q in zip(cmul(a_j, b_i), b_j, strict=True)]
    return a[0], a[1], b[0], b[1], c_i * keep + c_j


def associative_scan(op, elements: Element) -> Element:
    """Inclusive scan of ``elements`` (tensors of shape (B, T, ...)) along dim 1 under ``op``.

    Odd-even recursion: combine neighbouring pairs, scan the half-length result,
    then fill in the even positions. Depth 2 log2 T, work and memory linear in T.
    """
    length = elements[0].shape[1]
    if length < 2:
        return elements
    pairs = op(
        tuple(e[:, 0 : length - 1 : 2] for e in elements), tuple(e[:, 1::2] for e in elements)
    )
    odd = associative_scan(op, pairs)  # scan results at positions 1, 3, 5, ...
    before = tuple(o[:, : (length - 1) // 2] for o in odd)  # the scan just before 2, 4, ...
    even = op(before, tuple(e[:, 2::2] for e in elements))
    out = []
    for first, evens, odds in zip(elements, even, odd, strict=True):
        evens = torch.cat([first[:, :1], evens], 1)  # positions 0, 2, 4, ...
        odds = F.pad(odds, [0, 0] * (odds.dim() - 2) + [0, evens.shape[1] - odds.shape[1]])
        out.append(torch.stack([evens, odds], 2).flatten(1, 2)[:, :length])
    return tuple(out)


def hippo_n(size: int) -> tuple[Tensor, Tensor]:
    """Eigen-decomposition of HiPPO-LegS's normal part: Lambda (size,) and V (size, size), complex.

    LegS: A[n, k] = -sqrt(2n + 1) sqrt(2k + 1) (n > k), -(n + 1) (n = k), 0 (n < k).
    Adding P P^T with P[n] = sqrt(n + 1/2) leaves -1/2 on the diagonal plus a skew-symmetric
    matrix S, whose eigenvalues come from the Hermitian -i S.
    """
    n = torch.arange(size, dtype=torch.float64)
    p = torch.sqrt(n + 0.5)
    legs = -torch.sqrt(2 * n + 1)[:, None] * torch.sqrt(2 * n + 1)[None, :]
    legs = torch.tril(legs, -1) - torch.diag(n + 1)
    normal = legs + p[:, None] * p[None, :]
    skew = normal - torch.diag(torch.diagonal(normal))
    imag, vectors = torch.linalg.eigh(skew.to(torch.complex128) * -1j)
    real = torch.diagonal(normal).mean()
    return torch.complex(real.expand(size), imag), vectors


class S5SSM(nn.Module):
    """One diagonal S5 state-space model, MIMO: (B, T, H) -> (B, T, H)."""

    def __init__(self, config: S5Config, *, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        h, p = config.width, config.state
        modes = p // 2
        eigenvalues, vectors = hippo_n(p)
        # conjugate symmetry: keep one of each pair of modes (eigh sorts, so the first half)
        eigenvalues, vectors = eigenvalues[:modes], vectors[:, :modes]  # (P/2,), (P, P/2)
        # LeCun-normal (fan-in P, as in S5's code), then into the eigenbasis
        b = torch.randn(p, h, dtype=torch.float64) / math.sqrt(p)
        b_tilde = vectors.conj().T @ b.to(torch.complex128)  # V^-1 B, (P/2, H)
        c = torch.complex(
            torch.randn(h, p, dtype=torch.float64), torch.randn(h, p, dtype=torch.float64)
        )
        c_tilde = (c * (1.0 / math.sqrt(p))) @ vectors  # C V, (H, P/2)

        def param(t: Tensor) -> nn.Parameter:
            return nn.Parameter(t.to(**kw) if dtype else t.float().to(device))

        self.lambda_re, self.lambda_im = param(eigenvalues.real), param(eigenvalues.imag)
        self.b_re, self.b_im = param(b_tilde.real), param(b_tilde.imag)
        self.c_re, self.c_im = param(c_tilde.real), param(c_tilde.imag)
        self.d = param(torch.randn(h, dtype=torch.float64))
        log_dt = torch.rand(modes, dtype=torch.float64) * math.log(config.dt_max / config.dt_min)
        self.log_dt = param(log_dt + math.log(config.dt_min))

    def discretize(self) -> tuple[Complex, Complex]:
        """Zero-order hold: Lambda_bar (P/2,) and B_bar (P/2, H), as (re, im) pairs."""
        dt = self.log_dt.exp()
        magnitude = (self.lambda_re * dt).exp()
        lambda_bar = (
            magnitude * torch.cos(self.lambda_im * dt),
            magnitude * torch.sin(self.lambda_im * dt),
        )
        # (Lambda_bar - 1) / Lambda, by multiplying with the conjugate of Lambda
        square = self.lambda_re.square() + self.lambda_im.square()
        minus_one = lambda_bar[0] - 1.0, lambda_bar[1]
        ratio = cmul(minus_one, (self.lambda_re / square, -self.lambda_im / square))
        b_bar = cmul((ratio[0][:, None], ratio[1][:, None]), (self.b_re, self.b_im))
        return lambda_bar, b_bar

    def _input(self, u: Tensor, b_bar: Complex) -> Complex:
        return u @ b_bar[0].T, u @ b_bar[1].T

    def _output(self, x: Complex, u: Tensor) -> Tensor:
        return 2.0 * (x[0] @ self.c_re.T - x[1] @ self.c_im.T) + self.d * u

    def forward(self, u: Tensor, is_first: Tensor, x0: Tensor) -> tuple[Tensor, Tensor]:
        """Parallel form: u (B, T, H), is_first (B, T), x0 (B, 2, P/2) -> y (B, T, H), x_T."""
        # The scan multiplies up to T decays: under bf16 autocast its error would compound, so
        # the layer runs in fp32 whatever the surrounding precision (as Mamba keeps its SSM state).
        kind = torch.promote_types(u.dtype, torch.float32)  # at least fp32 (tests run fp64)
        with torch.autocast(u.device.type, enabled=False):
            return self._forward(u.to(kind), is_first, x0.to(kind))

    def _forward(self, u: Tensor, is_first: Tensor, x0: Tensor) -> tuple[Tensor, Tensor]:
        lambda_bar, b_bar = self.discretize()
        bu = self._input(u, b_bar)  # (B, T, P/2) each
        a = [part.expand_as(bu[0]) for part in lambda_bar]
        c = is_first.to(u.dtype).unsqueeze(-1).expand_as(bu[0])
        # the carried state enters as a first element (1, x0, no reset)
        re0, im0 = x0[:, 0].unsqueeze(1), x0[:, 1].unsqueeze(1)  # (B, 1, P/2)
        zero = torch.zeros_like(re0)
        first = (torch.ones_like(re0), zero, re0, im0, zero)
        elements = tuple(torch.cat([f, e], 1) for f, e in zip(first, (*a, *bu, c), strict=True))
        _, _, x_re, x_im, _ = associative_scan(reset_operator, elements)
        x = x_re[:, 1:], x_im[:, 1:]
        return self._output(x, u), torch.stack([x[0][:, -1], x[1][:, -1]], 1)

    def step(self, u: Tensor, is_first: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """One step: u (B, H), is_first (B,), x (B, 2, P/2) -> y (B, H), next x."""
        lambda_bar, b_bar = self.discretize()
        keep = (~is_first).to(u.dtype).unsqueeze(-1)
        decayed = cmul(lambda_bar, (x[:, 0] * keep, x[:, 1] * keep))
        bu = self._input(u, b_bar)
        x = decayed[0] + bu[0], decayed[1] + bu[1]
        return self._output(x, u), torch.stack(x, 1)


class S5Layer(nn.Module):
    """x -> S5 -> GELU -> GLU (out1 * sigmoid(out2)) -> + x, no norms (Lu et al.'s PPO config)."""

    def __init__(self, config: S5Config, *, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.ssm = S5SSM(config, **kw)
        self.out1 = nn.Linear(config.width, config.width, **kw)
        self.out2 = nn.Linear(config.width, config.width, **kw)

    def _mix(self, y: Tensor, u: Tensor) -> Tensor:
        y = F.gelu(y)
        return u + self.out1(y) * torch.sigmoid(self.out2(y))

    def forward(self, u: Tensor, is_first: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """Parallel form: u (B, T, H) -> (B, T, H), final state."""
        y, x = self.ssm(u, is_first, x)
        return self._mix(y, u), x

    def step(self, u: Tensor, is_first: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """One step: u (B, H) -> (B, H), next state."""
        y, x = self.ssm.step(u, is_first, x)
        return self._mix(y, u), x


class S5Backbone(SequenceBackbone):
    """A stack of S5 layers, each reset by the same ``is_first`` flags."""

    def __init__(self, config: S5Config, input_dim: int, *, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        if config.state % 2:
            raise ValueError(
                f"the S5 state size must be even (conjugate pairs), got {config.state}"
            )
        self.config, self.input_dim, self.output_dim = config, input_dim, config.width
        self.embed = input_projection(input_dim, config.width, bias=False, **kw)
        self.stack = nn.ModuleList(S5Layer(config, **kw) for _ in range(config.layers))

    def state_spec(self) -> dict[str, TensorSpec]:
        """x{l}: (2, P/2), real and imaginary parts of layer l's state."""
        return {
            f"x{layer}": TensorSpec((2, self.config.state // 2), torch.float32)
            for layer in range(self.config.layers)
        }

    def forward(self, x: Tensor, is_first: Tensor, state: State) -> tuple[Tensor, State]:
        """Parallel form: x (B, T, D), is_first (B, T) -> h (B, T, width), final state."""
        h, out = self.embed(x), {}
        for layer, module in enumerate(self.stack):
            h, out[f"x{layer}"] = module(h, is_first, state[f"x{layer}"])
        return h, out

    def step(self, x: Tensor, is_first: Tensor, state: State) -> tuple[Tensor, State]:
        """One step: x (B, D), is_first (B,) -> h (B, width), next state."""
        h, out = self.embed(x), {}
        for layer, module in enumerate(self.stack):
            h, out[f"x{layer}"] = module.step(h, is_first, state[f"x{layer}"])
        return h, out
