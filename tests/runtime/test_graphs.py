"""The runtime: a state arena over the bundle's graphs; any subset of rows steps in one call."""

import subprocess
import sys

import numpy as np
import pytest

from wmsim.runtime.graphs import Graphs, Runtime
from wmsim.store import EMBEDDED

DEFAULT = EMBEDDED / "Breakout.wmsim"


@pytest.fixture(scope="module")
def runtime():
    return Runtime(DEFAULT, 6, device="cpu", threads=1)


def noise(runtime, n, seed):
    shape = (n, *runtime.bundle.spec["noise"]["shape"])
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_a_reset_is_the_start_context_observed(runtime):
    contexts = runtime.bundle.start_contexts()
    state, latent = runtime.graphs.observe(
        contexts["frames"][:2], contexts["actions"][:2], contexts["is_first"][:2]
    )
    got = runtime.reset(np.array([4, 1]), np.array([0, 1]))
    np.testing.assert_array_equal(got, latent)
    for k, v in state.items():
        np.testing.assert_array_equal(runtime.arena[k][[4, 1]], v)


def test_start_states_are_computed_by_chunk_when_a_reset_first_draws_them(runtime):
    from wmsim.runtime.graphs import START_CHUNK

    fresh = Runtime(runtime.bundle, 2, device="cpu", threads=1)
    assert not fresh._observed.any()  # nothing observed at start-up
    context = START_CHUNK + 1
    got = fresh.reset(np.array([0]), np.array([context]))
    assert fresh._observed.tolist() == [i == 1 for i in range(len(fresh._observed))]
    part = slice(START_CHUNK, 2 * START_CHUNK)
    c = {k: v[part] for k, v in fresh.bundle.start_contexts().items()}
    _, latent = fresh.graphs.observe(c["frames"], c["actions"], c["is_first"])
    np.testing.assert_array_equal(got[0], latent[1])


