"""The decode graph in OpenVINO, in bfloat16 and int8 where the CPU computes them natively.

Decoding is most of a pixel dream's cost on a CPU: 64 frames of the default model
take 10.8 ms in onnxruntime, whose CPU provider runs the decoder's transposed
convolutions in fp32 only, against 0.7 ms for the step. OpenVINO runs
convolutions in bfloat16 on CPUs with AVX512-BF16 or AMX (twice the
multiply-adds per instruction) but keeps transposed ones in fp32, so the graph
is rewritten before compiling, each rewrite computing what it replaces:

- each transposed convolution of kernel 4, stride 2, padding 1 (the decoders of
  :mod:`wmsim.model.networks`) becomes the convolution it equals: each of the
  four output phases (even or odd row, even or odd column) is a 2x2 window of
  the input, so one 3x3 convolution to ``4 * C_out`` channels, zeros where a
  phase takes no tap, computes all four, and a DepthToSpace interleaves them;
- the one-hot first layer (rows gathered and summed) becomes an embedding bag;
- the last interleave and the move to channels-last become one move.

64 frames then take about 4 ms (``docs/speed.md``). In fp32 the rewritten graph
decodes what onnxruntime decodes, to a level (``tests/runtime/test_openvino_decode.py``);
in bfloat16 frames differ from onnxruntime's by more than a level in about 0.15% of
pixels (at most 10 levels), and the fidelity metrics move by under 0.6%.

Given calibration latents (:meth:`wmsim.runtime.graphs.Graphs.calibration_latents`, the
bundle's own start contexts and dreams from them, the same in every process), the
convolutions before the last two run in int8 (:func:`quantize_convolutions`): 12% off the
decode, and the fidelity metrics move by under 0.3% more. The last two, at the highest
resolutions, stay in bfloat16: with the third in int8 too, the reconstructions' frame error
rose 3.4%, with all four 86%.

Only the frames differ: the step graph, and so every latent, reward and end,
stays in onnxruntime, so a seed dreams the same episode with either decoder. A
row's frame does not depend on the other rows of its call, on padding or on the
thread count (tested), so served and in-process dreams show the same frames.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter

import numpy as np

try:
    import openvino as ov
    from openvino import opset13 as ops
    from openvino.passes import ConstantFolding, Manager
except ImportError:  # optional: wmsim[cpu] brings it; Graphs falls back to onnxruntime
    ov = None

FIXED_AFTER, FIXED_SIZES = 4, 8
"""A batch size seen ``FIXED_AFTER`` times gets its own compiled model (15% faster at batch 64,
the same frames; compiling takes about 30 ms), for up to ``FIXED_SIZES`` sizes."""


def padded_size(batch: int) -> int:
    """The batch a call of ``batch`` rows is padded to: the next multiple of 8 (of 32 past 128).

    A dream env's calls decode the rows that stepped, all but those an autoreset
    restarts: 64 envs give calls of 57 to 64 rows, and each size would want its own
    compiled model. Padded, they share one, for at most 7 rows of extra work in 64.
    """
    step = 8 if batch <= 128 else 32
    return -(-batch // step) * step


PHASE_TAPS = ({0: 3, 1: 1}, {1: 2, 2: 0})
"""Per output phase (even, odd), the transposed kernel's index behind each tap of the
3x3 window (tap 0 is the input row above, 1 the same row, 2 the row below)."""


def available() -> bool:
    """Whether OpenVINO is installed."""
    return ov is not None


def phase_weights(weight: np.ndarray) -> np.ndarray:
    """A transposed convolution's weight (C_in, C_out, 4, 4) -> 3x3 form (4 * C_out, C_in, 3, 3).

    Output channel ``c * 4 + 2 * a + b`` is channel ``c`` at row phase ``a`` and column
    phase ``b``, the order DepthToSpace's column-row-depth mode reads.
    """
    c_in, c_out = weight.shape[:2]
    phases = np.zeros((c_out, 2, 2, c_in, 3, 3), np.float32)
    for a, rows in enumerate(PHASE_TAPS):
        for b, cols in enumerate(PHASE_TAPS):
            for tap_y, ky in rows.items():
                for tap_x, kx in cols.items():
                    phases[:, a, b, :, tap_y, tap_x] = weight[:, :, ky, kx].T
    return phases.reshape(4 * c_out, c_in, 3, 3)


def _constant(output) -> np.ndarray | None:
    """The value of a constant input (after constant folding), else None."""
    node = output.get_node()
    if node.get_type_name() != "Constant":
        return None
    return node.get_data().astype(np.float32)


def _redirect(old, new) -> None:
    """Every input that reads the output ``old`` reads ``new`` instead."""
    for target in old.get_target_inputs():
        target.replace_source_output(new)


def _checked(model, count: int) -> int:
    """``count``, once ``model``'s shapes and types are inferred again after ``count`` rewrites."""
    if count:
        model.validate_nodes_and_infer_types()
    return count


