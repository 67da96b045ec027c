"""Mamba-2: the chunked SSD scan against its recurrence, the conv window, DRAMA's flowing state."""

import pytest
import torch

from wmsim.model.backbones import MambaConfig, make_backbone
from wmsim.model.backbones.mamba import causal_conv, ssd_scan


def recurrence(x, dt, a, b, c, resets, h):
    """H_t = exp(dt_t a) (1 - r_t) H_{t-1} + dt_t x_t b_t^T; y_t = H_t c_t, one step at a time."""
    ys = []
    for t in range(x.shape[1]):
        decay = torch.exp(dt[:, t] * a) * (~resets[:, t]).double()[:, None]  # (B, heads)
        h = decay[..., None, None] * h + torch.einsum("bh,bhp,bn->bhpn", dt[:, t], x[:, t], b[:, t])
        ys.append(torch.einsum("bhpn,bn->bhp", h, c[:, t]))
    return torch.stack(ys, 1), h


def scan_inputs(length, seed, resets=0.1):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    batch, heads, size, state = 2, 3, 4, 5
    x, b, c = (
        rand(batch, length, heads, size),
        rand(batch, length, state),
        rand(batch, length, state),
    )
    dt = torch.nn.functional.softplus(rand(batch, length, heads))
    a = -torch.rand(heads, generator=g, dtype=torch.float64) * 4
    is_first = torch.rand(batch, length, generator=g) < resets
    h0 = rand(batch, heads, size, state)
    return x, dt, a, b, c, is_first, h0


@pytest.mark.parametrize("chunk", [1, 3, 8, 64])
@pytest.mark.parametrize("length", [1, 8, 21])
def test_chunked_scan_equals_the_recurrence_with_resets_and_a_carried_state(length, chunk):
    inputs = scan_inputs(length, seed=length * 100 + chunk)
    y, final = ssd_scan(*inputs, chunk=chunk)
    expected_y, expected_final = recurrence(*inputs)
    torch.testing.assert_close(y, expected_y)
    torch.testing.assert_close(final, expected_final)


def test_a_reset_on_a_chunk_boundary_cuts_the_carried_state():
    x, dt, a, b, c, is_first, h0 = scan_inputs(12, seed=1, resets=0.0)
    is_first[:, 4] = True  # the first step of the second chunk of 4
    y, _ = ssd_scan(x, dt, a, b, c, is_first, h0, chunk=4)
    y_other, _ = ssd_scan(x, dt, a, b, c, is_first, 5 * h0, chunk=4)
    assert not torch.allclose(y[:, :4], y_other[:, :4])
    torch.testing.assert_close(y[:, 4:], y_other[:, 4:])


def test_the_conv_sees_only_the_current_episode():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 6, 2, generator=g, dtype=torch.float64)
    window = torch.randn(1, 3, 2, generator=g, dtype=torch.float64)
    weight, bias = torch.ones(2, 4, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    is_first = torch.tensor([[False, False, True, False, False, False]])
    out, next_window = causal_conv(x, window, weight, bias, is_first)
    # with unit taps each output is the sum of the last 4 inputs of its episode
    torch.testing.assert_close(out[0, 1], window[0, 1:].sum(0) + x[0, :2].sum(0))
    torch.testing.assert_close(out[0, 3], x[0, 2:4].sum(0))
    torch.testing.assert_close(next_window, x[:, 3:])


def tiny(**overrides):
    torch.manual_seed(0)
    config = MambaConfig(width=16, layers=2, state=4, heads=2, chunk=4, **overrides)
    return make_backbone(config, 16, dtype=torch.float64)


def test_drama_state_flows_across_episode_starts_in_both_forms():
    backbone = tiny(episode_resets=False)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 10, 16, generator=g, dtype=torch.float64)
    is_first = torch.zeros(2, 10, dtype=torch.bool)
    is_first[:, 5] = True
    state = backbone.initial_state(2, dtype=torch.float64)
    h, _ = backbone(x, is_first, state)
    h_no_starts, _ = backbone(x, torch.zeros_like(is_first), state)
    torch.testing.assert_close(h, h_no_starts)  # is_first is ignored: earlier frames reach on
    steps, s = [], state
    for t in range(10):
        out, s = backbone.step(x[:, t], is_first[:, t], s)
        steps.append(out)
    torch.testing.assert_close(h, torch.stack(steps, 1))
    assert not torch.allclose(h, tiny()(x, is_first, state)[0])  # the default does cut there


def test_the_ssm_state_stays_in_fp32_in_a_bfloat16_model():
    torch.manual_seed(0)
    backbone = make_backbone(MambaConfig(width=16, layers=1, state=4, heads=2), 16).bfloat16()
    state = backbone.initial_state(2)
    x = torch.randn(2, 5, 16, dtype=torch.bfloat16)
    h, final = backbone(x, torch.zeros(2, 5, dtype=torch.bool), state)
    assert h.dtype == torch.bfloat16 and final["ssm0"].dtype == torch.float32
    h, stepped = backbone.step(x[:, 0], torch.zeros(2, dtype=torch.bool), state)
    assert h.dtype == torch.bfloat16 and stepped["ssm0"].dtype == torch.float32
