"""The full loop on REM's token model (tiny-rem): play, train, save, resume, evaluate."""

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

TINY = {
    "preset": "tiny-rem", "warmup_steps": 48, "train_every": 16, "imagine_batch": 2,
    "eval_every": 80, "eval_episodes": 1, "eval_max_frames": 2_000, "checkpoint_every": 40,
    "device": "cpu",
}  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("agent-rem") / "run"
    agent_train(AgentTrainArgs(out=out, game="Breakout", env_steps=80, **TINY), progress=False)
    return out


@pytest.mark.slow
def test_the_loop_trains_rems_agent_on_its_token_model(run):
    saved = load_checkpoint(run)
    assert saved["env_steps"] == 80 and saved["updates"] == 3
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["model"]["type"] == "REMConfig"
    assert (config["agent"]["context"], config["agent"]["horizon"]) == (2, 9)
    train_metrics = read_metrics(run, "train")
    assert {"model_loss", "model_token_accuracy", "actor_loss", "critic_loss", "return"} <= set(
        train_metrics[-1]
    )
    assert -1.0 <= train_metrics[-1]["reward"] <= 1.0  # the mean of signs drawn in the dreams
    assert train_metrics[-1]["return_scale"] == 1.0  # REM does not scale advantages
    (evaluation,) = read_metrics(run, "eval")
    assert evaluation["step"] == 80 and np.isfinite(evaluation["score"])


@pytest.mark.slow
def test_it_resumes_and_evaluates(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    agent_train(
        AgentTrainArgs(out=copy, game="Breakout", env_steps=96, resume=True, **TINY),
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
def test_it_starts_from_a_trained_rem(breakout_replay, tmp_path):
    world_model = tmp_path / "wm"
    args = {"steps": 2, "batch": 2, "length": 12, "eval_every": 2, "checkpoint_every": 2}
    train(TrainArgs(data=breakout_replay, out=world_model, preset="tiny-rem", **args),
          progress=False)  # fmt: skip
    out = tmp_path / "run"
    start = {**TINY, "warmup_steps": 16, "checkpoint_every": 32, "eval_every": 0}
    agent_train(AgentTrainArgs(out=out, game="Breakout", env_steps=32, world_model=world_model,
                               **start), progress=False)  # fmt: skip
    saved, source = load_checkpoint(out), load_checkpoint(world_model)
    assert saved["updates"] == 2
    assert json.loads((out / "config.json").read_text())["train"] == source["config"]["train"]
    changed = [k for k, v in source["model"].items() if not torch.equal(saved["model"][k], v)]
    assert changed  # the loop trained on from that model
