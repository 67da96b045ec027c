"""The training examples: CleanRL-style PPO and Stable-Baselines3 PPO train inside a dream.

Each runs as a user runs it, a script in a child process, at a tiny budget: these
tests prove the plumbing (an outside training loop drives the dream env, in
process or on a server, and saves what it trained), not that the agent learns.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from serving import served

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "clients" / "examples"
TINY = ["--total-steps", "128", "--max-episode-steps", "20", "--threads", "1"]  # 2 updates


@pytest.fixture(autouse=True)
def no_token(monkeypatch):
    """Servers and clients take $WMSIM_TOKEN by default: these tests use none."""
    monkeypatch.delenv("WMSIM_TOKEN", raising=False)


def run_example(script: str, *args: str, cwd: Path) -> dict[str, str]:
    """Run ``python clients/examples/SCRIPT ARGS`` in ``cwd``; its ``done k=v ...`` line as a dict.

    The child's model store is a fresh one under ``cwd``: it dreams with the shipped bundle.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("WMSIM_MODEL", "WMSIM_TOKEN")}
    env["WMSIM_HOME"] = str(cwd / "wmsim-home")
    command = [sys.executable, str(EXAMPLES / script), *args]
    run = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith("done "), run.stdout
    return dict(re.findall(r"(\w+)=(\S+)", last)) | {"stdout": run.stdout}


def load_script(name: str, monkeypatch):
    """The example ``name`` as a module, for its classes (its ``__main__`` does not run)."""
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def check_ppo_summary(summary: dict[str, str]) -> None:
    """Two updates of 2 envs x 32 steps, in which the 20-step limit ended episodes."""
    assert int(summary["steps"]) == 128 and int(summary["updates"]) == 2
    assert int(summary["episodes"]) >= 6  # episodes last 20 steps at most: 3 per env in 64
    assert float(summary["steps_per_s"]) > 0 and float(summary["mean_length"]) <= 20
    for name in ("mean_return", "policy_loss", "value_loss", "entropy", "approx_kl"):
        assert summary[name] != "nan", name
    progress = [line for line in summary["stdout"].splitlines() if line.startswith("update=")]
    assert [line.split()[:2] for line in progress] == [
        ["update=1/2", "steps=64"],
        ["update=2/2", "steps=128"],
    ]


@pytest.mark.slow
def test_ppo_dream_trains_in_process_and_saves_a_loadable_agent(tmp_path, monkeypatch):
    save = tmp_path / "runs" / "agent.pt"
    summary = run_example("ppo_dream.py", *TINY, "--num-envs", "2", "--num-steps", "32",
                          "--seed", "3", "--save", str(save), cwd=tmp_path)  # fmt: skip
    check_ppo_summary(summary)

    agent = load_script("ppo_dream", monkeypatch).Agent(num_actions=4)
    agent.load_state_dict(torch.load(save, weights_only=True))  # strict: every weight, no others
    logits, values = agent(torch.zeros((5, 64, 64, 3), dtype=torch.uint8))
    assert logits.shape == (5, 4) and values.shape == (5,)
    config = json.loads(save.with_suffix(".config.json").read_text())
    assert config["num_envs"] == 2 and config["seed"] == 3 and config["save"] == str(save)


@pytest.mark.slow
def test_ppo_dream_trains_on_a_server(tmp_path):
    with served("--max-envs", "4") as server:
        summary = run_example("ppo_dream.py", *TINY, "--num-envs", "2", "--num-steps", "32",
                              "--server", server.address, cwd=tmp_path)  # fmt: skip
        check_ppo_summary(summary)
        server.wait_for_log(r"event=session_(close|end) ")  # the script closed its session
        assert not any("event=session_lost" in line for line in server.logs)


@pytest.mark.slow
def test_sb3_dream_trains_and_saves_a_loadable_model(tmp_path):
    from stable_baselines3 import PPO

    save = tmp_path / "sb3-agent.zip"
    summary = run_example("sb3_dream.py", *TINY, "--envs", "2", "--n-steps", "32",
                          "--save", str(save), cwd=tmp_path)  # fmt: skip
    assert int(summary["steps"]) == 128 and int(summary["episodes"]) >= 6
    assert summary["mean_return"] != "nan" and float(summary["steps_per_s"]) > 0

    agent = PPO.load(save, device="cpu")
    assert agent.observation_space.shape == (3, 64, 64)  # SB3 transposed the frames for its CNN
    assert agent.action_space.n == 4 and agent.num_timesteps == 128


def test_ppo_dream_gae_is_td_at_lambda_0_and_monte_carlo_at_lambda_1(monkeypatch):
    gae = load_script("ppo_dream", monkeypatch).gae
    generator = torch.Generator().manual_seed(0)
    rewards, values = (
        torch.rand((5, 3), generator=generator),
        torch.rand((5, 3), generator=generator),
    )
    next_value, gamma = torch.rand(3, generator=generator), 0.9
    ends = torch.zeros((5, 3))
    ends[2, 1] = 1.0  # env 1's episode ends at step 2: step 3 starts another

    advantages, returns = gae(rewards, values, ends, next_value, gamma, 0.0)
    following = torch.cat([values[1:], next_value[None]]) * (1 - ends)
    assert torch.allclose(advantages, rewards + gamma * following - values)
    assert torch.allclose(returns, advantages + values)

    # discounted rewards to the end of the episode, or of the rollout and then its value
    expected, later = torch.zeros((5, 3)), next_value
    for t in reversed(range(5)):
        later = rewards[t] + gamma * (1 - ends[t]) * later
        expected[t] = later
    assert torch.allclose(gae(rewards, values, ends, next_value, gamma, 1.0)[1], expected)
