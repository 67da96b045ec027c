"""Mamba-2's fused kernels: the mapping onto them (CPU, against stand-ins that read seq_idx as
the kernels do), the choice between them and the reference, and, on CUDA, the kernels
themselves against the reference (``scripts/gpu-mamba.sh`` runs those)."""

import pytest
import torch

from wmsim.model.backbones import MambaConfig, make_backbone, mamba, mamba_fused
from wmsim.model.backbones.mamba import causal_conv, kernels_for, ssd_scan


def scan_inputs(length, seed, device="cpu", dtype=torch.float64):
    """x, dt, a, b, c, resets, initial for 2 sequences of 3 heads of size 8, d_state 16, with
    resets at step 0 of the first, on a chunk boundary (16) and inside chunks."""
    g = torch.Generator(device).manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, device=device, dtype=dtype)

    x, b, c, initial = (
        rand(2, length, 3, 8),
        rand(2, length, 16),
        rand(2, length, 16),
        rand(2, 3, 8, 16),
    )
    dt = torch.nn.functional.softplus(rand(2, length, 3) - 1)
    a = -torch.rand(3, generator=g, device=device, dtype=dtype) * 2
    resets = torch.zeros(2, length, dtype=torch.bool, device=device)
    resets[0, [0, 16 % length]] = resets[1, [5 % length, length - 1]] = True
    return x, dt, a, b, c, resets, initial


def scan_as_mamba_ssm_reads_seq_idx(x, dt, a, b, c, chunk, *, initial_states, seq_idx, **_):
    """mamba_chunk_scan_combined's semantics, one step at a time: the state carries from step
    t - 1 to t only where seq_idx is unchanged, and the initial state is index 0's."""
    h, previous, ys = initial_states, torch.zeros_like(seq_idx[:, 0]), []
    for t in range(x.shape[1]):
        carried = (seq_idx[:, t] == previous).to(x.dtype)[:, None]  # (B, 1)
        decay = torch.exp(dt[:, t] * a) * carried  # (B, heads)
        added = torch.einsum("bh,bhp,bn->bhpn", dt[:, t], x[:, t], b[:, t, 0])
        h = decay[..., None, None] * h + added
        ys.append(torch.einsum("bhpn,bn->bhp", h, c[:, t, 0]))
        previous = seq_idx[:, t]
    return torch.stack(ys, 1), h


def conv_as_causal_conv1d_reads_seq_idx(x, weight, bias, seq_idx):
    """causal_conv1d_fn's semantics on (B, C, L): a tap whose seq_idx differs from the
    output's reads 0."""
    assert x.stride(1) == 1, "seq_idx needs the channel-last layout"
    taps, length = weight.shape[1], x.shape[2]
    padded = torch.nn.functional.pad(x, (taps - 1, 0))
    index = torch.nn.functional.pad(seq_idx, (taps - 1, 0), value=-1)
    out = bias[None, :, None].expand_as(x).clone()
    for k in range(taps):
        same = (index[:, k : k + length] == seq_idx)[:, None]  # (B, 1, L)
        out = out + weight[None, :, k, None] * padded[:, :, k : k + length] * same
    return out


def test_resets_become_a_sequence_index_that_starts_at_zero_and_steps_at_each_reset():
    resets = torch.tensor([[False, False, True, False, True], [True, False, False, True, True]])
    index = mamba_fused.sequence_index(resets)
    assert index.dtype == torch.int32  # the kernels read int32
    assert index.tolist() == [[0, 0, 1, 1, 2], [1, 1, 1, 2, 3]]


@pytest.mark.parametrize("chunk", [4, 64])
def test_the_fused_scan_wrapper_reproduces_the_reference_under_the_kernels_semantics(
    monkeypatch, chunk
):
    monkeypatch.setattr(mamba_fused, "mamba_chunk_scan_combined", scan_as_mamba_ssm_reads_seq_idx)
    x, dt, a, b, c, is_first, h0 = scan_inputs(21, seed=3)
    y, final = mamba_fused.ssd_scan(x, dt, a, b, c, is_first, h0, chunk)
    expected_y, expected_final = ssd_scan(x, dt, a, b, c, is_first, h0, chunk)
    torch.testing.assert_close(y, expected_y)
    torch.testing.assert_close(final, expected_final)


