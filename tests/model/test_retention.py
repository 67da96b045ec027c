"""Retention: chunkwise == recurrent == parallel, with resets and a carried state; REM's decays."""

import pytest
import torch

from wmsim.model.retention import (
    rem_decays,
    retention_chunkwise,
    retention_parallel,
    retention_per_block,
    retention_step,
)


def inputs(length, seed, resets=0.1, batch=2, heads=3, d_k=4, d_v=5):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    q, k, v = (
        rand(batch, heads, length, d_k),
        rand(batch, heads, length, d_k),
        rand(batch, heads, length, d_v),
    )
    gamma = torch.rand(heads, generator=g, dtype=torch.float64) * 0.5 + 0.45
    is_first = torch.rand(batch, length, generator=g) < resets
    return q, k, v, gamma, is_first, rand(batch, heads, d_k, d_v)


def recurrent(q, k, v, gamma, is_first, state):
    outputs = []
    for t in range(q.shape[2]):
        out, state = retention_step(
            q[:, :, t], k[:, :, t], v[:, :, t], gamma, is_first[:, t], state
        )
        outputs.append(out)
    return torch.stack(outputs, 2), state


@pytest.mark.parametrize("length", [1, 6, 25])
def test_parallel_equals_recurrent_with_resets_from_a_carried_state(length):
    args = inputs(length, seed=length)
    out, final = retention_parallel(*args)
    expected, expected_final = recurrent(*args)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(final, expected_final)


@pytest.mark.parametrize("chunk", [1, 4, 7, 25, 64])
def test_chunkwise_equals_parallel(chunk):
    args = inputs(25, seed=chunk, resets=0.15)
    out, final = retention_chunkwise(*args, chunk=chunk)
    expected, expected_final = retention_parallel(*args)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(final, expected_final)


def test_without_resets_it_is_retnets_closed_form():
    q, k, v, gamma, _, state = inputs(6, seed=1)
    no_resets = torch.zeros(2, 6, dtype=torch.bool)
    out, final = retention_parallel(q, k, v, gamma, no_resets, state)
    i = torch.arange(6, dtype=torch.float64)
    g = gamma[:, None, None]
    decay = torch.where(i[:, None] >= i[None, :], g ** (i[:, None] - i[None, :]), 0.0)  # D
    xi = gamma[:, None] ** (i + 1)  # (H, T)
    expected = (q @ k.transpose(-1, -2) * decay) @ v + (q @ state) * xi[..., None]
    zeta = gamma[:, None] ** (5 - i)
    expected_final = k.transpose(-1, -2) @ (v * zeta[..., None]) + gamma[:, None, None] ** 6 * state
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(final, expected_final)


def test_a_reset_cuts_everything_before_it():
    q, k, v, gamma, _, state = inputs(10, seed=2, resets=0.0)
    is_first = torch.zeros(2, 10, dtype=torch.bool)
    is_first[:, 4] = True
    out, final = retention_parallel(q, k, v, gamma, is_first, state)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, :4], v2[:, :, :4] = 0.0, 7.0
    out2, final2 = retention_parallel(q, k2, v2, gamma, is_first, 3 * state)
    torch.testing.assert_close(out[:, :, 4:], out2[:, :, 4:])
    torch.testing.assert_close(final, final2)


def test_rem_decays_for_four_heads():
    torch.testing.assert_close(
        rem_decays(4),
        torch.tensor([0.96875, 0.98760, 0.99508, 0.99805], dtype=torch.float64),
        atol=5e-6,
        rtol=0,
    )


def test_per_block_states_are_the_states_entering_each_block():
    q, k, v, gamma, is_first, state = inputs(11, seed=5, resets=0.2)
    out, final, entering = retention_per_block(q, k, v, gamma, is_first, state, block=4)
    torch.testing.assert_close((out, final), recurrent(q, k, v, gamma, is_first, state))
    assert entering.shape == (2, 3, *state.shape[1:])
    torch.testing.assert_close(entering[:, 0], state)
    for n, start in [(1, 4), (2, 8)]:
        before = recurrent(*(t[:, :, :start] for t in (q, k, v)), gamma, is_first[:, :start], state)
        torch.testing.assert_close(entering[:, n], before[1])
