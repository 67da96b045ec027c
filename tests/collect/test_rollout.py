"""Collection into a replay: the step vocabulary, equality with a single env, resuming, killing."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from wmsim.cli import main
from wmsim.collect.atari import AtariEnv
from wmsim.collect.rollout import CollectConfig, RandomPolicy, collect, step_flags, stream_seed
from wmsim.replay import Replay
from wmsim.replay.format import CHUNKS


def test_the_one_conversion_from_gymnasium_end_flags():
    #                 terminated, truncated -> is_last, is_terminal
    assert step_flags(False, False) == (False, False)
    assert step_flags(True, False) == (True, True)  # game over: nothing to bootstrap from
    assert step_flags(False, True) == (True, False)  # frame cap: the game would go on
    assert step_flags(True, True) == (True, True)


def stream_rows(replay):
    """Stream id -> its rows in order, as field -> array."""
    by_stream = {}
    order = sorted(range(len(replay.chunks)), key=lambda i: replay.chunks[i].position)
    for i in order:
        chunk = replay.chunks[i]
        arrays = {**chunk.fields, "obs": replay.frames(i)}
        rows = by_stream.setdefault(chunk.stream, {k: [] for k in arrays})
        for name, array in arrays.items():
            rows[name].append(np.asarray(array))
    return {s: {k: np.concatenate(v) for k, v in rows.items()} for s, rows in by_stream.items()}


def replay_in_a_single_env(rows, seed):
    """Play a stream's recorded actions again in one fresh env; return what it sees."""
    env = AtariEnv()
    obs, _ = env.reset(seed=seed)
    seen = {"obs": [obs], "reward": [0.0], "is_last": [False], "is_terminal": [False]}
    seen["life_loss"] = [False]
    for t in range(len(rows["obs"]) - 1):
        if rows["is_last"][t]:
            obs, _ = env.reset()
            reward, terminated, truncated, info = 0.0, False, False, {"life_loss": False}
        else:
            obs, reward, terminated, truncated, info = env.step(rows["action"][t])
        for name, value in zip(seen, (obs, reward, terminated or truncated, terminated,
                                      info["life_loss"]), strict=True):  # fmt: skip
            seen[name].append(value)
    return {k: np.asarray(v) for k, v in seen.items()}


def check_stream_vocabulary(rows):
    first, last = rows["is_first"], rows["is_last"]
    assert first[0]
    assert (first[1:] == last[:-1]).all()  # an episode starts right after one ends
    assert (rows["reward"][first] == 0).all()
    assert (rows["action"][last] == 0).all()  # no action is taken at a last frame
    assert not (rows["is_terminal"] & ~last).any()


def test_two_envs_in_two_processes_record_exactly_what_a_single_env_plays(breakout_replay):
    replay = Replay(breakout_replay)
    assert replay.num_steps == 3000
    streams = stream_rows(replay)
    assert sorted(streams) == [0, 1]
    for stream, rows in streams.items():
        assert len(rows["obs"]) == 1500
        check_stream_vocabulary(rows)
        assert rows["is_last"].sum() >= 3 and rows["life_loss"].sum() >= 10
        again = replay_in_a_single_env(rows, stream_seed(7, stream))
        for name, values in again.items():
            assert (rows[name] == values).all(), name


def test_collection_resumes_to_the_target_with_fresh_streams(tmp_path):
    out = tmp_path / "replay"
    first = collect(CollectConfig(out=out, steps=700, chunk_length=128), progress=False)
    assert (first.added, first.total) == (700, 700)
    second = collect(CollectConfig(out=out, steps=1000, chunk_length=128), progress=False)
    assert (second.added, second.total) == (300, 1000)
    third = collect(CollectConfig(out=out, steps=900, chunk_length=128), progress=False)
    assert (third.added, third.total) == (0, 1000)
    streams = stream_rows(Replay(out))
    assert {s: len(r["obs"]) for s, r in streams.items()} == {0: 700, 1: 300}
    # a rerun plays new episodes, not the same ones again
    assert (streams[0]["obs"][:300] != streams[1]["obs"]).any(axis=(1, 2, 3)).mean() > 0.9


def wmsim(*args, **kwargs):
    command = [sys.executable, "-m", "wmsim", *map(str, args)]
    # Ctrl-C as a terminal delivers it: a suite started in the background (`... &` in a script)
    # passes SIGINT on ignored, and a child that ignores it never sees the Ctrl-C under test
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kwargs,
    )  # fmt: skip