def test_stepping_some_rows_leaves_the_others_and_equals_stepping_them_alone(runtime):
    runtime.reset(np.arange(6), np.arange(6) % runtime.num_contexts)
    before = {k: v.copy() for k, v in runtime.arena.items()}
    rows, actions = np.array([5, 0, 3]), np.array([1, 2, 3])
    reward, cont, latent = runtime.step(rows, actions, noise(runtime, 3, 0))
    for k, v in runtime.arena.items():
        untouched = np.setdiff1d(np.arange(6), rows)
        np.testing.assert_array_equal(v[untouched], before[k][untouched])
    alone = Runtime(DEFAULT, 1, device="cpu", threads=1)
    for i, row in enumerate(rows):
        alone.reset(np.array([0]), np.array([row % runtime.num_contexts]))
        r, c, lat = alone.step(np.array([0]), actions[i : i + 1], noise(runtime, 3, 0)[i : i + 1])
        np.testing.assert_allclose(r, reward[i : i + 1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c, cont[i : i + 1], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(lat, latent[i : i + 1])


def test_a_full_step_equals_a_subset_step_of_every_row(runtime):
    contexts = np.arange(6) % runtime.num_contexts
    runtime.reset(np.arange(6), contexts)
    full = runtime.step(np.arange(6), np.ones(6, np.int64), noise(runtime, 6, 1))
    runtime.reset(np.arange(6), contexts)
    shuffled = np.array([3, 1, 0, 5, 2, 4])
    part = runtime.step(shuffled, np.ones(6, np.int64), noise(runtime, 6, 1)[shuffled])
    np.testing.assert_allclose(part[0], full[0][shuffled], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(part[2], full[2][shuffled])
    frames = runtime.frames(np.array([2]))
    assert frames.shape == (1, 64, 64, 3) and frames.dtype == np.uint8


def test_a_step_split_between_threads_dreams_what_one_call_dreams_bit_for_bit():
    rows = np.arange(2 * 16 + 3)  # two parts of uneven size
    whole = Runtime(DEFAULT, len(rows), device="cpu", threads=1, decode=False)
    split = Runtime(DEFAULT, len(rows), device="cpu", threads=2, decode=False)
    assert split.graphs.step_parts == 2 and whole.graphs.step_parts == 1
    for runtime in (whole, split):
        runtime.reset(rows, rows % runtime.num_contexts)
    for t in range(3):
        actions, n = rows % 4, noise(whole, len(rows), t)
        got, expected = split.step(rows, actions, n), whole.step(rows, actions, n)
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)
    for k, v in split.arena.items():
        np.testing.assert_array_equal(v, whole.arena[k])


def test_an_empty_step_is_a_no_op(runtime):
    reward, cont, latent = runtime.step(np.zeros(0, np.int64), np.zeros(0), noise(runtime, 0, 0))
    assert reward.shape == cont.shape == (0,) and latent.shape[0] == 0


def test_auto_device_on_a_cpu_machine_is_quiet():
    code = (
        "from wmsim.runtime.graphs import Runtime\n"
        f"r = Runtime({str(DEFAULT)!r}, 2)\n"
        "print(r.graphs.device)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in ("cpu", "cuda")
    assert result.stderr == ""


def test_decode_can_be_left_out_for_latent_clients():
    graphs = Graphs(DEFAULT, device="cpu", decode=False)
    assert "decode" not in graphs.sessions
    with pytest.raises(RuntimeError, match="decode=False"):
        graphs.decode(np.zeros((1, 1024), np.float32))


@pytest.mark.parametrize("threads", [1, 2])
def test_a_step_of_some_rows_on_bound_scratch_buffers_dreams_what_an_unbound_step_dreams(
    threads, monkeypatch
):
    """Some rows of a larger arena (a server's batch), stepped on the bound scratch buffers ==
    the same step fed and joined by hand (the unbound graph call), arena and latents alike.

    Rows in order and shuffled, batches of several sizes (more than are kept, so a bound
    step is dropped and made again), one part and two; a size seen once stays unbound.
    """
    import wmsim.runtime.graphs as graphs_module

    monkeypatch.setattr(graphs_module, "SOME_ROWS_KEPT", 2)
    monkeypatch.setattr(graphs_module, "SOME_ROWS_AFTER", 2)
    capacity = 50
    bound = Runtime(DEFAULT, capacity, device="cpu", threads=threads, decode=False)
    plain = Runtime(DEFAULT, capacity, device="cpu", threads=threads, decode=False)
    everything = np.arange(capacity)
    for runtime in (bound, plain):
        runtime.reset(everything, everything % runtime.num_contexts)
    shuffled = np.random.default_rng(0).permutation(capacity)
    batches = [np.arange(5, 40), shuffled[:35], shuffled[:3], shuffled[10:30], np.arange(35)]
    for t, rows in enumerate(batches * 2 + [shuffled[:7]]):
        actions, n_t = (rows + t) % 4, noise(bound, len(rows), t)
        reward, cont = bound.advance(rows, actions, n_t)
        state = {k: v[rows] for k, v in plain.arena.items()}
        state, expected_reward, expected_cont, latent = plain.graphs.step(state, actions, n_t)
        for k, array in plain.arena.items():
            array[rows] = state[k]
        plain.latents[rows] = latent
        np.testing.assert_array_equal(reward, expected_reward)
        np.testing.assert_array_equal(cont, expected_cont)
        for k, array in bound.arena.items():
            np.testing.assert_array_equal(array, plain.arena[k], err_msg=k)
        np.testing.assert_array_equal(bound.latents, plain.latents)
    # 35 rows was bound first, dropped for 20 (the least recently used) and seen once since;
    # 7 rows was seen once: both step unbound now
    assert set(bound._some) == {3, 20}
    assert bound._bound is None


@pytest.mark.parametrize("threads", [1, 2])
def test_a_step_of_every_row_through_bound_buffers_dreams_what_a_subset_step_dreams(threads):
    """Every row stepped (the bound ping-pong arenas) == the same rows of a larger arena.

    Resets, a clear and a step of some rows come between the full steps: they write into
    whichever copy of the arena is current.
    """
    n = 2 * 16 + 3  # two parts of uneven size when threads=2
    rows = np.arange(n)
    full = Runtime(DEFAULT, n, device="cpu", threads=threads, decode=False)
    larger = Runtime(DEFAULT, n + 5, device="cpu", threads=threads, decode=False)
    kept = []
    for runtime in (full, larger):
        runtime.reset(rows, rows % runtime.num_contexts)
    for t in range(6):
        actions, n_t = (rows + t) % 4, noise(full, n, t)
        got, expected = full.step(rows, actions, n_t), larger.step(rows, actions, n_t)
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)
        kept.append((got[0], got[0].copy()))
        if t == 1:  # resets land in the copy the next step reads
            for runtime in (full, larger):
                runtime.reset(np.array([3, 7]), np.array([5, 9]))
        if t == 2:
            for runtime in (full, larger):
                runtime.clear(np.array([0]))
                runtime.reset(np.array([0]), np.array([2]))
        if t == 3:  # some rows only: the bound path is left and taken again after
            some = np.array([30, 2, 11])
            a = full.step(some, np.ones(3, np.int64), noise(full, 3, 99))
            b = larger.step(some, np.ones(3, np.int64), noise(full, 3, 99))
            np.testing.assert_array_equal(a[0], b[0])
    assert full._bound is not None and larger._bound is None
    for k, v in full.arena.items():
        np.testing.assert_array_equal(v, larger.arena[k][:n])
    np.testing.assert_array_equal(full.latents, larger.latents[:n])
    for returned, copy in kept:  # a step's rewards are the caller's: later steps leave them
        np.testing.assert_array_equal(returned, copy)
