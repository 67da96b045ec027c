"""The command line as a user meets it: real processes, real files."""

import json
import shutil
import subprocess
import sys

import pytest

from wmsim.cli import main
from wmsim.collect.rollout import CollectConfig, collect


def wmsim(*args, cwd=None):
    command = [sys.executable, "-m", "wmsim", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wmsim: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_the_console_script_is_installed():
    assert shutil.which("wmsim"), "pip install -e . puts `wmsim` on PATH"
    result = subprocess.run(["wmsim", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "collect" in result.stdout and "data info" in result.stdout


def test_no_command_prints_usage_and_fails():
    result = wmsim()
    assert result.returncode == 2 and result.stdout.startswith("usage: wmsim COMMAND")


def test_collect_then_data_info(tmp_path):
    out = tmp_path / "breakout"
    result = wmsim("collect", "--game", "Breakout", "--steps", 600, "--out", out, "--seed", 3)
    assert result.returncode == 0, result.stderr
    assert "collected 600 steps" in result.stdout and f"{out} holds 600" in result.stdout
    again = wmsim("collect", "--game", "Breakout", "--steps", 600, "--out", out)
    assert again.returncode == 0 and "already holds 600 steps; nothing to collect" in again.stdout

    info = wmsim("data", "info", out)
    assert info.returncode == 0, info.stderr
    assert "game      Breakout: 64x64 RGB (area resize), frame skip 4" in info.stdout
    assert "steps     600 in 1 chunks, 1 streams" in info.stdout
    assert "actions   NOOP" in info.stdout and "LEFT" in info.stdout


def test_data_info_of_a_replay_with_no_complete_chunk_yet(tmp_path):
    out = tmp_path / "replay"
    collect(CollectConfig(out=out, steps=1), progress=False)
    shutil.rmtree(out / "chunks")  # as if the collector was killed before its first chunk
    (out / "chunks").mkdir()
    result = wmsim("data", "info", out)
    assert result.returncode == 0, result.stderr
    assert "steps     0 in 0 chunks" in result.stdout and "returns   none yet" in result.stdout


def test_data_info_as_json(breakout_replay):
    result = wmsim("data", "info", breakout_replay, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["steps"] == 3000 and summary["streams"] == 2
    assert summary["env"]["game"] == "Breakout"
    assert len(summary["returns"]) == len(summary["lengths"]) > 0
    assert sum(summary["action_counts"].values()) == 3000 - len(summary["returns"])


@pytest.mark.parametrize(
    "args, fragments",
    [
        (("collect", "--game", "Breakot", "--steps", 10, "--out", "{tmp}/x"),
         ("unknown game 'Breakot'", "did you mean Breakout")),
        (("collect", "--steps", 10, "--out", "{tmp}/file.txt"), ("is a file",)),
        (("collect", "--steps", 10, "--out", "{tmp}/notes"), ("is not a wmsim replay",)),
        (("collect", "--steps", 0, "--out", "{tmp}/x"), ("must be positive",)),
        (("collect", "--steps", 10, "--out", "{tmp}/file.txt/x"),
         ("cannot write a replay to", "Not a directory")),
        (("collect", "--steps", 10, "--out", "{tmp}/x", "--chunk-length", 10**8),
         ("lower --chunk-length",)),
        (("collect", "--steps", 10, "--out", "{tmp}/x", "--max-frames", 1),
         ("must exceed noop_max + frame_skip",)),
        (("data", "info", "{tmp}/missing"), ("does not exist", "wmsim collect")),
        (("data", "info", "{tmp}/notes"), ("is not a wmsim replay",)),
        (("data", "info", "{tmp}/file.txt"), ("is a file, not a replay directory",)),
        (("dreams",), ("unknown command 'dreams'",)),
        (("train", "--data", "{tmp}/missing", "--out", "{tmp}/run", "--steps", 5),
         ("does not exist",)),
        (("train", "--data", "{tmp}/notes", "--out", "{tmp}/run", "--steps", 5),
         ("is not a wmsim replay",)),
        (("dream", "--run", "{tmp}/notes", "--out", "{tmp}/d.gif"), ("has no checkpoint",)),
        (("data", "drop"), ("unknown command 'data drop'",)),
        (("bench", "nothing"), ("unknown benchmark 'nothing'", "collect")),
    ],
)  # fmt: skip
def test_bad_input_gets_one_clear_line(tmp_path, args, fragments):
    (tmp_path / "file.txt").write_text("not a replay")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.md").write_text("mine")
    result = wmsim(*(str(a).format(tmp=tmp_path) for a in args))
    assert_one_line_error(result, *fragments)
    assert (tmp_path / "notes" / "todo.md").read_text() == "mine"  # nothing of theirs touched


def test_a_replay_of_other_settings_is_not_mixed(breakout_replay):
    result = wmsim(
        "collect", "--steps", 5000, "--out", breakout_replay, "--sticky-action-prob", 0.25
    )
    assert_one_line_error(result, "other settings", "sticky_action_prob: 0.0 there, 0.25 asked")


def test_parse_errors_exit_non_zero_without_a_traceback():
    result = wmsim("collect", "--steps", "ten", "--out", "x")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--steps" in result.stderr


def test_train_then_dream(breakout_replay, tmp_path):
    run = tmp_path / "run"
    result = wmsim("train", "--data", breakout_replay, "--out", run, "--steps", 2,
                   "--preset", "tiny", "--batch", 2, "--length", 8)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"trained {run} to step 2; held-out h1_mse" in result.stdout
    unknown = wmsim(
        "train", "--data", breakout_replay, "--out", run, "--steps", 2, "--preset", "huge"
    )
    assert_one_line_error(
        unknown, "unknown preset 'huge'; choose one of: storm, dreamerv2, drama, s5, rem, tiny"
    )
    video = wmsim("dream", "--run", run, "--out", tmp_path / "dream.gif", "--steps", 4)
    assert video.returncode == 0 and video.stdout.strip() == f"wrote {tmp_path / 'dream.gif'}"


@pytest.mark.parametrize(
    "command",
    [
        ["collect", "--game", "Breakout", "--steps", "10"],
        ["agent", "train", "--game", "Breakout", "--preset", "tiny"],
    ],
)
def test_a_path_name_too_long_is_one_line(tmp_path, capsys, command):
    out = tmp_path / ("x" * 300)
    assert main([*command, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "too long" in err and "\n" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("missing", "command", "extra"),
    [
        ("torch", ["train", "--data", "nowhere", "--out", "run", "--steps", "1"], "train"),
        ("ale_py", ["collect", "--game", "Breakout", "--steps", "8", "--out", "replay"], "atari"),
        ("cv2", ["dream", "--out", "dream.gif"], "atari"),
    ],
)
def test_a_command_whose_extra_is_not_installed_names_the_extra(tmp_path, missing, command, extra):
    # as in a base install: the module cannot be imported at all
    code = (
        f"import sys; sys.modules[{missing!r}] = None\n"
        f"from wmsim.cli import main; sys.exit(main({command!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert_one_line_error(result, f"needs {missing}", f"pip install 'wmsim[{extra}]'")
