import json
import shutil

import numpy as np
import pytest
from helpers import SYNTHETIC_ENV, synthetic_row, write_synthetic

from wmsim.errors import UserError
from wmsim.replay import Replay
from wmsim.replay.format import CHUNKS, make_manifest
from wmsim.replay.writer import ReplayLock, ReplayWriter, acquire

# stream A: episodes of 10 and 25 steps (37 rows); stream B: one of 40 steps (41 rows)
EPISODES = [[10, 25], [40]]


def decode(window_obs):
    """(stream, t) of every row of a gathered window (T, 4, 4, 3)."""
    px = window_obs[:, 0, 0].astype(int)
    return px[:, 1], px[:, 0] + 256 * px[:, 2]


def test_round_trip_in_chunks(tmp_path):
    streams = write_synthetic(tmp_path, EPISODES, chunk_length=8)
    replay = Replay(tmp_path)
    assert replay.num_steps == 37 + 41
    assert len(replay.chunks) == 5 + 6  # ceil(37 / 8) + ceil(41 / 8)
    assert sorted({c.stream for c in replay.chunks}) == streams
    assert isinstance(replay.frames(0), np.memmap)  # frames stay on disk
    assert replay.env == SYNTHETIC_ENV
    for i, chunk in enumerate(replay.chunks):
        stream, t = decode(replay.frames(i))
        assert (stream == chunk.stream).all()
        assert (t == np.arange(chunk.position, chunk.position + chunk.length)).all()


def test_windows_cross_chunks_but_never_streams(tmp_path):
    streams = write_synthetic(tmp_path, EPISODES, chunk_length=8)
    replay = Replay(tmp_path)
    length = 12
    starts = replay.window_starts(length)
    assert len(starts) == (37 - length + 1) + (41 - length + 1)
    batch = replay.gather(starts, length)
    assert batch["obs"].shape == (len(starts), length, 4, 4, 3)
    for b in range(len(starts)):
        stream, t = decode(batch["obs"][b])
        assert (stream == stream[0]).all() and stream[0] in streams
        assert (np.diff(t) == 1).all()
        expected = [synthetic_row(stream[0], int(i), False, False) for i in t]
        assert (batch["reward"][b] == [e["reward"] for e in expected]).all()
        assert (batch["action"][b] == [e["action"] for e in expected]).all()
    assert replay.window_starts(42).size == 0  # longer than any stream


def test_is_first_marks_every_episode_start_inside_a_window(tmp_path):
    write_synthetic(tmp_path, EPISODES, chunk_length=8)
    replay = Replay(tmp_path)
    batch = replay.gather(replay.window_starts(20), 20)
    starts_a = {0, 11}  # stream A: rows 0 and 11 begin episodes
    for b in range(len(batch["obs"])):
        stream, t = decode(batch["obs"][b])
        expected = np.isin(t, list(starts_a) if stream[0] == 0 else [0])
        assert (batch["is_first"][b] == expected).all()
        lasts = np.isin(t, [10, 36] if stream[0] == 0 else [40])
        assert (batch["is_last"][b] == lasts).all()


def test_a_killed_writer_leaves_only_a_hidden_chunk_that_the_next_run_removes(tmp_path):
    write_synthetic(tmp_path, EPISODES, chunk_length=8)
    before = Replay(tmp_path).num_steps
    # what a writer killed halfway through a chunk leaves behind
    half = tmp_path / CHUNKS / ".tmp-deadbeef"
    half.mkdir()
    (half / "obs.npy").write_bytes(b"\x93NUMPY\x01\x00truncated")
    replay = Replay(tmp_path)
    assert replay.num_steps == before
    manifest = make_manifest(SYNTHETIC_ENV, ["NOOP", "FIRE", "RIGHT", "LEFT"])
    with ReplayLock(tmp_path, manifest) as lock:
        assert not half.exists()
        (stream,) = lock.new_streams(1)
        assert stream == 2  # streams 0 and 1 exist: a continuation never reuses their ids
        with ReplayWriter(tmp_path, stream, chunk_length=8) as writer:
            for t in range(5):
                writer.add(synthetic_row(stream, t, t == 0, False))
    assert replay.refresh() == 1
    assert replay.num_steps == before + 5


def test_a_damaged_chunk_is_named(tmp_path):
    write_synthetic(tmp_path, EPISODES, chunk_length=8)
    chunk = sorted((tmp_path / CHUNKS).iterdir())[3]
    (chunk / "reward.npy").write_bytes(b"not numpy")
    with pytest.raises(UserError, match=f"replay chunk .*{chunk.name} is damaged"):
        Replay(tmp_path)


def test_directories_that_are_not_replays_are_refused(tmp_path):
    manifest = make_manifest(SYNTHETIC_ENV, ["NOOP"])
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="is not a wmsim replay"):
        ReplayLock(tmp_path, manifest)
    with pytest.raises(UserError, match="is a file"):
        ReplayLock(tmp_path / "notes.txt", manifest)
    with pytest.raises(UserError, match="does not exist"):
        Replay(tmp_path / "missing")
    with pytest.raises(UserError, match="is not a wmsim replay"):
        Replay(tmp_path)


