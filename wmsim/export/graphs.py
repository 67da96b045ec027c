"""A world model as three ONNX graphs: observe, step and decode.

Each graph is one call of the world-model contract with the state as named
tensors (``state.<name>`` in, ``next.<name>`` out of step) and a dynamic batch
axis on every input and output. The time loop stays on the host
(onnxruntime's ``Loop`` interpreter made a Mamba model 17x slower than real time on CPU,
microsoft/onnxruntime#27796): a dream is many calls of ``step``.
The exporter is torch's own (``torch.export`` then onnxscript), at a batch of 3,
since torch.export fixes any axis that is 0 or 1 in the example.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from wmsim.bundle import BATCH

OPSET = 18
EXAMPLE_BATCH = 3


def distinct(*outputs: Tensor) -> tuple[Tensor, ...]:
    """The outputs, each a tensor of its own.

    A graph output named twice (the latent that is also the state's ``z``) must
    be two ONNX values.
    """
    seen: set[int] = set()
    unique = []
    for x in outputs:
        unique.append(x.clone() if id(x) in seen else x)
        seen.add(id(x))
    return tuple(unique)


class ObserveGraph(nn.Module):
    """frames (B, C, H, W, 3) uint8, actions (B, C - 1), is_first (B, C) -> state..., latent."""

    def __init__(self, model: nn.Module, state_names: Sequence[str]):
        super().__init__()
        self.model, self.state_names = model, list(state_names)

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        """See the class docstring."""
        frames, actions, is_first = inputs
        state = self.model.observe(frames, actions, is_first)  # the posterior's mode
        return distinct(*(state[k] for k in self.state_names), self.model.latent(state))


class StepGraph(nn.Module):
    """state..., action (B,), noise (B, ...) -> next state..., reward, continue, latent."""

    def __init__(self, model: nn.Module, state_names: Sequence[str]):
        super().__init__()
        self.model, self.state_names = model, list(state_names)

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        """See the class docstring."""
        *state, action, noise = inputs
        state = dict(zip(self.state_names, state, strict=True))
        state, reward, cont, latent = self.model.step(state, action, noise)
        return distinct(*(state[k] for k in self.state_names), reward, cont, latent)


class DecodeGraph(nn.Module):
    """latent (B, ...) -> frame (B, H, W, 3) uint8, rounded as the real frames were."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *inputs: Tensor) -> Tensor:
        """See the class docstring."""
        (latent,) = inputs
        frame = self.model.decode(latent).clamp(0.0, 1.0)
        return (frame * 255.0).round().to(torch.uint8)


def to_onnx(
    module: nn.Module,
    inputs: Sequence[Tensor],
    input_names: Sequence[str],
    output_names: Sequence[str],
    opset: int = OPSET,
    *,
    optimize: bool = True,
) -> bytes:
    """Export ``module(*inputs)`` as a serialized ONNX model with axis 0 dynamic everywhere.

    ``module.forward`` takes ``*inputs``; the example batch must be at least 2
    (see the module docstring). ``optimize=False`` leaves the weights as they are
    (no BatchNorm folded into them); onnxruntime optimizes the graph when it loads it.
    """
    if any(x.shape[0] < 2 for x in inputs):
        raise ValueError("export with an example batch of 2 or more, or the batch axis is fixed")
    batch = torch.export.Dim(BATCH, min=1, max=1 << 16)
    with warnings.catch_warnings(), _quiet("torch.onnx", "torch.export", "torch._dynamo"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            tuple(inputs),
            dynamo=True,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=(tuple({0: batch} for _ in inputs),),  # the graph modules take *inputs
            opset_version=opset,
            optimize=optimize,
            verbose=False,
        )
    proto = program.model_proto
    for node in proto.graph.node:  # the exporter notes each node's torch stack trace: not shipped
        del node.metadata_props[:]
        node.doc_string = ""
    return proto.SerializeToString()


class _quiet:
    """Raise the given loggers to ERROR for the duration (the exporter reports progress)."""

    def __init__(self, *names: str):
        self.loggers = [logging.getLogger(name) for name in names]

    def __enter__(self):
        self.levels = [logger.level for logger in self.loggers]
        for logger in self.loggers:
            logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        for logger, level in zip(self.loggers, self.levels, strict=True):
            logger.setLevel(level)


def round_to_float16(model: nn.Module, min_size: int = 1024) -> None:
    """Round the large float32 parameters to the nearest float16 values, in place.

    Exported afterwards, they are exactly representable in float16 and
    :func:`store_float16` halves them with no further loss. Small ones (under
    ``min_size`` entries, as :func:`store_float16` keeps them float32) are left
    alone: that is where the sensitive ones live (an SSM's eigenvalues and step
    sizes, norms' gains), and they weigh nothing.
    """
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dtype == torch.float32 and parameter.numel() >= min_size:
                parameter.copy_(parameter.half().float())


def store_float16(onnx_model: bytes, min_size: int = 1024) -> bytes:
    """Store float32 initializers that float16 holds exactly as float16, cast back on load.

    Only exact ones: constants folded from weights (a BatchNorm fused into a
    layer, say) keep float32, so the graph computes what it did; export with
    ``optimize=False`` to keep the weights unfolded. onnxruntime folds the casts
    once, when it loads the graph.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load_from_string(onnx_model)
    graph, kept, casts = proto.graph, [], []
    for tensor in graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.dtype != np.float32 or array.size < min_size:
            kept.append(tensor)
            continue
        with np.errstate(over="ignore"):  # values beyond float16's range are not exact anyway
            half = array.astype(np.float16)
        exact = np.array_equal(half.astype(np.float32), array)
        if exact:
            kept.append(numpy_helper.from_array(half, f"{tensor.name}.float16"))
            casts.append(helper.make_node(
                "Cast", [f"{tensor.name}.float16"], [tensor.name], to=onnx.TensorProto.FLOAT
            ))  # fmt: skip
        else:
            kept.append(tensor)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return proto.SerializeToString()
