"""The full loop on the real game at a tiny budget, resume, evaluation records and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wmsim.agent.commands import (
    AgentTrainArgs,
    EvalArgs,
    agent_train,
    evaluate_command,
    load_policy,
)
from wmsim.agent.results import ResultsArgs, results
from wmsim.agent.strategy import RealPolicy
from wmsim.cli import main
from wmsim.errors import UserError
from wmsim.replay import Replay
from wmsim.train.checkpoint import load_checkpoint, save_checkpoint
from wmsim.train.logs import read_metrics
from wmsim.train.loop import TrainArgs, train

TINY = {
    "preset": "tiny", "warmup_steps": 48, "train_every": 16, "imagine_batch": 4,
    "eval_every": 80, "eval_episodes": 1, "eval_max_frames": 2_000, "checkpoint_every": 40,
    "device": "cpu",
}  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("agent") / "run"
    agent_train(AgentTrainArgs(out=out, game="Breakout", env_steps=80, **TINY), progress=False)
    return out


@pytest.mark.slow
def test_the_loop_plays_trains_evaluates_and_checkpoints(run):
    saved = load_checkpoint(run)
    assert saved["kind"] == "agent" and saved["env_steps"] == 80
    assert saved["updates"] == 3  # at steps 48, 64 and 80: from the warm-up on, every 16
    replay = Replay(run / "replay")
    assert replay.num_steps >= 80 and replay.action_meanings == saved["action_meanings"]
    train = read_metrics(run, "train")
    assert {"model_loss", "actor_loss", "critic_loss", "return", "entropy"} <= set(train[-1])
    (evaluation,) = read_metrics(run, "eval")
    assert evaluation["step"] == 80 and np.isfinite(evaluation["score"]) and "hns" in evaluation
    config = json.loads((run / "config.json").read_text())
    assert config["agent"]["actor_critic"]["form"] == "storm"


@pytest.mark.slow
def test_resume_continues_in_a_new_stream_and_refuses_other_settings(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    with pytest.raises(Exception, match="already holds a run"):
        agent_train(AgentTrainArgs(out=copy, game="Breakout", env_steps=96, **TINY))
    other = {**TINY, "imagine_batch": 8}
    with pytest.raises(Exception, match="imagine_batch"):
        agent_train(AgentTrainArgs(out=copy, game="Breakout", env_steps=96, resume=True, **other))
    agent_train(
        AgentTrainArgs(out=copy, game="Breakout", env_steps=96, resume=True, **TINY),
        progress=False,
    )
    saved = load_checkpoint(copy)
    assert saved["env_steps"] == 96 and saved["updates"] == 4
    assert len({c.stream for c in Replay(copy / "replay").chunks}) == 2


@pytest.mark.slow
def test_a_checkpoint_tagged_world_model_by_an_older_wmsim_is_an_agent(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    save_checkpoint(copy, {**load_checkpoint(copy), "kind": "world-model"})
    policy, saved = load_policy(copy, torch.device("cpu"), greedy=False, seed=0)
    assert isinstance(policy, RealPolicy) and saved["env_steps"] == 80
    agent_train(
        AgentTrainArgs(out=copy, game="Breakout", env_steps=96, resume=True, **TINY),
        progress=False,
    )
    assert load_checkpoint(copy)["kind"] == "agent"


@pytest.fixture(scope="module")
def world_model_run(breakout_replay, tmp_path_factory):
    """A world model trained by `wmsim train` (tiny-gru, not the agent preset's own)."""
    out = tmp_path_factory.mktemp("wm") / "run"
    train(TrainArgs(data=breakout_replay, out=out, steps=2, preset="tiny-gru", batch=2, length=8,
                    eval_every=2, checkpoint_every=2), progress=False)  # fmt: skip
    return out


@pytest.mark.slow
def test_the_loop_starts_from_a_trained_world_model(world_model_run, tmp_path):
    out = tmp_path / "run"
    start = {**TINY, "warmup_steps": 32, "checkpoint_every": 16}
    agent_train(AgentTrainArgs(out=out, game="Breakout", env_steps=16,
                               world_model=world_model_run, **start), progress=False)  # fmt: skip
    source, saved = load_checkpoint(world_model_run), load_checkpoint(out)
    assert saved["updates"] == 0  # still warming up: the model is the run's, as it was
    for name, value in source["model"].items():
        torch.testing.assert_close(saved["model"][name], value, rtol=0, atol=0, msg=name)
    config = json.loads((out / "config.json").read_text())
    assert config["train"] == source["config"]["train"]  # tiny-gru's, not the tiny preset's
    assert config["world_model_from"] == {"run": str(world_model_run)}
    assert config["resize"] == "area"  # the frames that world model learned from
    agent_train(  # and trains on from there
        AgentTrainArgs(out=out, game="Breakout", env_steps=48, world_model=world_model_run,
                       resume=True, **start), progress=False,
    )  # fmt: skip
    assert load_checkpoint(out)["updates"] == 2
    with pytest.raises(UserError, match="run: '.*' there, None asked"):
        agent_train(AgentTrainArgs(out=out, game="Breakout", env_steps=64, resume=True, **start))


def test_a_world_model_of_another_game_is_refused(world_model_run, tmp_path):
    with pytest.raises(UserError, match="models Breakout, not Pong"):
        agent_train(AgentTrainArgs(out=tmp_path / "a", game="Pong", world_model=world_model_run))
    with pytest.raises(UserError, match="--world-model goes with --game"):
        agent_train(AgentTrainArgs(out=tmp_path / "c", env="wmsim/Breakout-dream-v0",
                                   world_model=world_model_run))  # fmt: skip


@pytest.mark.slow
def test_eval_writes_a_record_and_a_video_and_results_aggregate_it(run, tmp_path):
    record, path = evaluate_command(
        EvalArgs(agent=run, episodes=2, max_frames=2_000, out=tmp_path / "eval.json"),
        progress=False,
    )
    assert path.exists() and json.loads(path.read_text()) == record
    assert record["game"] == "Breakout" and record["policy"] == "agent"
    assert record["episodes"] == len(record["scores"]) == len(record["lengths"]) == 2
    assert record["env_steps"] == 80 and record["protocol"]["noop_max"] == 30
    assert record["protocol"]["sticky_action_prob"] == 0.0
    assert (tmp_path / "eval.mp4").stat().st_size > 0
    table = results(ResultsArgs(paths=(tmp_path,)))
    assert "Breakout" in table and "STORM" in table


@pytest.mark.slow
def test_random_baseline_is_reproducible(tmp_path):
    args = dict(
        random=True, game="breakout", episodes=2, max_frames=2_000, video=tmp_path / "v.gif"
    )
    first, _ = evaluate_command(EvalArgs(out=tmp_path / "a.json", **args), progress=False)
    second, _ = evaluate_command(EvalArgs(out=tmp_path / "b.json", **args), progress=False)
    assert first["scores"] == second["scores"] and first["policy"] == "random"
    assert first["run"] is None and first["env_steps"] is None


def test_cli_errors_name_the_fix(tmp_path, capsys):
    assert main(["agent", "train", "--out", str(tmp_path / "r")]) == 2
    assert "exactly one of --game" in capsys.readouterr().err
    assert main(["agent", "train", "--out", str(tmp_path / "r"), "--game", "Breakout",
                 "--preset", "nope"]) == 2  # fmt: skip
    assert "tiny-rem" in capsys.readouterr().err  # the presets there are
    assert main(["agent", "train", "--out", str(tmp_path / "r"), "--game", "Nope"]) == 2
    assert "Nope" in capsys.readouterr().err
    assert main(["eval", "--episodes", "1"]) == 2
    assert "--agent RUN, or --random" in capsys.readouterr().err
    assert main(["eval", "--agent", str(tmp_path)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["results", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
