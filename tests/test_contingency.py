"""Fixed policies branched from the same real states into game and dream (wmsim.contingency)."""

import json

import numpy as np
import pytest

from wmsim import contingency
from wmsim.bundle import open_bundle
from wmsim.bundle_dream import real_env
from wmsim.cli import main
from wmsim.store import EMBEDDED

SHIPPED = EMBEDDED / "Breakout.wmsim"
MEANINGS = ["NOOP", "FIRE", "RIGHT", "LEFT"]


def test_the_still_policy_serves_a_fifth_of_the_time_and_never_moves():
    still = contingency.make_policy("still", MEANINGS, 4, seed=0)
    actions = np.concatenate([still(np.zeros((4, 64, 64, 3), np.uint8), np.ones(4, bool))
                              for _ in range(2500)])  # fmt: skip
    assert set(np.unique(actions)) == {0, 1}
    assert abs(np.mean(actions == 1) - contingency.SERVE) < 0.02


def test_an_unknown_policy_is_refused_and_the_tracker_plays_breakout_only():
    with pytest.raises(ValueError, match="tracker, still, random"):
        contingency.make_policy("greedy", MEANINGS, 1, seed=0)
    assert "tracker" in contingency.policies_for("Breakout")
    assert contingency.policies_for("Pong") == ("still", "random")


def test_a_restored_snapshot_replays_the_same_game():
    env = real_env(open_bundle(SHIPPED).spec)
    env.reset(seed=4)
    for _ in range(30):
        env.step(1)
    snapshot = env.snapshot()
    first = [env.step(a)[:2] for a in [3] * 20 + [2] * 20]
    frame = env.restore(snapshot)
    again = [env.step(a)[:2] for a in [3] * 20 + [2] * 20]
    assert all((f == g).all() and r == s for (f, r), (g, s) in zip(first, again, strict=True))
    assert frame.shape == first[0][0].shape


def test_branch_contexts_are_the_real_frames_before_each_branch():
    spec = open_bundle(SHIPPED).spec
    env, snapshots, contexts = contingency.branch_points(
        spec, context=8, branches=5, every=20, seed=2
    )
    assert len(snapshots) == 5 and contexts["frames"].shape == (5, 8, 64, 64, 3)
    assert contexts["actions"].shape == (5, 7) and contexts["is_first"][:, 0].all()
    for snapshot, frames in zip(snapshots, contexts["frames"], strict=True):
        assert (env.restore(snapshot) == frames[-1]).all()  # a branch starts where its context ends


def test_the_gap_share_is_the_dreams_difference_between_tracker_and_still(monkeypatch):
    game = {"tracker": (0.8, 0.25), "still": (0.55, 0.65), "random": (0.5, 0.6)}
    dream = {"tracker": (0.5, 0.6), "still": (0.45, 0.62), "random": (0.48, 0.4)}
    current = {}

    def fake_policy(name, meanings, n, seed):
        current["name"] = name

    monkeypatch.setattr(contingency, "make_policy", fake_policy)
    monkeypatch.setattr(contingency, "game_branches",
                        lambda *a: np.array([[(*game[current["name"]], np.nan)]] * 2))  # fmt: skip
    monkeypatch.setattr(contingency, "dream_branches",
                        lambda *a: np.array([[(*dream[current["name"]], np.nan)]] * 2))  # fmt: skip
    rates = contingency.policy_table(
        open_bundle(SHIPPED), lives=True, branches=2, horizon=1, every=10
    )
    # the tracker earns 0.25 more than standing still in the game, 0.05 more in the dream
    assert rates["rewards_gap_share"] == pytest.approx((0.5 - 0.45) / (0.8 - 0.55))
    # and loses 0.4 fewer lives in the game, 0.02 fewer in the dream
    assert rates["ends_gap_share"] == pytest.approx((0.6 - 0.62) / (0.25 - 0.65))
    text = contingency.policy_lines(rates, lives=True)
    assert "lives lost" in text and "tracker-still gap" in text and "rewards 0.20 ± 0.00" in text
    assert "per 16 steps" not in text  # one step: no segments


_ = np.nan
RETURNED = [40, 45, 50, 55, 56, 54, 50, 45]  # falls to the paddle (row 51.2 of 64), climbs back
MISSED = [45, 50, 55, 56] + [_] * 16  # the end comes later
WAVERING = [40, 45, 52, 53, 52, 53, 52, 53, 52, 53, 52, 53, 52, 53, 52, 53, 52, 53, 52, 53]


def _decided(branched):
    return contingency.paddle_outcomes(branched[..., 2], branched[..., 1], arrival=0.8 * 64)


def _outcomes(*rows, ends=None):
    width = max(len(r) for r in rows)
    grid = np.array([list(r) + [_] * (width - len(r)) for r in rows], float)
    lost = np.zeros(grid.shape) if ends is None else np.array(ends, float)
    decided = contingency.paddle_outcomes(grid, lost, arrival=0.8 * 64)
    return [[outcome for outcome, _ in branch] for branch in decided]


def test_a_ball_that_climbs_back_from_the_paddle_is_returned():
    assert _outcomes(RETURNED) == [[0]]
    assert _outcomes(RETURNED + RETURNED[1:]) == [[0, 0]]  # two rallies, two returns


