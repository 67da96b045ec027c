"""The distributions world models predict: categorical latents and symlog two-hot scalars.

References: DreamerV2 (Hafner et al. 2021) for discrete latents with
straight-through gradients; DreamerV3 (Hafner et al. 2023) for the 1% unimix
and the symlog two-hot regression that STORM and DRAMA reuse for rewards.

Randomness is an argument: samples take uniform noise in [0, 1), so the same
noise gives the same sample in torch and, later, in an exported ONNX graph.
A categorical is drawn from one uniform by its inverse CDF (what a dream's step
takes: no logarithms, and 32x fewer draws than one per class), or from one
uniform per class by Gumbel-max (what training's posterior samples keep).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def symlog(x: Tensor) -> Tensor:
    """sign(x) * ln(1 + |x|): compresses large magnitudes, keeps small ones."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: Tensor) -> Tensor:
    """The inverse of :func:`symlog`."""
    return torch.sign(x) * torch.expm1(torch.abs(x))


def unimix(logits: Tensor, ratio: float) -> Tensor:
    """Log-probabilities of (1 - ratio) softmax(logits) + ratio uniform, over the last dim.

    The uniform floor keeps every class possible, so KL terms stay finite and
    the model never becomes certain of a wrong latent.
    """
    if ratio == 0.0:
        return torch.log_softmax(logits, -1)
    probs = (1.0 - ratio) * torch.softmax(logits, -1) + ratio / logits.shape[-1]
    return torch.log(probs)


def at_least_fp32(x: Tensor) -> Tensor:
    """``x`` in fp32, or as it is when wider (fp64 in tests).

    Under bf16 autocast, log-probabilities, KLs and losses need the precision.
    """
    return x.to(torch.promote_types(x.dtype, torch.float32))


def inverse_cdf(probs: Tensor, uniform: Tensor) -> Tensor:
    """Class indices (...) drawn from categoricals ``probs`` (..., K) by one uniform (...) each.

    The index is the number of classes whose cumulative probability is at most u:
    class k takes u in [cdf[k - 1], cdf[k]), an interval of width probs[k]. The clamp
    catches a cumulative sum that rounds to just below a u near 1.
    """
    below = probs.cumsum(-1) <= uniform.unsqueeze(-1)  # (..., K)
    return below.sum(-1).clamp(max=probs.shape[-1] - 1)


def sample_one_hot(log_probs: Tensor, noise: Tensor | None) -> Tensor:
    """A one-hot sample with straight-through gradients; the mode when ``noise`` is None.

    The shape of ``noise`` picks how it is drawn, both exact categorical samples:

    - (...) one uniform per categorical in [0, 1): by the inverse CDF; a negative
      one takes that categorical's mode (how a step graph is asked for the mode);
    - (..., K) one uniform per class in [0, 1): by the Gumbel-max trick.

    Args:
        log_probs: (..., K) normalized log-probabilities.
        noise: (...) or (..., K) uniform noise, or None.

    Returns:
        (..., K) one-hot sample whose gradient is that of the probabilities.
    """
    probs = log_probs.exp()
    if noise is None:
        index = log_probs.argmax(-1)
    elif noise.shape == log_probs.shape[:-1]:
        drawn = inverse_cdf(probs.detach(), noise)
        index = torch.where(noise < 0, log_probs.argmax(-1), drawn)
    elif noise.shape == log_probs.shape:
        gumbel = -torch.log(-torch.log(noise.clamp(1e-20, 1.0 - 1e-7)))
        index = (log_probs + gumbel).argmax(-1)
    else:
        raise ValueError(
            f"noise of shape {tuple(noise.shape)} samples neither one uniform per categorical "
            f"{tuple(log_probs.shape[:-1])} nor one per class {tuple(log_probs.shape)}"
        )
    hard = F.one_hot(index, log_probs.shape[-1]).to(log_probs.dtype)
    return hard + probs - probs.detach()


def categorical_kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) of independent categoricals (..., S, K), summed over the S groups."""
    return (log_p.exp() * (log_p - log_q)).sum((-2, -1))


class TwoHot:
    """Scalars as a distribution over fixed bins in symlog space, trained by cross-entropy.

    A target y = symlog(x) is spread over its two neighbouring bins with
    weights proportional to closeness; the prediction is symexp of the
    expected bin value (DreamerV3, STORM, DRAMA: 255 bins on [-20, 20]).

    Args:
        bins: number of bins.
        low: lowest bin, in symlog space.
        high: highest bin, in symlog space.
    """

    def __init__(self, bins: int = 255, low: float = -20.0, high: float = 20.0):
        self.bins, self.low, self.high = bins, low, high

    def _points(self, like: Tensor) -> Tensor:
        return torch.linspace(self.low, self.high, self.bins, device=like.device, dtype=like.dtype)

    def target(self, x: Tensor) -> Tensor:
        """Two-hot encoding (..., bins) of the scalars ``x`` (...)."""
        points = self._points(x)
        y = symlog(x).clamp(self.low, self.high)
        above = torch.searchsorted(points, y.contiguous(), right=False).clamp(1, self.bins - 1)
        below = above - 1
        width = points[above] - points[below]
        weight_above = ((y - points[below]) / width).clamp(0.0, 1.0)
        encoded = F.one_hot(below, self.bins).to(x.dtype) * (1.0 - weight_above).unsqueeze(-1)
        return encoded + F.one_hot(above, self.bins).to(x.dtype) * weight_above.unsqueeze(-1)

    def loss(self, logits: Tensor, x: Tensor) -> Tensor:
        """Cross-entropy (...) between predicted ``logits`` (..., bins) and targets ``x`` (...)."""
        return -(self.target(x) * torch.log_softmax(logits, -1)).sum(-1)

    def mean(self, logits: Tensor) -> Tensor:
        """The predicted scalar (...): symexp of the expected symlog value."""
        return symexp((torch.softmax(logits, -1) * self._points(logits)).sum(-1))