def _bias(node, channels: int) -> np.ndarray | None:
    """The per-channel bias (C,) that ``node``'s only consumer adds, if it is one; else None.

    A bias added after the interleave is an elementwise pass over the full-size output
    in fp32 (3 of a 9 ms decode); added to the convolution's output, it is fused into it.
    """
    targets = list(node.output(0).get_target_inputs())
    if len(targets) != 1 or targets[0].get_node().get_type_name() != "Add":
        return None
    add = targets[0].get_node()
    other = add.input_value(1 - targets[0].get_index())
    value = _constant(other)
    if value is None or value.size != channels or value.shape[-2:] not in ((1, 1), (channels, 1)):
        return None
    return value.reshape(channels)


def rewrite_transposed_convolutions(model) -> int:
    """Rewrite ``model``'s kernel-4, stride-2, padding-1 transposed convolutions in place.

    Returns:
        how many were rewritten; others (other shapes, computed weights) stay as they are.
    """
    folding = Manager()  # weights stored as fp16 and cast, biases reshaped: constants
    folding.register_pass(ConstantFolding())
    folding.run_passes(model)
    count = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "ConvolutionBackpropData" or node.get_input_size() != 2:
            continue
        a = node.get_attributes()
        weight = _constant(node.input_value(1))
        plain = (
            list(a["strides"]) == [2, 2] and list(a["pads_begin"]) == [1, 1]
            and list(a["pads_end"]) == [1, 1] and list(a["dilations"]) == [1, 1]
            and list(a["output_padding"]) == [0, 0] and a["auto_pad"] == "explicit"
        )  # fmt: skip
        if not plain or weight is None or weight.shape[2:] != (4, 4):
            continue
        conv = ops.convolution(
            node.input_value(0), ops.constant(phase_weights(weight)),
            [1, 1], [1, 1], [1, 1], [1, 1],
        )  # fmt: skip
        replaced, bias = node.output(0), _bias(node, weight.shape[1])
        if bias is not None:  # added before the interleave, where it joins the convolution
            replaced = next(iter(replaced.get_target_inputs())).get_node().output(0)
            conv = ops.add(conv, ops.constant(np.repeat(bias, 4).reshape(1, -1, 1, 1)))
        interleaved = ops.depth_to_space(conv, "depth_first", 2)  # depth_first: ONNX's CRD
        _redirect(replaced, interleaved.output(0))
        count += 1
    return _checked(model, count)


def _through_identity(output):
    """``output``, or what an identity Transpose producing it reads."""
    node = output.get_node()
    if node.get_type_name() == "Transpose":
        order = _constant(node.input_value(1))
        if order is not None and (order == np.arange(len(order))).all():
            return node.input_value(0)
    return output


def rewrite_gathered_sums(model) -> int:
    """Rewrite sums of gathered rows (the one-hot first layer, ``OneHotLinear``) in place.

    A GatherND of whole rows of a constant (K, D) table by indices (B, G, 1), summed
    over G, writes and reads a (B, G, D) tensor (16 MB at batch 64) in a reference
    kernel; EmbeddingBagPackedSum adds the same rows without it. Returns how many.
    """
    count = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "ReduceSum" or node.get_attributes()["keep_dims"]:
            continue
        axes, gathered = _constant(node.input_value(1)), _through_identity(node.input_value(0))
        gather = gathered.get_node()
        if gather.get_type_name() != "GatherND" or gather.get_attributes()["batch_dims"] != 0:
            continue
        table, indices = _constant(gather.input_value(0)), gather.input_value(1)
        shape = indices.get_partial_shape()
        if (
            axes is None or [int(a) % 3 for a in axes] != [1] or table is None or table.ndim != 2
            or shape.rank.get_length() != 3 or shape[2].get_length() != 1
        ):  # fmt: skip
            continue
        rows = ops.squeeze(indices, ops.constant(np.array([2], np.int64)))
        summed = ops.embedding_bag_packed_sum(ops.constant(table), rows)
        _redirect(node.output(0), summed.output(0))
        count += 1
    return _checked(model, count)


ELEMENTWISE = frozenset({"Sigmoid", "Maximum", "Minimum", "Relu", "Clamp", "Tanh"})
"""Operations that act on each value alone (with scalar constants): they commute with any
rearrangement of the values."""