def test_paid_is_the_share_of_returns_a_reward_follows_within_the_window():
    rows = np.array([RETURNED + [40, 35, 30] + [_] * 24] * 2, float)
    branched = np.stack([np.zeros_like(rows), np.zeros_like(rows), rows], -1)
    branched[0, len(RETURNED) + 3, 0] = 1.0  # the first branch's ball breaks a brick
    shares = contingency._returns("tracker_game", branched, _decided(branched))
    assert shares["tracker_game_returned"] == 1.0 and shares["tracker_game_paddle_arrivals"] == 1
    assert shares["tracker_game_paid"] == 0.5
    cut = branched[:, :20]  # the window does not fit
    cut = contingency._returns("tracker_game", cut, _decided(cut))
    assert cut["tracker_game_returned"] == 1.0 and np.isnan(cut["tracker_game_paid"])


def test_a_ball_that_leaves_the_screen_is_lost_when_the_life_ends_in_the_window():
    ends = np.zeros((1, len(MISSED)))
    ends[0, 12] = 1.0  # 8 steps after the ball was last seen, as Breakout counts it
    assert _outcomes(MISSED, ends=ends) == [[1]]
    ends[0, 12] = 0.4  # a dream's end probability under one half is no end
    assert _outcomes(MISSED, ends=ends) == [[2]]  # vanished: neither returned nor lost


def test_a_wavering_ball_is_not_returned_and_a_cut_branch_counts_nothing():
    assert _outcomes(WAVERING) == [[2]]  # one-row waver: never RISE rows above its lowest
    assert _outcomes(MISSED[:10]) == [[]]  # the branch stops before the window ends
    assert _outcomes([30, 35, 40, 45, 50]) == [[]]  # never reaches the paddle's height


def test_first_ball_agreement_compares_each_branchs_first_outcome():
    ends = np.zeros((4, len(MISSED)))
    ends[:, 12] = 1.0
    rows = np.full((4, len(MISSED)), _)
    for i, r in enumerate([RETURNED, MISSED, MISSED, RETURNED]):
        rows[i, : len(r)] = r
    game = np.stack([np.zeros_like(rows), ends * [[0], [1], [1], [0]], rows], -1)
    dreamed = rows.copy()
    dreamed[1, : len(RETURNED)] = RETURNED  # the dream returns one ball the game loses
    dream = np.stack([np.zeros_like(rows), ends * [[0], [0], [1], [0]], dreamed], -1)
    agreement = contingency.first_ball_agreement(_decided(game), _decided(dream))
    assert agreement == {"return_events": 2, "return_recall": 1.0, "loss_events": 2,
                         "loss_recall": 0.5}  # fmt: skip


def test_fixed_policies_branch_into_the_real_game_and_the_shipped_dream():
    bundle = open_bundle(SHIPPED)
    rates = contingency.policy_table(bundle, lives=True, branches=12, horizon=24, seed=3)
    assert rates["branches"] == 12
    for name in contingency.POLICIES:
        for where in ("game", "dream"):
            assert 0.0 <= rates[f"{name}_{where}_rewards"] and 0.0 <= rates[f"{name}_{where}_ends"]
    # standing still in the real game loses more lives than following the ball
    assert rates["still_game_ends"] > rates["tracker_game_ends"]
    # 24 steps: the first 16 and the last 8, which add up to the branch
    for key in ("tracker_game_rewards", "tracker_dream_rewards", "still_dream_ends"):
        assert rates[f"{key}_0to16"] + rates[f"{key}_16to24"] == pytest.approx(rates[key])
    # the real game returns the balls the tracker meets more often than those of a still paddle
    assert rates["tracker_game_returned"] > rates["still_game_returned"]
    for where in ("game", "dream"):
        shares = [rates[f"tracker_{where}_{o}"] for o in contingency.OUTCOMES]
        assert sum(shares) == pytest.approx(1.0) and rates[f"tracker_{where}_paddle_arrivals"] > 0
    text = contingency.policy_lines(rates, lives=True)
    assert "tracker, per 16 steps of the branch" in text and "balls reaching the paddle" in text
    again = contingency.policy_table(bundle, lives=True, branches=12, horizon=24, seed=3)
    assert json.dumps(again) == json.dumps(rates)  # seeded, game and dream (NaN: no gap)
    drawn = contingency.policy_table(
        bundle, lives=True, branches=12, horizon=24, seed=3, sampled=True
    )
    assert drawn["still_game_ends"] == rates["still_game_ends"]  # the same real branches
    assert drawn["still_dream_ends"] != rates["still_dream_ends"]  # dreamed otherwise


def test_bundle_eval_prints_and_saves_the_policy_table(tmp_path, capsys):
    out = tmp_path / "fidelity.json"
    argv = ["bundle", "eval", str(SHIPPED), "--steps", "120", "--policies", "--branches", "6"]
    assert main([*argv, "--json", str(out)]) == 0
    assert "share of the game's tracker-still gap" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert {"policy_tracker_game_rewards", "policy_rewards_gap_share"} <= set(saved)
    assert main(["bundle", "eval", str(SHIPPED), "--policies", "--branches", "0"]) != 0
    assert "--branches" in capsys.readouterr().err
    assert main(["bundle", "eval", str(SHIPPED), "--policies", "--horizon", "0"]) != 0
    assert "--branches and --horizon must be positive" in capsys.readouterr().err
