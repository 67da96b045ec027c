"""The RetNet decoder: parallel == chunkwise == a loop of steps, with resets and carried states;
REM's parallel path for prediction tokens == its sequential definition."""

import pytest
import torch

from wmsim.model.retnet import RetNet, RetNetConfig


@pytest.fixture
def retnet():
    torch.manual_seed(0)
    config = RetNetConfig(width=16, layers=2, heads=2, ffn=24, dropout=0.0)
    return RetNet(config, dtype=torch.float64).eval()


def inputs(length, seed, start=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, length, 16, generator=g, dtype=torch.float64)
    positions = start + torch.arange(length).expand(2, -1)
    resets = torch.rand(2, length, generator=g) < 0.1
    return x, positions, resets


def step_loop(retnet, x, positions, resets, states):
    outputs = []
    for t in range(x.shape[1]):
        out, states = retnet.step(x[:, t], positions[:, t], resets[:, t], states)
        outputs.append(out)
    return torch.stack(outputs, 1), states


def assert_same(a, b):
    torch.testing.assert_close(a[0], b[0])
    assert a[1].keys() == b[1].keys()
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], msg=name)


@pytest.mark.parametrize("chunk", [None, 1, 5, 13])
def test_every_form_equals_a_loop_of_steps_from_a_carried_state(retnet, chunk):
    warm = step_loop(retnet, *inputs(7, seed=1), retnet.initial_state(2, dtype=torch.float64))[1]
    x, positions, resets = inputs(13, seed=2, start=7)
    assert_same(
        retnet(x, positions, resets, warm, chunk=chunk),
        step_loop(retnet, x, positions, resets, warm),
    )


def test_positions_matter_relative_to_the_history(retnet):
    # rotary positions are relative: shifting every position changes nothing, but where new
    # tokens sit relative to the carried history does (POP relies on it)
    history = inputs(6, seed=3)
    x, positions, _ = inputs(4, seed=4, start=6)
    resets = torch.zeros(2, 4, dtype=torch.bool)
    fresh = retnet.initial_state(2, dtype=torch.float64)
    _, warm = retnet(*history[:2], torch.zeros_like(history[2]), fresh)
    here, _ = retnet(x, positions, resets, warm)
    later, _ = retnet(x, positions + 3, resets, warm)
    assert not torch.allclose(here, later)
    torch.testing.assert_close(
        retnet(x, positions, resets, fresh)[0], retnet(x, positions + 3, resets, fresh)[0]
    )


def test_rem_sizes():
    retnet = RetNet(RetNetConfig())
    # REM's RetNet core is 4.28M parameters (REM: Cohen et al., ICML 2024)
    assert abs(sum(p.numel() for p in retnet.parameters()) / 1e6 - 4.28) < 0.03


def pop_inputs(blocks, block, queries, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, blocks * block, 16, generator=g, dtype=torch.float64)
    positions = 5 + torch.arange(blocks * block).expand(2, -1)
    resets = torch.zeros(2, blocks * block, dtype=torch.bool)
    resets[0, 2 * block] = resets[1, 0] = True  # an episode starts at a block
    query = torch.randn(2, blocks, queries, 16, generator=g, dtype=torch.float64)
    query_positions = positions.unflatten(1, (blocks, block))[..., :queries]
    return x, positions, resets, query, query_positions


def test_pop_parallel_path_equals_its_sequential_definition(retnet):
    block, blocks = 5, 4
    x, positions, resets, query, query_positions = pop_inputs(blocks, block, 4, seed=6)
    warm = step_loop(retnet, *inputs(3, seed=7), retnet.initial_state(2, dtype=torch.float64))[1]
    out, query_out, states = retnet.forward_pop(
        x, positions, resets, warm, query, query_positions, block
    )
    # the definition: block n's prediction tokens run on the state before it and their state
    # is dropped; then the block's real tokens update the state
    expected_out, expected_query, s = [], [], warm
    for n in range(blocks):
        part = slice(n * block, (n + 1) * block)
        query_resets = torch.zeros(2, 4, dtype=torch.bool)
        query_resets[:, 0] = resets[:, part][:, 0]
        expected_query.append(retnet(query[:, n], query_positions[:, n], query_resets, s)[0])
        o, s = retnet(x[:, part], positions[:, part], resets[:, part], s)
        expected_out.append(o)
    torch.testing.assert_close(out, torch.cat(expected_out, 1))
    torch.testing.assert_close(query_out, torch.stack(expected_query, 1))
    assert_same((out, states), (torch.cat(expected_out, 1), s))


def test_prediction_tokens_never_change_the_state_or_the_real_outputs(retnet):
    x, positions, resets, query, query_positions = pop_inputs(3, 5, 4, seed=8)
    fresh = retnet.initial_state(2, dtype=torch.float64)
    plain = retnet(x, positions, resets, fresh)
    a = retnet.forward_pop(x, positions, resets, fresh, query, query_positions, 5)
    b = retnet.forward_pop(x, positions, resets, fresh, 10 * query + 1, query_positions, 5)
    assert_same((a[0], a[2]), plain)
    assert_same((b[0], b[2]), plain)
    assert not torch.allclose(a[1], b[1])
