"""GRU backbone: DreamerV2's deterministic path on its own (a decoupled RSSM).

Reference: Hafner et al., "Mastering Atari with Discrete World Models" (ICLR
2021). The cell is DreamerV2's layer-normalized GRU with the update gate
biased by -1, so that it starts out keeping most of its state:

    r, c, u = split(LayerNorm(W [x; h]))
    h' = sigmoid(u - 1) * tanh(sigmoid(r) * c) + (1 - sigmoid(u - 1)) * h

Used as a backbone, the posterior does not see h (the latent comes from the
frame alone), which is what lets every backbone share one training path;
:mod:`wmsim.model.rssm` has the coupled DreamerV2 world model proper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from wmsim.model.backbones.base import SequenceBackbone, State, TensorSpec, reset


@dataclass(frozen=True)
class GRUConfig:
    """DreamerV2's recurrent state size by default."""

    width: int = 600
    """Size of the recurrent state h, which is also the output."""


class LayerNormGRUCell(nn.Module):
    """DreamerV2's GRU cell: one layer-normalized projection for all three gates."""

    def __init__(self, input_dim: int, width: int, *, device=None, dtype=None):
        super().__init__()
        self.width = width
        kw = {"device": device, "dtype": dtype}
        self.linear = nn.Linear(input_dim + width, 3 * width, bias=False, **kw)
        self.norm = nn.LayerNorm(3 * width, **kw)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        """One update: x (B, D), h (B, W) -> next h (B, W)."""
        reset_gate, candidate, update = self.norm(self.linear(torch.cat([x, h], -1))).chunk(3, -1)
        candidate = torch.tanh(torch.sigmoid(reset_gate) * candidate)
        update = torch.sigmoid(update - 1.0)  # bias -1: keep the old state at first
        return update * candidate + (1.0 - update) * h


class GRUBackbone(SequenceBackbone):
    """A single LayerNorm GRU; the state is h alone, reset to zeros at episode starts."""

    def __init__(self, config: GRUConfig, input_dim: int, *, device=None, dtype=None):
        super().__init__()
        self.config, self.input_dim, self.output_dim = config, input_dim, config.width
        self.cell = LayerNormGRUCell(input_dim, config.width, device=device, dtype=dtype)

    def state_spec(self) -> dict[str, TensorSpec]:
        """h: (width,)."""
        return {"h": TensorSpec((self.config.width,), torch.float32)}

    def step(self, x: Tensor, is_first: Tensor, state: State) -> tuple[Tensor, State]:
        """One step: x (B, D), is_first (B,) -> h (B, W), {"h": h}."""
        initial = self.initial_state(x.shape[0], x.device, x.dtype)
        h = self.cell(x, reset(state, initial, is_first)["h"])
        return h, {"h": h}

    def forward(self, x: Tensor, is_first: Tensor, state: State) -> tuple[Tensor, State]:
        """Parallel form: x (B, T, D), is_first (B, T) -> h (B, T, W); a loop, as GRUs are."""
        outputs = []
        for t in range(x.shape[1]):
            h, state = self.step(x[:, t], is_first[:, t], state)
            outputs.append(h)
        return torch.stack(outputs, 1), state
