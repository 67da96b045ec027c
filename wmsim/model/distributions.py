"""The distributions world models predict: categorical latents and symlog two-hot scalars.

References: DreamerV2 (Hafner et al. 2021) for discrete latents with
straight-through gradients; DreamerV3 (Hafner et al. 2023) for the 1% unimix
and the symlog two-hot regression that STORM and DRAMA reuse for rewards.

Randomness is an argument: samples take uniform noise in [0, 1), so the same
noise gives the same sample in torch and, later, in an exported ONNX graph.
A categorical is drawn from one uniform by its inverse CDF (:func:`draw`, what a
dream's step takes: from probabilities, with no logarithm, and one draw per
categorical rather than per class), or from one uniform per class by Gumbel-max
(:func:`sample_one_hot`, what training's samples keep).
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


def unimix_probs(logits: Tensor, ratio: float) -> Tensor:
    """(1 - ratio) softmax(logits) + ratio uniform, over the last dim.

    The uniform floor keeps every class possible, so KL terms stay finite and
    the model never becomes certain of a wrong latent.
    """
    probs = torch.softmax(logits, -1)
    return probs if ratio == 0.0 else (1.0 - ratio) * probs + ratio / logits.shape[-1]


def unimix(logits: Tensor, ratio: float) -> Tensor:
    """Log-probabilities of :func:`unimix_probs`: what losses and KLs take."""
    if ratio == 0.0:
        return torch.log_softmax(logits, -1)
    return torch.log(unimix_probs(logits, ratio))


def at_least_fp32(x: Tensor) -> Tensor:
    """``x`` in fp32, or as it is when wider (fp64 in tests).

    Under bf16 autocast, log-probabilities, KLs and losses need the precision.
    """
    return x.to(torch.promote_types(x.dtype, torch.float32))


def grouped(logits: Tensor, stoch: int, classes: int) -> Tensor:
    """Flat latent logits (..., stoch * classes) -> (..., stoch, classes), at least fp32."""
    return at_least_fp32(logits).unflatten(-1, (stoch, classes))


def inverse_cdf(probs: Tensor, uniform: Tensor) -> Tensor:
    """Class indices (...) drawn from categoricals ``probs`` (..., K) by one uniform (...) each.

    The index is the number of classes whose cumulative probability is at most u:
    class k takes u in [cdf[k - 1], cdf[k]), an interval of width probs[k]. The clamp
    catches a cumulative sum that rounds to just below a u near 1.
    """
    classes = probs.shape[-1]
    # the cumulative sums as one product with a triangle of ones, counted in floats: in
    # onnxruntime, CumSum and an int64 sum took over twice the time; fp32 under autocast,
    # as bf16 would move every class's interval
    with torch.autocast(probs.device.type, enabled=False):
        probs = at_least_fp32(probs)
        upper = torch.ones(classes, classes, dtype=probs.dtype, device=probs.device).triu()
        below = (probs @ upper <= uniform.unsqueeze(-1)).to(probs.dtype)  # (..., K)
    return below.sum(-1).long().clamp(max=classes - 1)


def draw(probs: Tensor, uniform: Tensor | None) -> Tensor:
    """Class indices (...) of categoricals ``probs`` (..., K), one uniform (...) each.

    A uniform in [0, 1) draws by :func:`inverse_cdf`; a negative one takes that
    categorical's mode, so a step graph is asked for the mode through its noise input.
    None takes every mode.
    """
    mode = probs.argmax(-1)
    if uniform is None:
        return mode
    if uniform.shape != probs.shape[:-1]:
        raise ValueError(
            f"noise of shape {tuple(uniform.shape)} is not one uniform per categorical "
            f"{tuple(probs.shape[:-1])}"
        )
    return torch.where(uniform < 0, mode, inverse_cdf(probs, uniform))


def _straight_through(index: Tensor, probs: Tensor) -> Tensor:
    """Indices (...) as one-hots (..., K) whose gradient is that of ``probs`` (..., K)."""
    hard = F.one_hot(index, probs.shape[-1]).to(probs.dtype)
    return hard + probs - probs.detach()


def draw_one_hot(probs: Tensor, uniform: Tensor | None) -> Tensor:
    """:func:`draw` as one-hots (..., K), straight-through (the gradient of ``probs``)."""
    return _straight_through(draw(probs, uniform), probs)


def sample_one_hot(log_probs: Tensor, noise: Tensor | None) -> Tensor:
    """A one-hot sample (..., K) of ``log_probs`` (..., K) with straight-through gradients.

    ``noise`` of shape (..., K), one uniform per class in [0, 1), draws by the
    Gumbel-max trick (training's samples); else it goes to :func:`draw_one_hot`:
    one uniform per categorical (...), a negative one or None for the mode.
    """
    if noise is None or noise.shape != log_probs.shape:
        return draw_one_hot(log_probs.exp(), noise)
    gumbel = -torch.log(-torch.log(noise.clamp(1e-20, 1.0 - 1e-7)))
    return _straight_through((log_probs + gumbel).argmax(-1), log_probs.exp())


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
