"""An evaluation's summary and the line `wmsim agent train` prints from it, by hand."""

from pathlib import Path

import numpy as np
import pytest

from wmsim.agent.evaluate import Episodes, summarize
from wmsim.cli import _training_eval_line


def _played(scores):
    return Episodes(list(scores), [100] * len(scores), np.zeros((0, 1, 1, 3), np.uint8), 1.0)


def test_summary_has_the_standard_error_of_the_mean():
    summary = summarize("Breakout", _played([0.0, 2.0, 4.0, 6.0]))
    assert summary["score"] == 3.0 and summary["episodes"] == 4.0
    assert summary["score_std"] == pytest.approx(np.sqrt(5.0))
    # sample standard deviation / sqrt(n): sqrt(20 / 3) / 2
    assert summary["score_se"] == pytest.approx(np.sqrt(20.0 / 3.0) / 2.0)


def test_one_episode_has_no_spread_and_no_division_by_zero():
    summary = summarize("Breakout", _played([5.0]))
    assert summary["score_se"] == 0.0 and summary["episodes"] == 1.0


def test_training_line_shows_episodes_error_and_the_command_to_trust():
    line = _training_eval_line(summarize("Breakout", _played([1.0, 3.0])), Path("runs/a"))
    assert "over 2 episodes: score 2 ± 1 (standard error)" in line
    assert "hns" in line and "score_std 1" in line
    assert line.endswith("wmsim eval --agent runs/a --episodes 100")
    assert _training_eval_line({}, Path("runs/a")) == ""