def wait_for_chunks(out, count, process, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chunks = out / CHUNKS
        if chunks.is_dir() and len([p for p in chunks.iterdir() if p.name[0] != "."]) >= count:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("no chunks appeared")


@pytest.mark.slow
def test_a_killed_collector_loses_only_open_chunks_and_the_rerun_completes(tmp_path):
    out = tmp_path / "replay"
    args = ("collect", "--out", out, "--steps", 50_000, "--envs", 2, "--chunk-length", 64)
    process = wmsim(*args, start_new_session=True)
    wait_for_chunks(out, 6, process)
    os.killpg(process.pid, signal.SIGKILL)  # the collector and its workers, mid-write
    process.wait()
    time.sleep(0.2)
    replay = Replay(out)  # everything published stays readable
    assert replay.num_steps >= 6 * 64 and replay.num_steps % 64 == 0
    ends = {}
    for chunk in sorted(replay.chunks, key=lambda c: (c.stream, c.position)):
        assert chunk.position == ends.get(chunk.stream, 0)  # only a stream's tail can be lost
        ends[chunk.stream] = chunk.position + chunk.length
    for rows in stream_rows(replay).values():
        check_stream_vocabulary(rows)
    done = wmsim("collect", "--out", out, "--steps", replay.num_steps + 500, "--envs", 2)
    _, err = done.communicate(timeout=120)
    assert done.returncode == 0, err.decode()
    again = Replay(out)
    assert again.num_steps == replay.num_steps + 500
    assert not [p for p in (out / CHUNKS).iterdir() if p.name.startswith(".tmp")]
    for rows in stream_rows(again).values():
        check_stream_vocabulary(rows)


@pytest.mark.slow
def test_ctrl_c_saves_what_was_played_and_says_how_to_continue(tmp_path):
    out = tmp_path / "replay"
    process = wmsim("collect", "--out", out, "--steps", 50_000, "--envs", 2, "--chunk-length", 64)
    wait_for_chunks(out, 2, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    message = err.decode().strip().splitlines()[-1]
    steps = Replay(out).num_steps
    assert message == (
        f"wmsim: interrupted; {out} holds {steps} steps, run the same command again to continue"
    )
    assert 2 * 64 <= steps < 50_000
    assert "Traceback" not in err.decode()


def test_the_tracker_policy_returns_the_ball_and_refuses_games_without_a_paddle():
    from wmsim.collect.atari import AtariConfig, AtariEnv
    from wmsim.collect.tracker import TrackerPolicy
    from wmsim.errors import UserError

    def score(policy, seed):
        env = AtariEnv(AtariConfig(resize="max"))
        obs, _ = env.reset(seed=seed)
        total, first, done = 0.0, True, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs, first))
            total, first, done = total + reward, False, terminated or truncated
        return total

    rng = np.random.default_rng(0)
    meanings = AtariEnv(AtariConfig()).action_meanings
    tracker = sum(score(TrackerPolicy(meanings, rng, epsilon=0.0), s) for s in range(2))
    random = sum(score(RandomPolicy(len(meanings), rng), s) for s in range(2))
    assert tracker >= 3 * max(random, 2)  # a random policy scores about 1.3 per game
    with pytest.raises(UserError, match="FIRE"):
        TrackerPolicy(AtariEnv(AtariConfig(game="MsPacman")).action_meanings, rng, epsilon=0.1)


def test_the_tracker_aims_beside_the_ball_by_a_shift_drawn_at_each_serve():
    from wmsim.collect.tracker import TrackerPolicy

    meanings = ["NOOP", "FIRE", "RIGHT", "LEFT"]
    empty = np.zeros((64, 64, 3), np.uint8)
    empty[58, 28:35] = (200, 72, 72)  # the paddle, centred on column 31
    aligned = empty.copy()
    aligned[40, 31] = (200, 72, 72)  # the ball right above it
    moves = []
    for seed in range(40):
        tracker = TrackerPolicy(meanings, np.random.default_rng(seed), epsilon=0.0, offset=0.25)
        assert tracker(empty, True) == 1  # no ball: serve, and draw the shift
        assert abs(tracker.shift) <= 0.25 * 64
        moves.append(tracker(aligned, False))
    assert {2, 3} <= set(moves)  # it aims to both sides of a ball it is already under
    plain = TrackerPolicy(meanings, np.random.default_rng(0), epsilon=0.0)
    plain(empty, True)
    assert plain(aligned, False) == 0


def test_a_tracker_offset_outside_0_to_1_is_refused(tmp_path, capsys):
    assert main(["collect", "--out", str(tmp_path / "r"), "--steps", "10", "--offset", "2"]) != 0
    assert "--offset" in capsys.readouterr().err


def test_a_full_disk_during_collect_is_one_line_and_the_rerun_goes_on(tmp_path):
    """A file-size limit (RLIMIT_FSIZE, 1 MiB: less than one chunk's frames) stands in for a
    full disk: the chunk's write fails short, as on a full disk."""
    import resource
    import signal
    import subprocess
    import sys

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    out = tmp_path / "replay"
    command = [sys.executable, "-m", "wmsim", "collect", "--game", "Breakout", "--steps", "1200",
               "--envs", "1", "--chunk-length", "256", "--out", str(out)]  # fmt: skip
    full = subprocess.run(command, capture_output=True, text=True, preexec_fn=limited, timeout=300)
    assert full.returncode == 2, full.stderr
    assert "Traceback" not in full.stderr
    error = [line for line in full.stderr.splitlines() if line.startswith("wmsim: error:")]
    assert len(error) == 1 and "cannot write a replay chunk" in error[0]
    assert Replay(out).num_steps < 1200  # readable: no half chunk is published
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert Replay(out).num_steps >= 1200
