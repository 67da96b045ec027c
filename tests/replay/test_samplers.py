import numpy as np
import pytest
from helpers import write_synthetic

from wmsim.replay import SAMPLERS, DFSSampler, Replay, UniformSampler
from wmsim.replay.samplers import (
    _without_replacement,
    balanced_starts,
    event_rows,
    windows_with_events,
)


@pytest.fixture
def replay(tmp_path):
    write_synthetic(tmp_path, [[10, 25], [40]], chunk_length=8)
    return Replay(tmp_path)


def windows_are_whole(replay, starts, length):
    batch = replay.gather(starts, length)
    px = batch["obs"][:, :, 0, 0].astype(int)
    stream, t = px[..., 1], px[..., 0] + 256 * px[..., 2]
    return (stream == stream[:, :1]).all() and (np.diff(t, axis=1) == 1).all()


def test_samplers_by_name():
    assert SAMPLERS == {"uniform": UniformSampler, "dfs": DFSSampler}


@pytest.mark.parametrize("name", ["uniform", "dfs"])
def test_every_window_lies_inside_one_stream(replay, name):
    sampler, rng = SAMPLERS[name](), np.random.default_rng(0)
    valid = set(replay.window_starts(16).tolist())
    for _ in range(50):
        for starts in (
            sampler.train_starts(replay.window_starts(16), 8, rng),
            sampler.imagination_starts(replay.window_starts(16), 8, rng),
        ):
            assert set(starts.tolist()) <= valid
            assert windows_are_whole(replay, starts, 16)


def test_uniform_reaches_every_start(replay):
    starts = UniformSampler().train_starts(replay.window_starts(16), 5000, np.random.default_rng(0))
    assert set(starts.tolist()) == set(replay.window_starts(16).tolist())


def test_sample_returns_batch_major_windows(replay):
    batch = replay.sample(6, 9, np.random.default_rng(0))
    assert batch["obs"].shape == (6, 9, 4, 4, 3)
    assert batch["is_first"].shape == (6, 9) and batch["is_first"].dtype == np.bool_
    batch = replay.sample(6, 9, np.random.default_rng(0), sampler=DFSSampler())
    assert batch["reward"].shape == (6, 9)


def test_dfs_counts_each_draw_once_and_never_twice_in_a_batch(replay):
    sampler, rng = DFSSampler(), np.random.default_rng(0)
    for _ in range(30):
        starts = sampler.train_starts(replay.window_starts(16), 10, rng)
        assert len(set(starts.tolist())) == 10  # without replacement
    assert sampler.train_counts.sum() == 300
    valid = replay.window_starts(16)
    assert sampler.train_counts[valid].sum() == 300  # counted at the window's start only
    assert sampler.imagine_counts.sum() == 0
    sampler.imagination_starts(replay.window_starts(16), 4, rng)
    assert sampler.imagine_counts.sum() == 4


def test_dfs_spreads_training_evenly(replay):
    # exp(-n / tau) favours the least-trained starts, so counts stay level
    dfs, uniform, rng = DFSSampler(tau=1.0), UniformSampler(), np.random.default_rng(0)
    counts = np.zeros(replay.num_steps, int)
    for _ in range(40):
        dfs.train_starts(replay.window_starts(16), 4, rng)
        np.add.at(counts, uniform.train_starts(replay.window_starts(16), 4, rng), 1)
    valid = replay.window_starts(16)
    assert dfs.train_counts[valid].std() < 0.7 * counts[valid].std()


def test_dfs_training_probabilities_follow_exp_of_minus_count_over_tau(replay):
    valid = replay.window_starts(16)
    sampler = DFSSampler(tau=10.0)
    sampler.train_counts = np.zeros(replay.num_steps, np.int64)
    sampler.train_counts[valid[:3]] = [0, 10, 20]
    sampler.train_counts[valid[3:]] = 1000  # practically never drawn
    state = sampler.state_dict()
    rng, hits = np.random.default_rng(0), np.zeros(3)
    for _ in range(6000):
        sampler.load_state_dict(state)
        (start,) = sampler.train_starts(replay.window_starts(16), 1, rng)
        hits[list(valid[:3]).index(start)] += 1
    expected = np.exp([0.0, -1.0, -2.0]) / np.exp([0.0, -1.0, -2.0]).sum()
    np.testing.assert_allclose(hits / hits.sum(), expected, atol=0.02)


def test_dfs_imagination_score(replay):
    # score = n - alpha m' - beta max(0, n - m'), m' = m / scale; a cold temperature
    # makes the draw an argmax, so the winners show which scores are highest.
    valid = replay.window_starts(16)
    n = np.zeros(replay.num_steps, np.int64)
    m = np.zeros(replay.num_steps, np.int64)
    n[valid], m[valid] = 50, 10_000  # everything else: far below
    n[valid[:4]] = [4, 4, 9, 0]
    m[valid[:4]] = [0, 8, 4, 0]  # m' = m / 2
    # alpha 2, beta 0.5: scores 4-0-2 = 2, 4-8-0 = -4, 9-4-3.5 = 1.5, 0
    sampler = DFSSampler(imagine_tau=1e-3, imagine_scale=2.0, alpha=2.0, beta=0.5)
    sampler.load_state_dict({"train_counts": n, "imagine_counts": m})
    top = sampler.imagination_starts(replay.window_starts(16), 3, np.random.default_rng(0))
    assert set(top.tolist()) == {valid[0], valid[2], valid[3]}
    assert (sampler.imagine_counts[top] == m[top] + 1).all()


