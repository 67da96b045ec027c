import pytest

from wmsim.errors import UserError
from wmsim.games import ATARI_100K
from wmsim.scores import (
    HUMAN_SCORES,
    RANDOM_SCORES,
    aggregate,
    human_normalized_score,
    interquartile_mean,
)


def test_table_covers_exactly_the_26_games():
    assert set(RANDOM_SCORES) == set(HUMAN_SCORES) == set(ATARI_100K)


def test_hns_by_hand():
    # (15.9 - 1.7) / (30.5 - 1.7)
    assert human_normalized_score("Breakout", 15.9) == pytest.approx(14.2 / 28.8)
    assert human_normalized_score("Pong", -20.7) == 0.0
    assert human_normalized_score("Pong", 14.6) == pytest.approx(1.0)
    assert human_normalized_score("Boxing", 87.5) == pytest.approx(87.4 / 12.0)


def test_hns_of_a_game_without_reference_is_a_clear_error():
    with pytest.raises(UserError, match="no human reference score for 'Tetris'"):
        human_normalized_score("Tetris", 1.0)


def test_iqm_is_the_25_percent_trimmed_mean():
    assert interquartile_mean([1, 2, 3, 4]) == 2.5  # cut 1 from each end
    assert interquartile_mean([10, 1, 2, 3, 4, 100, 5, 6]) == pytest.approx(4.5)  # 3,4,5,6
    assert interquartile_mean([1, 2, 3]) == 2.0  # int(0.75) = 0: nothing cut
    assert interquartile_mean([7.0]) == 7.0


def test_aggregate_by_hand():
    scores = {
        "Pong": [14.6, -20.7],  # HNS 1, 0 -> game mean 0.5
        "Breakout": [30.5, 30.5, 30.5],  # HNS 1 -> 1
        "Freeway": [0.0],  # HNS 0 -> 0
        "Boxing": [24.1],  # HNS 2 -> 2
    }
    result = aggregate(scores)
    assert result.mean == pytest.approx((0.5 + 1 + 0 + 2) / 4)
    assert result.median == pytest.approx(0.75)
    # all 7 run values sorted: 0 0 1 1 1 1 2; int(7 / 4) = 1 cut from each end -> 0 1 1 1 1
    assert result.iqm == pytest.approx(0.8)
    assert (result.games, result.runs, result.superhuman) == (4, 7, 2)


def test_aggregate_rejects_a_game_without_runs():
    with pytest.raises(ValueError, match="Pong has no runs"):
        aggregate({"Pong": []})
