"""The full loop on the RSSM (tiny-dreamerv2) and REM's token model (tiny-rem): play, train, save,
resume, evaluate, and start from a trained world model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from wmsim.agent.commands import AgentTrainArgs, EvalArgs, agent_train, evaluate_command
from wmsim.train.checkpoint import load_checkpoint
from wmsim.train.logs import read_metrics
from wmsim.train.loop import TrainArgs, train

QUICK = {
    "warmup_steps": 48, "train_every": 16, "imagine_batch": 2, "eval_every": 80,
    "eval_episodes": 1, "eval_max_frames": 2_000, "checkpoint_every": 40, "device": "cpu",
}  # fmt: skip
CASES = {  # preset: (its loop settings, the world-model run's window length)
    "tiny-dreamerv2": ({"context": 8}, 8),
    "tiny-rem": ({}, 12),
}


def settings(preset: str) -> dict:
    return {"preset": preset, **QUICK, **CASES[preset][0]}


@pytest.fixture(scope="module", params=sorted(CASES))
def run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param) / "run"
    agent_train(
        AgentTrainArgs(out=out, game="Breakout", env_steps=80, **settings(request.param)),
        progress=False,
    )
    return request.param, out


@pytest.mark.slow
def test_the_loop_trains_the_papers_agent_on_its_world_model(run):
    preset, out = run
    saved = load_checkpoint(out)
    assert saved["env_steps"] == 80 and saved["updates"] == 3
    config = json.loads((out / "config.json").read_text())
    metrics = read_metrics(out, "train")[-1]
    assert {"model_loss", "actor_loss", "critic_loss", "return"} <= set(metrics)
    assert metrics["return_scale"] == 1.0  # neither DreamerV2 nor REM scales advantages
    if preset == "tiny-dreamerv2":
        assert config["train"]["model"]["type"] == "RSSMConfig"
        assert config["agent"]["actor_critic"]["form"] == "dreamerv2"
    else:
        assert config["train"]["model"]["type"] == "REMConfig"
        assert (config["agent"]["context"], config["agent"]["horizon"]) == (2, 9)
        assert "model_token_accuracy" in metrics
        assert -1.0 <= metrics["reward"] <= 1.0  # the mean of signs drawn in the dreams
    (evaluation,) = read_metrics(out, "eval")
    assert evaluation["step"] == 80 and np.isfinite(evaluation["score"])


@pytest.mark.slow
def test_it_resumes_and_evaluates(run, tmp_path):
    preset, out = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    agent_train(
        AgentTrainArgs(out=copy, game="Breakout", env_steps=96, resume=True, **settings(preset)),
        progress=False,
    )
    saved = load_checkpoint(copy)
    assert saved["env_steps"] == 96 and saved["updates"] == 4
    record, _ = evaluate_command(
        EvalArgs(agent=copy, episodes=1, max_frames=1_000, out=tmp_path / "eval.json",
                 video=tmp_path / "eval.gif"), progress=False,
    )  # fmt: skip
    assert record["env_steps"] == 96 and len(record["scores"]) == 1


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(CASES))
def test_it_starts_from_a_trained_world_model(preset, breakout_replay, tmp_path):
    world_model = tmp_path / "wm"
    args = {"steps": 2, "batch": 2, "length": CASES[preset][1], "eval_every": 2,
            "checkpoint_every": 2}  # fmt: skip
    train(TrainArgs(data=breakout_replay, out=world_model, preset=preset, **args), progress=False)
    out = tmp_path / "run"
    start = {**settings(preset), "warmup_steps": 16, "checkpoint_every": 32, "eval_every": 0}
    agent_train(AgentTrainArgs(out=out, game="Breakout", env_steps=32, world_model=world_model,
                               **start), progress=False)  # fmt: skip
    saved, source = load_checkpoint(out), load_checkpoint(world_model)
    assert saved["updates"] == 2
    assert json.loads((out / "config.json").read_text())["train"] == source["config"]["train"]
    changed = [k for k, v in source["model"].items() if not torch.equal(saved["model"][k], v)]
    assert changed  # the loop trained on from that model