def test_a_replay_of_other_settings_is_refused(tmp_path):
    write_synthetic(tmp_path, EPISODES, chunk_length=8)
    other = make_manifest({**SYNTHETIC_ENV, "sticky_action_prob": 0.25}, ["NOOP"])
    with pytest.raises(UserError, match="sticky_action_prob: 0.0 there, 0.25 asked"):
        ReplayLock(tmp_path, other)


def test_an_unknown_format_version_is_refused(tmp_path):
    write_synthetic(tmp_path, EPISODES, chunk_length=8)
    path = tmp_path / "wmsim-replay.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "format": 99}))
    with pytest.raises(UserError, match="replay format 99"):
        Replay(tmp_path)


def test_only_one_collection_run_at_a_time(tmp_path):
    manifest = make_manifest(SYNTHETIC_ENV, ["NOOP"])
    with ReplayLock(tmp_path, manifest):
        with pytest.raises(UserError, match="another process is writing"):
            ReplayLock(tmp_path, manifest)
    ReplayLock(tmp_path, manifest).release()  # free again


def test_disk_errors_surface_in_the_writer(tmp_path):
    manifest = make_manifest(SYNTHETIC_ENV, ["NOOP"])
    with ReplayLock(tmp_path, manifest) as lock:
        writer = ReplayWriter(tmp_path, lock.new_streams(1)[0], chunk_length=4)
        shutil.rmtree(tmp_path / CHUNKS)
        for t in range(4):
            writer.add(synthetic_row(0, t, t == 0, False))
        with pytest.raises(UserError, match="cannot write a replay chunk in .* same command again"):
            writer.close()


def test_flush_makes_partial_chunks_visible(tmp_path):
    manifest = make_manifest(SYNTHETIC_ENV, ["NOOP"])
    with ReplayLock(tmp_path, manifest) as lock:
        writer = ReplayWriter(tmp_path, lock.new_streams(1)[0], chunk_length=100)
        for t in range(7):
            writer.add(synthetic_row(0, t, t == 0, False))
        assert Replay(tmp_path).num_steps == 0  # still buffered
        writer.flush()
        assert Replay(tmp_path).num_steps == 7
        writer.close()


def test_any_number_of_chunks_within_the_open_file_limit(tmp_path):
    write_synthetic(tmp_path, [[299]], chunk_length=1)  # 300 chunks
    replay = Replay(tmp_path, max_open=8)
    batch = replay.gather(replay.window_starts(50), 50)
    for b in range(len(batch["obs"])):
        assert (decode(batch["obs"][b])[1] == np.arange(b, b + 50)).all()
    assert len(replay._open) <= 8


def test_overlapping_chunks_of_one_stream_are_refused(tmp_path):
    write_synthetic(tmp_path, EPISODES, chunk_length=8)
    chunks = sorted((tmp_path / CHUNKS).iterdir())
    shutil.copytree(chunks[1], tmp_path / CHUNKS / f"99999999{chunks[1].name[8:]}")
    with pytest.raises(UserError, match="overlapping chunks of stream 0"):
        Replay(tmp_path)


def test_a_run_that_died_before_its_manifest_leaves_a_usable_directory(tmp_path):
    (tmp_path / CHUNKS).mkdir()
    (tmp_path / ".writer.lock").touch()
    manifest = make_manifest(SYNTHETIC_ENV, ["NOOP"])
    ReplayLock(tmp_path, manifest).release()
    assert Replay(tmp_path).num_steps == 0


def test_the_manifest_is_written_by_the_run_that_holds_the_lock(tmp_path):
    holder = acquire(tmp_path, exclusive=True)  # another run, about to write its manifest
    with pytest.raises(UserError, match="another process is writing"):
        ReplayLock(tmp_path, make_manifest(SYNTHETIC_ENV, ["NOOP"]))
    assert not (tmp_path / "wmsim-replay.json").exists()
    holder.close()


@pytest.mark.parametrize("text", ["[]", "{}", '{"kind": "wmsim-replay", "format": 1}', "{"])
def test_damaged_manifests_are_named(tmp_path, text):
    (tmp_path / "wmsim-replay.json").write_text(text)
    with pytest.raises(UserError, match="wmsim-replay.json"):
        Replay(tmp_path)


def test_unwritable_places_are_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot write a replay to .*: Not a directory"):
        ReplayLock(tmp_path / "file" / "replay", make_manifest(SYNTHETIC_ENV, ["NOOP"]))


def test_windows_must_start_inside_the_replay(tmp_path):
    write_synthetic(tmp_path, EPISODES, chunk_length=8)
    replay = Replay(tmp_path)
    with pytest.raises(ValueError, match="must lie in"):
        replay.gather(np.array([-1]), 4)
    with pytest.raises(ValueError, match="runs past the end of its stream"):
        replay.gather(np.array([36]), 4)
