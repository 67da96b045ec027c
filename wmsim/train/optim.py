"""Optimizers by name: Adam, AdamW (REM), and LaProp (DRAMA's world model and actor-critic).

LaProp (Ziyin, Wang & Ueda, "LaProp: Separating Momentum and Adaptivity in
Adam", 2020) normalizes each gradient by the running RMS *before* it enters
the momentum, where Adam divides the momentum by it afterwards:

    v_t = b2 v_{t-1} + (1 - b2) g_t^2
    m_t = b1 m_{t-1} + (1 - b1) lr_t g_t / (sqrt(v_t / (1 - b2^t)) + eps)
    p_t = p_{t-1} - m_t / (1 - b1^t)

The learning rate enters the momentum, as in the authors' code, so a warm-up
or schedule changes the step smoothly. Weight decay, if any, is decoupled.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


class LaProp(torch.optim.Optimizer):
    """LaProp; see the module docstring. DRAMA: lr 4e-5, eps 1e-20."""

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 4e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-15,
        weight_decay: float = 0.0,
    ):
        if lr < 0 or eps < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid LaProp settings: lr={lr}, betas={betas}, eps={eps}")
        super().__init__(
            params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        )

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient."""
        loss = None if closure is None else torch.enable_grad()(closure)()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] = state["step"] + 1  # a new tensor: a loaded one may be shared
                t = float(state["step"])
                grad, m, v = p.grad, state["exp_avg"], state["exp_avg_sq"]
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denominator = (v / (1 - beta2**t)).sqrt_().add_(group["eps"])
                m.mul_(beta1).add_(grad / denominator, alpha=(1 - beta1) * group["lr"])
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.sub_(m, alpha=1 / (1 - beta1**t))
        return loss


OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "laprop": LaProp,
}  # fmt: skip
"""Name -> optimizer class; each takes (params, lr=, eps=, weight_decay=)."""


def warm_up(optimizer: torch.optim.Optimizer, lr: float, warmup: int, step: int) -> float:
    """Set the learning rate of ``optimizer``'s ``step``-th update (from 0); returns it.

    The rate rises linearly to ``lr`` over the first ``warmup`` updates (0: no
    warm-up). A parameter group's ``lr_scale`` (REM's slower tokenizer) scales
    the rate of that group.
    """
    lr = lr * min(1.0, (step + 1) / warmup) if warmup else lr
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr
