"""STORM's transformer: the ring-buffer cache equals windowed attention, over any length."""

import torch

from wmsim.model.backbones import TransformerConfig, make_backbone

WINDOW = 6
CONFIG = TransformerConfig(width=16, layers=2, heads=2, ffn=24, window=WINDOW, dropout=0.0)


def backbone():
    torch.manual_seed(0)
    return make_backbone(CONFIG, 8, dtype=torch.float64).eval()


def test_ring_buffer_imagination_equals_the_windowed_parallel_form_far_past_the_window():
    model = backbone()
    x = torch.randn(2, 5 * WINDOW, 8, dtype=torch.float64)
    is_first = torch.zeros(2, 5 * WINDOW, dtype=torch.bool)
    state = model.initial_state(2, dtype=torch.float64)
    h_parallel, _ = model(x, is_first, state)
    outputs = []
    for t in range(x.shape[1]):
        h, state = model.step(x[:, t], is_first[:, t], state)
        outputs.append(h)
    torch.testing.assert_close(torch.stack(outputs, 1), h_parallel)
    assert state["slot_pos"].max() == 5 * WINDOW - 1  # positions keep counting; slots wrap


def test_attention_sees_exactly_the_last_window_tokens_per_layer():
    # with 2 layers, h_t depends on inputs back to t - 2 (window - 1), and no further
    model = backbone()
    x = torch.randn(1, 20, 8, dtype=torch.float64)
    is_first = torch.zeros(1, 20, dtype=torch.bool)
    state = model.initial_state(1, dtype=torch.float64)
    h, _ = model(x, is_first, state)
    reach = 2 * (WINDOW - 1)
    t = 19
    outside, inside = x.clone(), x.clone()
    outside[0, t - reach - 1] += 1.0
    inside[0, t - reach] += 1.0
    torch.testing.assert_close(model(outside, is_first, state)[0][0, t], h[0, t])
    assert not torch.allclose(model(inside, is_first, state)[0][0, t], h[0, t])


def test_the_cache_has_a_fixed_size():
    model = backbone()
    state = model.initial_state(3, dtype=torch.float64)
    spec = model.state_spec()
    assert spec["k0"].shape == (WINDOW, 2, 8) and spec["slot_pos"].shape == (WINDOW,)
    x = torch.randn(3, 8, dtype=torch.float64)
    for _ in range(3 * WINDOW):
        _, state = model.step(x, torch.zeros(3, dtype=torch.bool), state)
    assert all(tuple(state[k].shape) == (3, *spec[k].shape) for k in spec)


def test_positions_are_relative_so_long_dreams_behave_like_short_ones():
    # the same inputs give the same outputs at step 0 and at step 10,000, once the
    # cache's older tokens have slid out of every layer's window
    model = backbone()
    x = torch.randn(1, WINDOW * 3, 8, dtype=torch.float64)
    is_first = torch.zeros(1, WINDOW * 3, dtype=torch.bool)
    early, _ = model(x, is_first, model.initial_state(1, dtype=torch.float64))
    late_state = model.initial_state(1, dtype=torch.float64)
    positions = torch.arange(10_000 - WINDOW, 10_000)
    late_state["slot_pos"][0, positions % WINDOW] = positions  # 10,000 tokens already seen
    late, _ = model(x, is_first, late_state)
    settled = 2 * (WINDOW - 1)
    torch.testing.assert_close(late[:, settled:], early[:, settled:])
    assert not torch.allclose(late[:, :settled], early[:, :settled])  # the cache did matter