def _elementwise_chain(output) -> tuple[list, object]:
    """The single-consumer chain of elementwise operations that reads ``output``.

    Returns:
        (the inputs of the chain's operations that read the previous one, its last output).
    """
    chain = []
    while len(targets := list(output.get_target_inputs())) == 1:
        node, index = targets[0].get_node(), targets[0].get_index()
        others = [x for k, x in enumerate(node.input_values()) if k != index]
        if node.get_type_name() not in ELEMENTWISE or any(
            x.get_partial_shape().rank.get_length() != 0 for x in others
        ):
            break
        chain.append(targets[0])
        output = node.output(0)
    return chain, output


def rewrite_interleaved_outputs(model) -> int:
    """Rewrite an output's last interleave and its move to channels-last as one move, in place.

    The decoder's last DepthToSpace (12 channels -> 3 at twice the size), then the
    squashing, then a Transpose to (B, H, W, 3), move the frame's values twice. The
    squashing acts on each value alone, so it runs first, on the convolution's output,
    and one Transpose of a 6-d view puts each value where both moves would have.
    Returns how many.
    """
    count = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "DepthToSpace":
            continue
        chain, last = _elementwise_chain(node.output(0))
        targets = list(last.get_target_inputs())
        if len(targets) != 1 or targets[0].get_node().get_type_name() != "Transpose":
            continue
        transpose, x = targets[0].get_node(), node.input_value(0)
        order = _constant(transpose.input_value(1))
        shape = x.get_partial_shape()
        if (
            node.get_attributes()["mode"] != "depth_first" or order is None
            or list(order) != [0, 2, 3, 1] or not all(d.is_static for d in shape[1:])
        ):  # fmt: skip
            continue
        size = node.get_attributes()["block_size"]
        channels, h, w = (d.get_length() for d in shape[1:])
        if chain:
            chain[0].replace_source_output(x)
        view = [0, channels // size**2, size, size, h, w]  # 0: the batch, as it is
        moved = ops.transpose(
            ops.reshape(last if chain else x, ops.constant(np.array(view, np.int64)), True),
            ops.constant(np.array([0, 4, 2, 5, 3, 1], np.int64)),
        )  # (B, H, row phase, W, column phase, C)
        frame = [0, h * size, w * size, channels // size**2]
        result = ops.reshape(moved, ops.constant(np.array(frame, np.int64)), True)
        _redirect(transpose.output(0), result.output(0))
        count += 1
    return _checked(model, count)


RANGE_STEP = 1 / 16
"""Calibrated input ranges are rounded up to a multiple of this: a range one float apart on
another thread count or machine still quantizes the same."""


def _convolutions(model) -> list:
    return [node for node in model.get_ordered_ops() if node.get_type_name() == "Convolution"]


def input_ranges(
    model, calibration: np.ndarray, count: int, batch: int = 64
) -> list[tuple[float, float]]:
    """For the first ``count`` convolutions, the (low, high) each one's input takes.

    Computed in fp32 over the ``calibration`` latents by the part of ``model`` before them;
    low is at most 0 and high at least :data:`RANGE_STEP`, both rounded outwards to it.
    """
    copy = model.clone()
    inputs = [ops.result(node.input_value(0)) for node in _convolutions(copy)[:count]]
    probe = ov.Model(inputs, copy.get_parameters())  # what comes after them is left out
    compiled = core().compile_model(probe, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    low, high = np.zeros(count), np.full(count, RANGE_STEP)
    for start in range(0, len(calibration), batch):
        outputs = request.infer([calibration[start : start + batch]])
        for k in range(count):
            low[k] = min(low[k], outputs[k].min())
            high[k] = max(high[k], outputs[k].max())
    low, high = np.floor(low / RANGE_STEP) * RANGE_STEP, np.ceil(high / RANGE_STEP) * RANGE_STEP
    return [(float(lo), float(hi)) for lo, hi in zip(low, high, strict=True)]


def _fake_quantize(x, low: np.ndarray, high: np.ndarray, levels: int):
    low, high = ops.constant(np.float32(low)), ops.constant(np.float32(high))
    return ops.fake_quantize(x, low, high, low, high, levels)


FLOAT_LAST = 2
"""The last convolutions, at the highest resolutions, stay in floating point: with the third
of the default's four in int8 too, its reconstructions' frame error rose 3.4% (docs/speed.md)."""


def quantize_convolutions(model, calibration: np.ndarray) -> int:
    """Make every convolution but the last :data:`FLOAT_LAST` int8, in place; returns how many.

    Each one's input is quantized per tensor to 256 levels over the range the
    ``calibration`` latents give it (:func:`input_ranges`), its weights symmetrically per
    output channel to 255; OpenVINO runs a convolution between such FakeQuantize nodes in
    int8 (VNNI).
    """
    convolutions = _convolutions(model)[:-FLOAT_LAST]
    if not convolutions:
        return 0
    ranges, count = input_ranges(model, calibration, len(convolutions)), 0
    for node, (low, high) in zip(convolutions, ranges, strict=True):
        weight = _constant(node.input_value(1))
        if weight is None:  # computed weights: left as they are
            continue
        count += 1
        quantized = _fake_quantize(node.input_value(0), low, high, 256)
        node.input(0).replace_source_output(quantized.output(0))
        bound = np.abs(weight).reshape(len(weight), -1).max(1).reshape(-1, 1, 1, 1)
        bound = np.maximum(bound, np.finfo(np.float32).tiny)
        quantized = _fake_quantize(ops.constant(weight), -bound, bound, 255)
        node.input(1).replace_source_output(quantized.output(0))
    return _checked(model, count)


@functools.cache
def core():
    """The process's one OpenVINO Core, as OpenVINO recommends.

    It holds the device plugins, so every compiled model is made, used and released while
    it lives; a Core per decoder was made and dropped beside other decoders' calls.
    """
    return ov.Core()


def bf16_native() -> bool:
    """Whether OpenVINO computes bfloat16 natively on this CPU (AVX512-BF16 or AMX)."""
    return "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def int8_native() -> bool:
    """Whether OpenVINO computes int8 convolutions on this CPU."""
    return "INT8" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoDecoder:
    """A bundle's decode graph compiled by OpenVINO; see the module docstring.

    Args:
        graph: the decode graph's ONNX bytes.
        threads: inference threads (default: OpenVINO's, one per core).
        precision: ``bf16``, ``f32``, or ``auto`` (bf16 where native, else f32).
        calibration: latents (N, ...) of the bundle's own frames; given, the convolutions
            before the last two run in int8 over the input ranges they give
            (:func:`quantize_convolutions`).
    """

    def __init__(
        self,
        graph: bytes,
        *,
        threads: int | None = None,
        precision: str = "auto",
        calibration: np.ndarray | None = None,
    ):
        if precision not in ("auto", "bf16", "f32"):
            raise ValueError(f"precision must be auto, bf16 or f32, got {precision!r}")
        model = core().read_model(graph)
        self.rewritten = sum(
            rewrite(model) for rewrite in (
                rewrite_transposed_convolutions, rewrite_gathered_sums, rewrite_interleaved_outputs
            )
        )  # fmt: skip
        if precision == "auto":
            precision = "bf16" if bf16_native() else "f32"
        self.quantized = 0 if calibration is None else quantize_convolutions(model, calibration)
        """How many convolutions run in int8."""
        self.precision = f"int8+{precision}" if self.quantized else precision
        """``bf16`` or ``f32``, or ``int8+bf16`` or ``int8+f32`` with int8 convolutions."""
        self._config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self._config["INFERENCE_NUM_THREADS"] = threads
        self._model = model
        compiled = core().compile_model(model, "CPU", self._config)
        frame = compiled.output(0).get_partial_shape()[1:]
        self._frame_shape = tuple(d.get_length() for d in frame)
        self._any_batch = compiled.create_infer_request()
        self._batches: dict[int, ov.InferRequest] = {}  # compiled for one batch size
        self._seen: Counter[int] = Counter()
        self._lock = threading.Lock()  # the server's model thread and a user may share it

    def _request(self, batch: int):
        """A request compiled for ``batch`` rows once that size recurs, else one for any size."""
        if batch in self._batches:
            return self._batches[batch]
        self._seen[batch] += 1
        if self._seen[batch] < FIXED_AFTER or len(self._batches) >= FIXED_SIZES:
            return self._any_batch
        model = self._model.clone()
        model.reshape({0: [batch, *self._model.input(0).get_partial_shape()[1:]]})
        request = core().compile_model(model, "CPU", self._config).create_infer_request()
        self._batches[batch] = request
        return request

    def __call__(self, latent: np.ndarray) -> np.ndarray:
        """Latents (B, ...) -> frames (B, H, W, 3) uint8, a fresh array."""
        batch = len(latent)
        if batch == 0:
            return np.zeros((0, *self._frame_shape), np.uint8)
        size = padded_size(batch)
        with self._lock:
            request = self._request(size)
            if request is not self._any_batch and size > batch:  # zero rows decode, unseen
                latent = np.concatenate([latent, np.zeros((size - batch, *latent.shape[1:]),
                                                          latent.dtype)])  # fmt: skip
            return request.infer([latent], share_outputs=False)[0][:batch]