def test_the_fused_conv_wrapper_reproduces_the_reference_under_the_kernels_semantics(monkeypatch):
    monkeypatch.setattr(mamba_fused, "causal_conv1d_fn", conv_as_causal_conv1d_reads_seq_idx)
    g = torch.Generator().manual_seed(0)
    x, window = torch.randn(3, 9, 8, generator=g), torch.randn(3, 3, 8, generator=g)
    weight, bias = torch.randn(8, 4, generator=g), torch.randn(8, generator=g)
    is_first = torch.zeros(3, 9, dtype=torch.bool)
    is_first[0, 0] = is_first[1, 2] = is_first[1, 7] = is_first[2, 8] = True
    out, next_window = mamba_fused.causal_conv(x, window, weight, bias, is_first)
    expected_out, expected_window = causal_conv(x, window, weight, bias, is_first)
    torch.testing.assert_close(out, expected_out)
    torch.testing.assert_close(next_window, expected_window)


def test_the_reference_runs_on_a_cpu_even_with_the_kernels_installed(monkeypatch):
    monkeypatch.setattr(mamba_fused, "AVAILABLE", True)
    assert kernels_for(torch.device("cpu"), 1056, 4) == "reference"
    assert kernels_for(torch.device("cuda"), 1056, 4) == "fused"
    assert kernels_for(torch.device("cuda"), 1052, 4) == "reference"  # not a multiple of 8
    assert kernels_for(torch.device("cuda"), 1056, 5) == "reference"  # taps: 2 to 4
    monkeypatch.setattr(mamba_fused, "AVAILABLE", False)
    assert kernels_for(torch.device("cuda"), 1056, 4) == "reference"


