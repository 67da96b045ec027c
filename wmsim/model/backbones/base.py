"""The contract every sequence backbone meets, so world models, export and serving can swap them.

A backbone maps inputs x_t to outputs h_t through a recurrent state that is
*data*: passed in, returned, never kept on the module. It has two methods for
the same function:

- ``forward(x (B, T, D), is_first (B, T), state) -> (h (B, T, D'), final state)``:
  the parallel form, for training;
- ``step(x (B, D), is_first (B,), state) -> (h (B, D'), next state)``: the
  recurrent form, for imagination and serving. It must be pure, free of
  in-place updates of its inputs and of Python branches on tensor values, so
  that it exports to ONNX.

``is_first[b, t]`` means the state entering step t is the initial state:
nothing before it may influence h at or after t. ``state_spec`` names
fixed-size state tensors whose shapes do not depend on sequence length, so a
server can preallocate them and an exported graph can name its inputs after
them. Forward must equal a loop of step, from the initial state or any other
(``tests/model/backbones/test_contract.py`` checks all of this for every
registered backbone).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor, nn

State = dict[str, Tensor]
"""Named state tensors, each (B, *spec.shape)."""


@dataclass(frozen=True)
class TensorSpec:
    """Shape (without the batch dimension) and dtype of one state tensor."""

    shape: tuple[int, ...]
    dtype: torch.dtype


def reset(state: State, initial: State, is_first: Tensor) -> State:
    """Replace the rows of ``state`` where ``is_first`` (B,) is set by the ``initial`` state.

    A blend with the mask rather than a branch, so it exports and stays pure.
    """
    out = {}
    for name, value in state.items():
        mask = is_first.reshape(-1, *([1] * (value.dim() - 1)))
        out[name] = torch.where(mask, initial[name], value)
    return out


def input_projection(input_dim: int, width: int, *, bias: bool, **factory) -> nn.Module:
    """Inputs of size ``input_dim`` -> tokens of size ``width``: a Linear, or nothing if equal."""
    if input_dim == width:
        return nn.Identity()
    return nn.Linear(input_dim, width, bias=bias, **factory)


class SequenceBackbone(nn.Module, ABC):
    """Base class of sequence backbones; see the module docstring for the contract.

    Subclasses set ``input_dim`` and ``output_dim`` and implement the abstract
    :meth:`state_spec`, :meth:`forward` and :meth:`step`; a subclass missing one
    cannot be instantiated.
    """

    input_dim: int
    output_dim: int

    @abstractmethod
    def state_spec(self) -> dict[str, TensorSpec]:
        """Name -> spec of every state tensor."""

    def initial_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> State:
        """The state before any input: zeros of the spec's shapes unless a backbone says otherwise.

        ``dtype`` overrides floating-point specs (state that must stay fp32 says so in its spec).
        """
        state = {}
        for name, spec in self.state_spec().items():
            kind = spec.dtype if (dtype is None or not spec.dtype.is_floating_point) else dtype
            state[name] = torch.zeros((batch_size, *spec.shape), dtype=kind, device=device)
        return state

    @abstractmethod
    def forward(self, x: Tensor, is_first: Tensor, state: State) -> tuple[Tensor, State]:
        """Parallel form: x (B, T, D), is_first (B, T) bool -> h (B, T, D'), final state."""

    @abstractmethod
    def step(self, x: Tensor, is_first: Tensor, state: State) -> tuple[Tensor, State]:
        """Recurrent form: x (B, D), is_first (B,) bool -> h (B, D'), next state."""
