"""Training runs on real Breakout frames: files, exact resume, atomic checkpoints, clear errors."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from wmsim.collect.atari import AtariConfig
from wmsim.collect.rollout import CollectConfig, collect
from wmsim.errors import UserError
from wmsim.train.checkpoint import load_checkpoint
from wmsim.train.logs import read_metrics
from wmsim.train.loop import TrainArgs, train, with_defaults

QUICK = {"batch": 2, "length": 8, "eval_every": 3, "checkpoint_every": 3}


def args(data, out, steps, **overrides):
    return TrainArgs(data=data, out=out, steps=steps, preset="tiny", **{**QUICK, **overrides})


def test_a_run_writes_config_checkpoint_metrics_and_tensorboard(breakout_replay, tmp_path):
    run = tmp_path / "run"
    metrics = train(args(breakout_replay, run, 6), progress=False)
    config = json.loads((run / "config.json").read_text())
    assert config["preset"] == "tiny" and config["game"] == "Breakout"
    assert (
        config["train"]["batch"] == 2
        and config["train"]["model"]["type"] == "LatentWorldModelConfig"
    )
    saved = load_checkpoint(run)
    assert saved["step"] == 6 and saved["config"] == config
    assert [m["step"] for m in read_metrics(run, "eval")] == [3, 6]
    assert {"h1_mse", "h16_copy_mse", "reward_accuracy", "continue_accuracy"} <= set(metrics)
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(run / "tb"))


def test_resuming_gives_exactly_the_uninterrupted_result(breakout_replay, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(args(breakout_replay, whole, 6), progress=False)
    train(args(breakout_replay, split, 3), progress=False)
    train(args(breakout_replay, split, 6, resume=True), progress=False)
    a, b = load_checkpoint(whole)["model"], load_checkpoint(split)["model"]
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    final = [[m for m in read_metrics(run) if m["step"] == 6] for run in (whole, split)]
    assert final[0] == final[1] and len(final[0]) == 2  # the last train and eval records


def test_a_metrics_line_cut_off_by_a_kill_does_not_stop_a_resume(breakout_replay, tmp_path):
    run = tmp_path / "run"
    train(args(breakout_replay, run, 3), progress=False)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "kind": "tr')
    assert [m["step"] for m in read_metrics(run, "eval")] == [3]
    train(args(breakout_replay, run, 6, resume=True), progress=False)
    assert [m["step"] for m in read_metrics(run, "eval")] == [3, 6]


def test_a_run_killed_at_any_moment_keeps_a_loadable_checkpoint(breakout_replay, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "wmsim", "train", "--data", str(breakout_replay),
               "--out", str(run), "--steps", "100000", "--preset", "tiny", "--batch", "2",
               "--length", "8", "--checkpoint-every", "1", "--eval-every", "100000"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.5)  # several checkpoints later, in the middle of one or another
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert load_checkpoint(run)["step"] >= 1
    resumed = train(args(breakout_replay, run, load_checkpoint(run)["step"] + 1, resume=True,
                         checkpoint_every=1), progress=False)  # fmt: skip
    assert isinstance(resumed, dict)


@pytest.fixture(scope="module")
def pong_replay(tmp_path_factory):
    out = tmp_path_factory.mktemp("pong") / "replay"
    collect(CollectConfig(out=out, steps=400, env=AtariConfig(game="Pong")), progress=False)
    return out


def test_bad_runs_are_refused_with_a_reason(breakout_replay, pong_replay, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(UserError, match="does not exist"):
        train(args(tmp_path / "nothing", run, 3), progress=False)
    with pytest.raises(UserError, match="unknown preset 'big'; choose one of: storm, dreamerv2"):
        train(TrainArgs(data=breakout_replay, out=run, steps=3, preset="big"), progress=False)
    with pytest.raises(UserError, match="too few for batches"):
        train(args(pong_replay, run, 3, length=400), progress=False)
    with pytest.raises(UserError, match="holds no run to resume"):
        train(args(breakout_replay, run, 3, resume=True), progress=False)
    train(args(breakout_replay, run, 3), progress=False)
    with pytest.raises(UserError, match="already holds a run; pass --resume"):
        train(args(breakout_replay, run, 6), progress=False)
    with pytest.raises(UserError, match="other settings \\(preset: 'tiny' there"):
        train(TrainArgs(data=breakout_replay, out=run, steps=6, preset="tiny-gru", resume=True,
                        **QUICK), progress=False)  # fmt: skip
    with pytest.raises(UserError, match="game: 'Breakout' there"):
        train(args(pong_replay, run, 6, resume=True), progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        train(args(breakout_replay, tmp_path / "file", 3), progress=False)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_a_scheduler_stop_saves_a_checkpoint_and_says_how_to_resume(
    breakout_replay, tmp_path, sig
):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "wmsim", "train", "--data", str(breakout_replay),
               "--out", str(run), "--steps", "100000", "--preset", "tiny", "--batch", "2",
               "--length", "8", "--checkpoint-every", "100000"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not read_metrics(run, "train") and time.monotonic() < deadline:
        time.sleep(0.1)  # until the first steps are logged
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == (
        f"wmsim: interrupted; checkpoint saved in {run}, "
        "add --resume to the same command to continue"
    )
    assert load_checkpoint(Path(run))["step"] >= read_metrics(run, "train")[-1]["step"]


def test_without_preset_or_steps_a_cpu_sized_default_is_chosen_and_said(tmp_path):
    cpu = TrainArgs(data=tmp_path / "replay", out=tmp_path / "run", device="cpu")
    filled, note = with_defaults(cpu)
    assert (filled.preset, filled.steps) == ("tiny-s5", 30_000)
    assert "--preset tiny-s5 (no accelerator" in note and "--steps 30000" in note
    chosen = dataclasses.replace(cpu, preset="storm", steps=5)
    assert with_defaults(chosen) == (chosen, None)
    assert with_defaults(dataclasses.replace(cpu, preset="dreamerv2"))[0].steps == 100_000
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"preset": "tiny-gru"}))
    resumed, note = with_defaults(dataclasses.replace(cpu, resume=True))
    assert resumed.preset == "tiny-gru"
    assert note == "training with --steps 30000; pass them to choose"