def test_a_backbone_on_a_cpu_calls_the_reference_even_with_the_kernels_installed(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the fused kernels ran on a CPU")

    monkeypatch.setattr(mamba_fused, "AVAILABLE", True)
    monkeypatch.setitem(mamba.KERNELS, "fused", (refuse, refuse))
    backbone = make_backbone(MambaConfig(width=16, layers=1, state=4, heads=2, chunk=4), 16)
    x, is_first = torch.randn(2, 6, 16), torch.zeros(2, 6, dtype=torch.bool)
    backbone(x, is_first, backbone.initial_state(2))


class ChoiceOnCuda(torch.nn.Module):
    """x + 1 where the reference would run on a CUDA device, x + 2 where the fused kernels."""

    def forward(self, x):
        return x + (1.0 if kernels_for(torch.device("cuda"), 1056, 4) == "reference" else 2.0)


@pytest.mark.slow
def test_onnx_export_traces_the_reference_even_on_cuda_with_the_kernels_installed(monkeypatch):
    monkeypatch.setattr(mamba_fused, "AVAILABLE", True)
    x = torch.zeros(3, 2)
    assert ChoiceOnCuda()(x).eq(2).all()  # outside an export the choice would be fused
    program = torch.export.export(ChoiceOnCuda(), (x,))
    assert program.module()(x).eq(1).all()
    onnx_program = torch.onnx.export(ChoiceOnCuda(), (x,), dynamo=True, verbose=False)
    assert onnx_program(x)[0].eq(1).all()


# On a CUDA device: the kernels against the reference at fp32. Triton's fp32 matrix products
# run in TF32, so the tolerances are mamba-ssm's own for fp32 (rtol 1e-2, atol 3e-3) on
# values of order 1, and gradients are compared by relative error norm (< 1e-2).
GPU_MARKS = (
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(
        not mamba_fused.AVAILABLE,
        reason="needs mamba-ssm and causal-conv1d (scripts/gpu-mamba.sh installs them)",
    ),
)


def gpu(test):
    """Marks a test gpu and skips it without a CUDA device or without the kernels."""
    for mark in GPU_MARKS:
        test = mark(test)
    return test


def close_gradients(fused, reference, name):
    error = (fused - reference).norm() / reference.norm().clamp(min=1e-12)
    assert error < 1e-2, f"d{name}: relative error {error:.2e}"


@gpu
@pytest.mark.parametrize("chunk", [16, 64])
def test_fused_scan_equals_the_reference_with_resets_carried_state_and_gradients(chunk):
    inputs = scan_inputs(100, seed=chunk, device="cuda")  # float64: the reference is exact
    x, dt, a, b, c, is_first, h0 = inputs
    g = torch.Generator("cuda").manual_seed(0)
    weights = torch.randn(x.shape, generator=g, device="cuda", dtype=x.dtype)
    final_weights = torch.randn(h0.shape, generator=g, device="cuda", dtype=x.dtype)
    results = {}
    for name, scan in {"fused": mamba_fused.ssd_scan, "reference": ssd_scan}.items():
        kind = torch.float32 if name == "fused" else torch.float64
        leaves = [t.detach().to(kind).requires_grad_() for t in (x, dt, b, c, h0)]
        lx, ldt, lb, lc, lh0 = leaves
        y, final = scan(lx, ldt, a.to(kind), lb, lc, is_first, lh0, chunk)
        ((y * weights.to(kind)).sum() + (final * final_weights.to(kind)).sum()).backward()
        results[name] = (y.double(), final.double(), [t.grad.double() for t in leaves])
    (y, final, grads), (y_ref, final_ref, grads_ref) = results["fused"], results["reference"]
    torch.testing.assert_close(y, y_ref, rtol=1e-2, atol=3e-3)
    torch.testing.assert_close(final, final_ref, rtol=1e-2, atol=3e-3)
    for name, grad, grad_ref in zip(
        ("x", "dt", "b", "c", "initial"), grads, grads_ref, strict=True
    ):
        close_gradients(grad, grad_ref, name)


@gpu
def test_fused_conv_equals_the_reference_with_resets_a_window_and_gradients():
    g = torch.Generator("cuda").manual_seed(0)
    x = torch.randn(2, 50, 40, generator=g, device="cuda")
    window = torch.randn(2, 3, 40, generator=g, device="cuda")
    weight, bias = torch.randn(40, 4, generator=g, device="cuda"), torch.randn(40, device="cuda")
    is_first = torch.zeros(2, 50, dtype=torch.bool, device="cuda")
    is_first[0, 0] = is_first[0, 2] = is_first[1, 30] = True
    results = {}
    for name, conv in {"fused": mamba_fused.causal_conv, "reference": causal_conv}.items():
        kind = torch.float32 if name == "fused" else torch.float64  # cuDNN may use TF32
        leaves = [t.detach().to(kind).requires_grad_() for t in (x, window, weight, bias)]
        out, next_window = conv(*leaves, is_first)
        (out * x.to(kind)).sum().backward()
        results[name] = (out.double(), next_window.double(), [t.grad.double() for t in leaves])
    (out, window_out, grads), (out_ref, window_ref, grads_ref) = results.values()
    torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-4)  # fp32 sums of 4 taps
    torch.testing.assert_close(window_out, window_ref, rtol=1e-6, atol=1e-6)
    for name, grad, grad_ref in zip(
        ("x", "window", "weight", "bias"), grads, grads_ref, strict=True
    ):
        close_gradients(grad, grad_ref, name)


@gpu
def test_a_cuda_backbone_runs_the_fused_kernels_and_matches_its_step_form():
    torch.manual_seed(0)
    config = MambaConfig(width=64, layers=2, state=16, heads=4, chunk=16)
    backbone = make_backbone(config, 32, device="cuda")
    assert kernels_for(torch.device("cuda"), backbone.mixers[0].conv_channels, 4) == "fused"
    x = torch.randn(2, 40, 32, device="cuda")
    is_first = torch.zeros(2, 40, dtype=torch.bool, device="cuda")
    is_first[0, 0] = is_first[1, 17] = True
    state = {k: torch.randn_like(v) for k, v in backbone.initial_state(2, "cuda").items()}
    h, final = backbone(x, is_first, state)
    steps, s = [], state
    for t in range(40):
        out, s = backbone.step(x[:, t], is_first[:, t], s)
        steps.append(out)
    torch.testing.assert_close(h, torch.stack(steps, 1), rtol=1e-2, atol=3e-3)
    for name in final:
        torch.testing.assert_close(final[name], s[name], rtol=1e-2, atol=3e-3)
