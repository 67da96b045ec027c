"""Building blocks shared by the models: conv encoder and decoder, MLPs, rotary embedding.

Also the masked mean that losses over padded steps reduce with.

The conv pair follows STORM (Zhang et al. 2023): four 4x4 stride-2 convolutions
with BatchNorm and ReLU, channels depth x (1, 2, 4, 8), 64 -> 4 pixels, and the
mirror image with transposed convolutions. DreamerV2's variant is the same
shape with ELU and no normalization (set by its preset).
"""

from __future__ import annotations

from copy import deepcopy

import torch
from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "elu": nn.ELU, "silu": nn.SiLU}
NORMS: dict[str, type[nn.Module]] = {"layer": nn.LayerNorm, "rms": nn.RMSNorm}


def hidden_layers(
    inputs: int, width: int, layers: int, *, norm: str, activation: str, device=None, dtype=None
) -> list[nn.Module]:
    """layers x [Linear (no bias), norm, activation]: (..., inputs) -> (..., width)."""
    kw = {"device": device, "dtype": dtype}
    body: list[nn.Module] = []
    for i in range(layers):
        body += [
            nn.Linear(inputs if i == 0 else width, width, bias=False, **kw),
            NORMS[norm](width, **kw),
            ACTIVATIONS[activation](),
        ]
    return body


def mlp(
    inputs: int, outputs: int, width: int, layers: int, norm: str, activation: str
) -> nn.Module:
    """:func:`hidden_layers`, then a linear output: (..., inputs) -> (..., outputs)."""
    body = hidden_layers(inputs, width, layers, norm=norm, activation=activation)
    return nn.Sequential(*body, nn.Linear(width if layers else inputs, outputs))


def rotate(x: Tensor, positions: Tensor, inv_freq: Tensor) -> Tensor:
    """Rotary embedding: rotate pairs (x[i], x[i + d/2]) of x (..., d) by positions (...) * freq."""
    angles = positions.to(x.dtype).unsqueeze(-1) * inv_freq  # (..., d/2)
    cos, sin = torch.cos(angles), torch.sin(angles)
    first, second = x.chunk(2, -1)
    return torch.cat([first * cos - second * sin, first * sin + second * cos], -1)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x over the entries where mask is set (0 if there are none)."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


class ConvEncoder(nn.Module):
    """Frames (N, 3, 64, 64) in [0, 1] -> embeddings (N, 16 * 8 * depth)."""

    def __init__(self, depth: int, *, norm: bool, activation: str, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        layers: list[nn.Module] = []
        channels = [3, depth, 2 * depth, 4 * depth, 8 * depth]
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=not norm, **kw))
            if norm:
                layers.append(nn.BatchNorm2d(c_out, **kw))
            layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.output_dim = 16 * 8 * depth

    def forward(self, frames: Tensor) -> Tensor:
        """(N, 3, 64, 64) -> (N, output_dim)."""
        return self.net(frames)


class ConvDecoder(nn.Module):
    """Vectors (N, input_dim) -> frames (N, 3, 64, 64); targets are in [0, 1].

    With ``sigmoid`` (DRAMA) the output is squashed into [0, 1], so black
    backgrounds and saturated colours are reached exactly; without (STORM) it
    is unbounded.
    """

    def __init__(
        self,
        input_dim: int,
        depth: int,
        *,
        norm: bool,
        activation: str,
        sigmoid: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        act = ACTIVATIONS[activation]
        stem: list[nn.Module] = [nn.Linear(input_dim, 8 * depth * 16, bias=not norm, **kw)]
        stem += [nn.BatchNorm1d(8 * depth * 16, **kw)] if norm else []
        layers: list[nn.Module] = [*stem, act(), nn.Unflatten(1, (8 * depth, 4, 4))]
        channels = [8 * depth, 4 * depth, 2 * depth, depth]
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=not norm, **kw))
            if norm:
                layers.append(nn.BatchNorm2d(c_out, **kw))
            layers.append(act())
        layers.append(nn.ConvTranspose2d(depth, 3, 4, 2, 1, **kw))
        if sigmoid:
            layers.append(nn.Sigmoid())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """(N, input_dim) -> (N, 3, 64, 64)."""
        return self.net(x)

    def for_one_hot(self, groups: int, classes: int) -> ConvDecoder:
        """A copy for inputs one-hot per group: its first layer gathers (:class:`OneHotLinear`).

        The same frames from such inputs, for a fraction of the first layer's work (about a
        tenth of a decode at ``depth`` 16, a fifth at 8).
        """
        copy = deepcopy(self)
        copy.net[0] = OneHotLinear(self.net[0], groups, classes)
        return copy


class OneHotLinear(nn.Module):
    """``linear`` for inputs that are one-hot in each of ``groups`` groups of ``classes``.

    Its product with such an input is the sum of the ``groups`` weight columns the
    ones select: gathering and adding them takes ``groups`` rows of work where the
    matrix product takes ``groups * classes``. On any other input it computes
    something else, so it stands in only where inputs are sampled latents.
    """

    def __init__(self, linear: nn.Linear, groups: int, classes: int):
        super().__init__()
        if linear.in_features != groups * classes:
            raise ValueError(f"{linear} does not take {groups} groups of {classes} classes")
        self.groups, self.classes = groups, classes
        self.rows = nn.Parameter(linear.weight.detach().t().contiguous())  # (groups * classes, out)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())
        self.register_buffer("offsets", torch.arange(groups) * classes, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """(N, groups * classes) one-hot per group -> (N, out)."""
        index = x.unflatten(-1, (self.groups, self.classes)).argmax(-1) + self.offsets
        y = self.rows[index].sum(-2)
        return y if self.bias is None else y + self.bias


class MLPHead(nn.Module):
    """layers x [Linear, LayerNorm, activation], then a linear output, zero-initialized.

    A zero output layer starts reward and value heads at exactly 0 (DreamerV3),
    rather than at a random scalar the model must first unlearn.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        *,
        width: int,
        layers: int,
        activation: str,
        device=None,
        dtype=None,
    ):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        body = hidden_layers(input_dim, width, layers, norm="layer", activation=activation, **kw)
        self.body = nn.Sequential(*body)
        self.out = nn.Linear(width if layers else input_dim, output_dim, **kw)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(..., input_dim) -> (..., output_dim)."""
        return self.out(self.body(x))
