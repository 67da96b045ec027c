"""The OpenVINO decoder: the rewrite is exact, bf16 and int8 frames stay near onnxruntime's,
and a row's frame does not depend on the rest of its call."""

import numpy as np
import pytest

from wmsim.bundle import BundleError
from wmsim.errors import UserError
from wmsim.runtime import openvino_decode
from wmsim.runtime.graphs import Graphs, Runtime
from wmsim.store import EMBEDDED

pytest.importorskip("openvino")
DEFAULT = EMBEDDED / "Breakout.wmsim"


def transposed_convolution(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """The definition, kernel 4, stride 2, padding 1: (C_in, H, W) -> (C_out, 2H, 2W)."""
    c_in, h, w = x.shape
    out = np.zeros((weight.shape[1], 2 * h + 2, 2 * w + 2))  # a border of 1 on each side
    for y in range(h):
        for x_ in range(w):
            for ky in range(4):
                for kx in range(4):
                    out[:, 2 * y + ky, 2 * x_ + kx] += x[:, y, x_] @ weight[:, :, ky, kx]
    return out[:, 1:-1, 1:-1]


def phase_form(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """One 3x3 convolution to 4 * C_out channels, then depth-to-space (column-row-depth)."""
    c_in, h, w = x.shape
    kernel = openvino_decode.phase_weights(weight)  # (4 * C_out, C_in, 3, 3)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    conv = np.zeros((kernel.shape[0], h, w))
    for dy in range(3):
        for dx in range(3):
            conv += np.einsum(
                "oc,chw->ohw", kernel[:, :, dy, dx], padded[:, dy : dy + h, dx : dx + w]
            )
    c_out = kernel.shape[0] // 4
    return conv.reshape(c_out, 2, 2, h, w).transpose(0, 3, 1, 4, 2).reshape(c_out, 2 * h, 2 * w)


def test_the_phase_form_equals_the_transposed_convolution():
    rng = np.random.default_rng(0)
    x, weight = rng.normal(size=(3, 5, 4)), rng.normal(size=(3, 2, 4, 4))
    expected = transposed_convolution(x, weight)
    np.testing.assert_allclose(phase_form(x, weight), expected, atol=1e-5)  # float32 weights


@pytest.fixture(scope="module")
def latents():
    """Latents of real start contexts and of 12 dreamed steps after them."""
    runtime = Runtime(DEFAULT, 24, device="cpu", threads=1, decode=False)
    rows = np.arange(24)
    out = [runtime.reset(rows, rows).copy()]
    rng = np.random.default_rng(0)
    for _ in range(12):
        noise = rng.random((24, *runtime.bundle.noise_shape), dtype=np.float32)
        out.append(runtime.step(rows, rng.integers(4, size=24), noise)[2].copy())
    return np.concatenate(out)


@pytest.fixture(scope="module")
def reference(latents):
    return Graphs(DEFAULT, device="cpu", decoder="onnxruntime").decode(latents).astype(int)


def test_in_float32_the_rewritten_graph_decodes_what_onnxruntime_decodes(latents, reference):
    graph = Graphs(DEFAULT, device="cpu").bundle.read_graph("decode")
    decoder = openvino_decode.OpenVinoDecoder(graph, precision="f32")
    assert decoder.rewritten == 6  # 4 transposed convolutions, the one-hot layer, the last move
    assert np.abs(decoder(latents).astype(int) - reference).max() <= 1  # rounding to a level


def test_bf16_frames_differ_from_onnxruntime_by_a_few_levels_in_few_pixels(latents, reference):
    graph = Graphs(DEFAULT, device="cpu").bundle.read_graph("decode")
    diff = np.abs(openvino_decode.OpenVinoDecoder(graph, precision="bf16")(latents) - reference)
    assert (diff > 2).mean() < 0.005 and diff.max() <= 32  # measured: 0.15% over 1, at most 10


@pytest.fixture(scope="module")
def calibrated():
    """The decode graph's bytes and its calibration latents, as Graphs makes an int8 decoder."""
    graphs = Graphs(DEFAULT, device="cpu", decoder="onnxruntime")
    return graphs.bundle.read_graph("decode"), graphs.calibration_latents()


def test_int8_runs_the_first_convolutions_in_int8_and_stays_near_onnxruntime(
    latents, reference, calibrated
):
    graph, calibration = calibrated
    decoder = openvino_decode.OpenVinoDecoder(graph, calibration=calibration)
    assert decoder.quantized == 2 and decoder.precision.startswith("int8+")  # of 4
    diff = np.abs(decoder(latents).astype(int) - reference)
    assert (diff > 2).mean() < 0.002 and diff.max() <= 64  # measured: 0.03% over 2, at most 26
    if not openvino_decode.int8_native():
        return
    model = openvino_decode.core().read_model(graph)  # what the decoder compiled, profiled
    openvino_decode.rewrite_transposed_convolutions(model)
    openvino_decode.quantize_convolutions(model, calibration)
    compiled = openvino_decode.core().compile_model(model, "CPU", {"PERF_COUNT": True})
    request = compiled.create_infer_request()
    request.infer([latents[:8]])
    kernels = [p.exec_type for p in request.profiling_info if p.node_type == "Convolution"]
    assert sum("I8" in kernel for kernel in kernels) == 2, kernels  # not FakeQuantize in float


def test_int8_ranges_come_from_the_bundle_alone_the_same_on_any_thread_count(calibrated):
    graph, calibration = calibrated
    one = Graphs(DEFAULT, device="cpu", threads=1, decoder="onnxruntime").calibration_latents()
    np.testing.assert_array_equal(one, calibration)
    model = openvino_decode.core().read_model(graph)
    openvino_decode.rewrite_transposed_convolutions(model)
    ranges = openvino_decode.input_ranges(model, calibration, 4)
    assert [low for low, _ in ranges] == [0.0] * 4  # ReLU outputs
    highs = np.array([high for _, high in ranges]) / openvino_decode.RANGE_STEP
    np.testing.assert_array_equal(highs, highs.round())  # rounded up: one float apart is the same
    assert (highs > 1).all()


@pytest.mark.parametrize("int8", [False, True], ids=["float", "int8"])
def test_a_rows_frame_is_the_same_in_any_call_on_any_thread_count_and_compiled_for_its_batch(
    latents, calibrated, int8
):
    graph, calibration = calibrated
    calibration = calibration if int8 else None
    decoder = openvino_decode.OpenVinoDecoder(graph, calibration=calibration)
    whole = decoder(latents)
    one_thread = openvino_decode.OpenVinoDecoder(graph, threads=1, calibration=calibration)
    np.testing.assert_array_equal(one_thread(latents), whole)
    rng = np.random.default_rng(1)
    for size in (1, 3, 16, 13, 15, 16, 14, 11, 64):  # 9-16 four times: a compiled model of 16
        rows = rng.permutation(len(latents))[:size]
        np.testing.assert_array_equal(decoder(latents[rows]), whole[rows])
    assert list(decoder._batches) == [16] and decoder(latents[:0]).shape == (0, *whole.shape[1:])
    assert [openvino_decode.padded_size(n) for n in (1, 8, 9, 64, 129, 160)] == [
        8,
        8,
        16,
        64,
        160,
        160,
    ]


def test_graphs_pick_the_decoder(monkeypatch):
    auto = Graphs(DEFAULT, device="cpu", threads=1)
    floats = "bf16" if openvino_decode.bf16_native() else "f32"
    int8 = "int8+" if openvino_decode.int8_native() else ""
    assert auto.decoder == f"openvino {int8}{floats}"
    assert Graphs(DEFAULT, device="cpu", decoder="openvino").decoder == f"openvino {floats}"
    int8_asked = Graphs(DEFAULT, device="cpu", decoder="openvino-int8")
    assert int8_asked.decoder.startswith("openvino int8")
    assert Graphs(DEFAULT, device="cpu", decoder="onnxruntime").decoder == "onnxruntime"
    assert Graphs(DEFAULT, device="cpu", decode=False).decoder is None
    with pytest.raises(ValueError, match="decoder must be one of"):
        Graphs(DEFAULT, decoder="tensorrt")
    monkeypatch.setattr(openvino_decode, "ov", None)  # as where OpenVINO is not installed
    assert Graphs(DEFAULT, device="cpu").decoder == "onnxruntime"
    with pytest.raises(UserError, match=r"pip install 'wmsim\[cpu\]'"):
        Graphs(DEFAULT, device="cpu", decoder="openvino")
    with pytest.raises(UserError, match="'openvino-int8' needs OpenVINO"):
        Graphs(DEFAULT, device="cpu", decoder="openvino-int8")


def test_a_graph_openvino_cannot_compile_falls_back_to_onnxruntime_unless_asked_for(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("unsupported operation")

    monkeypatch.setattr(openvino_decode, "OpenVinoDecoder", refuse)
    with pytest.warns(UserWarning, match="unsupported operation.*decoding with onnxruntime"):
        graphs = Graphs(DEFAULT, device="cpu")
    assert graphs.decoder == "onnxruntime" and graphs.decode(np.zeros((1, 1024), np.float32)).shape
    with pytest.raises(BundleError, match="cannot be compiled by OpenVINO"):
        Graphs(DEFAULT, device="cpu", decoder="openvino")
