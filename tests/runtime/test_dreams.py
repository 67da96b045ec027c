"""Dreams: rows with their own generators; what a seed reproduces, wherever rows are stepped."""

import numpy as np
import pytest
from gymnasium.utils import seeding
from helpers import FORMAT_1_BUNDLE

from wmsim.runtime.dreams import BLOCK, Dreams
from wmsim.store import EMBEDDED

DEFAULT = EMBEDDED / "Breakout.wmsim"


@pytest.fixture(scope="module", params=["format 1", "format 2"])
def dreams(request):
    """The default shipped before (format 1: Gumbel-max) and today's (format 2: inverse CDF)."""
    bundle = FORMAT_1_BUNDLE if request.param == "format 1" else DEFAULT
    return Dreams(bundle, 4, device="cpu", threads=1)


def rollout(dreams, rows, seeds, steps=6):
    contexts = dreams.reset(rows, seeds)
    out = [contexts]
    for t in range(steps):
        actions = (np.array(seeds) + t) % 4  # each dream its own actions
        out.extend(dreams.step(rows, actions))
        out.append(dreams.frames(rows))
    return out


@pytest.mark.parametrize("steps", [1, BLOCK - 1, BLOCK, BLOCK + 3])
def test_a_row_draws_exactly_what_a_gymnasium_seeded_generator_draws(dreams, steps):
    dreams.reset(np.array([2]), [11])
    for _ in range(steps):
        dreams.step(np.array([2]), np.array([1]))
    expected = seeding.np_random(11)[0]
    expected.integers(dreams.num_contexts)  # the start context
    size = int(np.prod(dreams.noise_shape)) + 1  # the step's noise, by its format, and then
    for _ in range(steps):
        expected.random(size, dtype=np.float32)  # the end decision, drawn however it ends
    dreams.settle(np.array([2]))  # the numbers drawn ahead, given back
    assert dreams.rngs[2].bit_generator.state == expected.bit_generator.state


def test_a_reset_in_the_middle_of_a_block_draws_its_context_where_step_by_step_would(dreams):
    size = int(np.prod(dreams.noise_shape)) + 1
    dreams.reset(np.array([1]), [4])
    for _ in range(3):
        dreams.step(np.array([1]), np.array([0]))
    contexts = [dreams.reset(np.array([1]))[0] for _ in range(2)]  # unseeded: the stream goes on
    expected = seeding.np_random(4)[0]
    expected.integers(dreams.num_contexts)
    expected.random(3 * size, dtype=np.float32)
    assert contexts == [expected.integers(dreams.num_contexts) for _ in range(2)]


def test_none_keeps_the_generator_and_a_seed_replaces_it(dreams):
    dreams.reset(np.array([0, 1]), [5, 5])
    before = dreams.rngs[1].bit_generator.state
    dreams.reset(np.array([0, 1]), [5, None])
    assert dreams.rngs[1].bit_generator.state != before  # it went on drawing
    again = seeding.np_random(5)[0]
    again.integers(dreams.num_contexts)
    assert dreams.rngs[0].bit_generator.state == again.bit_generator.state


def test_rows_stepped_together_dream_what_they_dream_alone(dreams):
    """What the server's batcher relies on: merging rows changes nothing."""
    together = rollout(dreams, np.array([3, 0]), [7, 8])
    alone = [rollout(dreams, np.array([1]), [seed]) for seed in (7, 8)]
    for k, merged in enumerate(together):
        for i in range(2):
            if merged.dtype.kind == "f":
                np.testing.assert_allclose(merged[i], alone[i][k][0], rtol=1e-5, atol=1e-6)
            else:
                np.testing.assert_array_equal(merged[i], alone[i][k][0])


def test_frames_are_real_at_a_reset_and_decoded_once_per_step(dreams):
    contexts = dreams.reset(np.array([0]), [1])
    np.testing.assert_array_equal(dreams.frames(np.array([0]))[0],
                                  dreams.runtime.start_frames[contexts[0]])  # fmt: skip
    dreams.step(np.array([0]), np.array([0]))
    first = dreams.frames(np.array([0, 0]))
    np.testing.assert_array_equal(first[0], first[1])
    np.testing.assert_array_equal(first[0], dreams.runtime.frames(np.array([0]))[0])
    assert dreams.observations(np.array([0]), "latent").shape == (1, 1024)


def test_a_row_handed_to_a_new_user_keeps_nothing_of_the_last_one(dreams):
    rows = np.array([2, 3])
    dreams.reset(rows, [5, 6])
    dreams.step(rows, np.array([1, 2]))
    assert dreams.frames(rows).any() and dreams.latents(rows).any()
    dreams.forget(rows)
    assert not dreams.frames(rows).any() and not dreams.latents(rows).any()
    assert not any(array[rows].any() for array in dreams.runtime.arena.values())


def test_mode_rows_dream_the_same_from_one_context_whatever_their_seeds(dreams):
    rows = np.arange(4)
    dreams.mode[:] = [True, True, False, False]
    try:
        contexts = dreams.reset(rows, [1, 2, 3, 4])
        start = np.full(4, contexts[0])
        dreams.runtime.reset(rows, start)  # one context for all: only the draws differ
        for _ in range(6):
            dreams.step(rows, np.array([1, 1, 1, 1]))
        frames = dreams.frames(rows)
    finally:
        dreams.mode[:] = False
    np.testing.assert_array_equal(frames[0], frames[1])  # mode: the draws change nothing
    assert not np.array_equal(frames[2], frames[3])  # sampled: they do