def test_gumbel_top_k_draws_without_replacement_with_the_right_odds():
    logits = np.log(np.array([0.5, 0.3, 0.2]))
    rng = np.random.default_rng(0)
    firsts, pairs = np.zeros(3), {}
    for _ in range(20000):
        a, b = sorted(_without_replacement(logits, 2, rng).tolist())
        pairs[(a, b)] = pairs.get((a, b), 0) + 1
        firsts[_without_replacement(logits, 1, rng)[0]] += 1
    np.testing.assert_allclose(firsts / 20000, [0.5, 0.3, 0.2], atol=0.015)
    # P({0, 1}) = .5 * .3/.5 + .3 * .5/.7 = 0.5143
    assert pairs[(0, 1)] / 20000 == pytest.approx(0.3 + 0.3 * 0.5 / 0.7, abs=0.015)


def test_state_dict_resumes_the_same_draws(replay):
    a = DFSSampler()
    a.train_starts(replay.window_starts(16), 8, np.random.default_rng(1))
    b = DFSSampler()
    b.load_state_dict(a.state_dict())
    rng_a, rng_b = np.random.default_rng(2), np.random.default_rng(2)
    for _ in range(5):
        assert (
            a.train_starts(replay.window_starts(16), 8, rng_a)
            == b.train_starts(replay.window_starts(16), 8, rng_b)
        ).all()
        imagine_a = a.imagination_starts(replay.window_starts(16), 4, rng_a)
        assert (imagine_a == b.imagination_starts(replay.window_starts(16), 4, rng_b)).all()


def test_clear_errors_when_the_replay_is_too_small(replay):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="no window of 100 consecutive steps"):
        replay.sample(1, 100, rng)
    with pytest.raises(ValueError, match="no window to sample"):
        UniformSampler().train_starts(replay.window_starts(100), 1, rng)
    with pytest.raises(ValueError, match="cannot draw 100 distinct windows"):
        DFSSampler().train_starts(replay.window_starts(30), 100, rng)


def test_counts_grow_with_the_replay(tmp_path):
    write_synthetic(tmp_path, [[20]], chunk_length=8)
    replay, sampler = Replay(tmp_path), DFSSampler()
    sampler.train_starts(replay.window_starts(8), 2, np.random.default_rng(0))
    assert len(sampler.train_counts) == replay.window_starts(8).max() + 1
    first = sampler.train_counts.copy()
    write_synthetic(tmp_path, [[30]], chunk_length=8)
    replay.refresh()
    sampler.train_starts(replay.window_starts(8), 2, np.random.default_rng(0))
    assert len(sampler.train_counts) == replay.window_starts(8).max() + 1 > len(first)
    assert (sampler.train_counts[: len(first)] >= first).all()
    assert sampler.train_counts.sum() == 4


def test_event_rows_are_the_rewards_and_ends(replay):
    everything = replay.gather(replay.window_starts(1), 1)
    rows = replay.window_starts(1)
    reward, ends = everything["reward"][:, 0] != 0, everything["is_terminal"][:, 0]
    lost = everything["life_loss"][:, 0]
    assert set(event_rows(replay).tolist()) == set(rows[reward | ends | lost].tolist())
    assert set(event_rows(replay, life_loss=False).tolist()) == set(rows[reward | ends].tolist())


def test_windows_with_events_hold_an_event_among_their_targets():
    candidates = np.arange(20)
    events = np.array([5, 12])
    found = windows_with_events(candidates, events, length=4)
    # window s predicts rows s+1 .. s+3: row 5 for s in 2..4, row 12 for s in 9..11
    assert found.tolist() == [2, 3, 4, 9, 10, 11]
    assert windows_with_events(candidates, np.zeros(0, np.int64), 4).tolist() == []


def test_balanced_batches_hold_the_asked_share_of_event_windows():
    rng = np.random.default_rng(0)
    candidates, event_candidates = np.arange(1000), np.array([3, 500, 777])
    counts = 0
    for _ in range(100):
        starts = balanced_starts(UniformSampler(), candidates, event_candidates, 16, 0.25, rng)
        assert len(starts) == 16
        counts += np.isin(starts[-4:], event_candidates).sum()
    assert counts == 400  # 4 of 16 from event windows, every batch
    # uniform draws land on these three starts about 0.3% of the time
    no_share = balanced_starts(UniformSampler(), candidates, event_candidates, 4000, 0.0, rng)
    assert np.isin(no_share, event_candidates).sum() < 40
    # without event windows the sampler fills the batch
    alone = balanced_starts(UniformSampler(), candidates, np.zeros(0, np.int64), 16, 0.5, rng)
    assert len(alone) == 16
