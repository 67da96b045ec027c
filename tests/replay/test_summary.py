from helpers import SYNTHETIC_ENV, synthetic_row, write_synthetic

from wmsim.replay import Replay
from wmsim.replay.format import make_manifest
from wmsim.replay.summary import summarize
from wmsim.replay.writer import ReplayLock, ReplayWriter


def test_summary_counts_by_hand(tmp_path):
    # stream 0: episodes of 3 and 2 steps; stream 1: one of 4 steps
    write_synthetic(tmp_path, [[3, 2], [4]], chunk_length=4)
    summary = summarize(Replay(tmp_path))
    assert summary.steps == 4 + 3 + 5
    assert (summary.chunks, summary.streams) == (2 + 2, 2)
    # synthetic rewards are the row index t: returns sum t over the steps after each start
    assert sorted(summary.returns) == sorted([1 + 2 + 3, 5 + 6, 1 + 2 + 3 + 4])
    assert sorted(summary.lengths) == [2, 3, 4]
    # is_terminal on last rows with even t: t = 3 (no), t = 6 (yes), t = 4 (yes)
    assert summary.terminal == 2
    assert summary.unfinished == 0
    # life_loss where t % 7 == 0: t = 0 in both streams
    assert summary.life_losses == 2
    # actions (stream + t) % 4 on rows that are not last
    assert sum(summary.action_counts.values()) == 12 - 3
    assert list(summary.action_counts) == ["NOOP", "FIRE", "RIGHT", "LEFT"]


def test_an_episode_running_at_the_end_of_a_stream_is_unfinished(tmp_path):
    with ReplayLock(tmp_path, make_manifest(SYNTHETIC_ENV, ["A", "B", "C", "D"])) as lock:
        with ReplayWriter(tmp_path, lock.new_streams(1)[0], chunk_length=4) as writer:
            for t in range(6):
                writer.add(synthetic_row(0, t, t in (0, 3), t == 2))
    summary = summarize(Replay(tmp_path))
    assert (len(summary.returns), summary.unfinished) == (1, 1)
