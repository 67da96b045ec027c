"""The reference agent trained through the gymnasium API alone: in-process, remote, and refused."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from serving import served

from wmsim.agent.commands import AgentTrainArgs, EvalArgs, agent_train, evaluate_command
from wmsim.agent.gym_loop import STACK, push
from wmsim.bundle import open_bundle
from wmsim.errors import UserError
from wmsim.store import EMBEDDED
from wmsim.train.checkpoint import load_checkpoint
from wmsim.train.logs import read_metrics

ID = "wmsim/Breakout-dream-v0"
SMALL = {
    "preset": "tiny", "num_envs": 2, "horizon": 8, "eval_episodes": 1, "eval_max_frames": 1_000,
    "device": "cpu",
}  # fmt: skip


@pytest.fixture(autouse=True)
def isolated_store(tmp_path, monkeypatch):
    monkeypatch.setenv("WMSIM_HOME", str(tmp_path / "wmsim-home"))
    monkeypatch.delenv("WMSIM_MODEL", raising=False)


def test_frame_stacks_restart_at_episode_starts():
    stack = np.zeros((2, STACK, 1, 1, 3), np.uint8)
    stack = push(stack, np.full((2, 1, 1, 3), 7, np.uint8), np.array([True, False]))
    assert stack[0, :, 0, 0, 0].tolist() == [7] * STACK  # a first frame fills the stack
    assert stack[1, :, 0, 0, 0].tolist() == [0] * (STACK - 1) + [7]


@pytest.mark.slow
def test_trains_in_a_dream_env_and_evaluates_on_the_real_game(tmp_path):
    out = tmp_path / "run"
    last = agent_train(
        AgentTrainArgs(out=out, env=ID, env_steps=32, eval_every=16, **SMALL), progress=False
    )
    assert np.isfinite(last["score"]) and "hns" in last
    evals = read_metrics(out, "eval")  # one on the way and the final one
    assert [e["step"] for e in evals] == [16, 32] and evals[-1]["score"] == last["score"]
    saved = load_checkpoint(out)
    assert saved["kind"] == "env" and saved["env_steps"] == 32 and saved["updates"] == 2
    assert saved["config"]["agent"]["actor_critic"]["form"] == "dreamerv3"
    record, _ = evaluate_command(
        EvalArgs(agent=out, episodes=1, max_frames=1_000, video=tmp_path / "v.gif"), progress=False
    )
    assert record["game"] == "Breakout" and record["env_steps"] == 32
    # the real game is played with the frames the dream was trained on
    shipped = open_bundle(EMBEDDED / "Breakout.wmsim").spec["env"].get("resize", "area")
    assert saved["config"]["resize"] == record["protocol"]["resize"] == shipped
    # the evaluation schedule may change on resume, the training settings may not
    agent_train(AgentTrainArgs(out=out, env=ID, env_steps=48, resume=True, **SMALL), progress=False)
    assert load_checkpoint(out)["updates"] == 3
    with pytest.raises(UserError, match="horizon: 8 there, 4 asked"):
        agent_train(
            AgentTrainArgs(out=out, env=ID, env_steps=64, resume=True, **{**SMALL, "horizon": 4}),
            progress=False,
        )


@pytest.mark.slow
def test_a_scheduler_stop_saves_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "wmsim", "agent", "train", "--env", ID, "--out", str(run),
               "--env-steps", "100000", "--preset", "tiny", "--num-envs", "2", "--horizon", "8",
               "--checkpoint-every", "100000", "--eval-every", "0", "--device", "cpu"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not read_metrics(run, "train") and time.monotonic() < deadline:
        time.sleep(0.1)  # until the first update is logged
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "checkpoint saved" in err.strip().splitlines()[-1]
    assert load_checkpoint(run)["env_steps"] >= read_metrics(run, "train")[-1]["step"]


@pytest.mark.slow
def test_remote_training_equals_in_process_training(tmp_path):
    """Served dreams are the same dreams, so the same seed trains the same weights."""
    local = tmp_path / "local"
    agent_train(AgentTrainArgs(out=local, env=ID, env_steps=16, **SMALL), progress=False)
    with served("--max-envs", "4") as server:
        remote = tmp_path / "remote"
        agent_train(
            AgentTrainArgs(out=remote, env=ID, env_steps=16, server=server.address, **SMALL),
            progress=False,
        )
    a, b = load_checkpoint(local)["agent"], load_checkpoint(remote)["agent"]
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_refuses_envs_it_cannot_play(tmp_path):
    with pytest.raises(UserError, match="uint8 frames"):
        agent_train(
            AgentTrainArgs(out=tmp_path / "r", env="CartPole-v1", eval_game="Breakout", **SMALL)
        )
    with pytest.raises(UserError, match="--eval-game"):
        agent_train(AgentTrainArgs(out=tmp_path / "r", env="CartPole-v1", **SMALL))
    with pytest.raises(UserError, match="--server goes with --env"):
        agent_train(AgentTrainArgs(out=tmp_path / "r", game="Breakout", server="x:1"))


def test_the_shipped_dream_policy_plays_the_real_game(tmp_path):
    """examples/breakout-dream-agent stays loadable by `wmsim eval` (its score is in its README)."""
    from wmsim.cli import main

    agent = Path(__file__).resolve().parents[2] / "examples" / "breakout-dream-agent"
    out = tmp_path / "eval.json"
    assert main(["eval", "--agent", str(agent), "--episodes", "1", "--max-frames", "2000",
                 "--out", str(out)]) == 0  # fmt: skip
    record = json.loads(out.read_text())
    assert record["episodes"] == 1 and record["env_steps"] == 2_000_384
    assert record["protocol"]["resize"] == "max"  # the dream's frames, as it trained
