"""One gradient step of a world model, as ``wmsim train`` and the agent loop take it.

Replay windows become tensors (:func:`to_torch`), the optimizer is the one the
config names (:func:`make_optimizer`), and the step warms the learning rate up
and clips the gradient norm (:func:`world_model_step`).
"""

from __future__ import annotations

import numpy as np
import torch

from wmsim.train.config import TrainConfig
from wmsim.train.optim import OPTIMIZERS, warm_up


def to_torch(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """Replay windows as tensors on ``device``, actions as int64."""
    out = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
    if "action" in out:
        out["action"] = out["action"].long()
    return out


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``config`` names, over ``model``'s parameters."""
    # REM asks for groups (decay on some, a slower tokenizer); the others for one
    return OPTIMIZERS[config.optimizer](
        model.parameter_groups(config.weight_decay),
        lr=config.lr,
        eps=config.eps,
        weight_decay=config.weight_decay,
    )


def world_model_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    config: TrainConfig,
    step: int,
    generator: torch.Generator,
    autocast: torch.dtype | None = None,
) -> dict[str, float]:
    """One gradient step of ``model`` on ``batch``, the ``step``-th (for the warm-up).

    ``autocast`` runs the forward pass in that dtype (see :func:`autocast_dtype`).
    """
    c = config
    lr = warm_up(optimizer, c.lr, c.warmup, step)
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
        loss, metrics = model.loss(batch, generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
    optimizer.step()
    return {**{k: float(v) for k, v in metrics.items()}, "grad_norm": float(norm), "lr": lr}
