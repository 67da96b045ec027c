"""SB3VecEnv: SB3's vector API over a dream vector env, and a short PPO run on it."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from wmsim_client import DreamVectorEnv
from wmsim_client.sb3 import SB3VecEnv

ID = "wmsim/Breakout-dream-v0"


def test_same_step_resets_with_terminal_observation_and_timelimit_flag(fake_simulator):
    simulator = fake_simulator(3, cont=1.0)
    simulator.cont[2] = 0.0  # sub-env 2 terminates at every step
    venv = SB3VecEnv(num_envs=3, max_episode_steps=2, simulator=simulator)
    obs = venv.reset()
    assert obs.shape == (3, 8, 8, 3) and [set(i) for i in venv.reset_infos] == [{"context"}] * 3
    obs, rewards, dones, infos = venv.step(np.array([1, 2, 3]))
    assert rewards.dtype == np.float32 and rewards.tolist() == [1.0, 2.0, 3.0]
    assert dones.tolist() == [False, False, True] and isinstance(infos, list)
    assert infos[0] == {"continue": 1.0, "TimeLimit.truncated": False}
    assert infos[2]["continue"] == 0.0 and infos[2]["TimeLimit.truncated"] is False
    assert infos[2]["terminal_observation"][0, 0, 0] == 1 and obs[2, 0, 0, 0] == 0
    obs, rewards, dones, infos = venv.step(np.array([1, 1, 1]))
    assert dones.all() and [i["TimeLimit.truncated"] for i in infos] == [True, True, False]
    assert [i["terminal_observation"][0, 0, 0] for i in infos] == [2, 2, 1]
    assert obs[:, 0, 0, 0].tolist() == [0, 0, 0]
    assert all(set(i) == {"context"} for i in venv.reset_infos)


def test_truncation_reaches_sb3_with_the_real_model():
    venv = SB3VecEnv(num_envs=2, max_episode_steps=3, threads=1)
    venv.seed(0)
    venv.reset()
    truncations = 0
    for t in range(60):
        obs, rewards, dones, infos = venv.step(np.array([t % 4, 1]))
        for done, info in zip(dones, infos, strict=True):
            assert ("terminal_observation" in info) == done
            assert done or not info["TimeLimit.truncated"]
            if info["TimeLimit.truncated"]:
                assert info["terminal_observation"].shape == (64, 64, 3)
                truncations += 1
    assert truncations > 0
    assert obs.shape == (2, 64, 64, 3) and obs.dtype == np.uint8
    venv.close()


def test_seed_applies_at_the_next_reset_only():
    venv = SB3VecEnv(num_envs=2, threads=1)
    assert venv.seed(3) == [3, 4]
    first = venv.reset()
    contexts = [i["context"] for i in venv.reset_infos]
    venv.seed(3)
    assert np.array_equal(venv.reset(), first)
    assert [i["context"] for i in venv.reset_infos] == contexts
    assert venv._seeds == [None, None]  # used once
    venv.close()


def test_attributes_methods_and_images():
    venv = SB3VecEnv(num_envs=2, render_mode="rgb_array", threads=1)
    assert venv.get_attr("render_mode") == ["rgb_array", "rgb_array"]
    assert venv.env_method("get_action_meanings", indices=[1]) == [
        ["NOOP", "FIRE", "RIGHT", "LEFT"]
    ]
    assert venv.env_is_wrapped(gymnasium.Wrapper) == [False, False]
    venv.set_attr("max_episode_steps", 7)
    assert venv.venv.max_episode_steps == 7
    with pytest.raises(ValueError, match="shared by all sub-envs"):
        venv.set_attr("max_episode_steps", 3, indices=[0])
    obs = venv.reset()
    images = venv.get_images()
    assert len(images) == 2 and np.array_equal(np.stack(images), obs)
    assert venv.render().shape == (128, 64, 3)  # SB3 tiles the sub-envs' frames
    venv.close()


def test_the_vector_env_must_reset_in_the_same_step():
    with pytest.raises(ValueError, match="SAME_STEP"):
        SB3VecEnv(gymnasium.make_vec(ID, num_envs=2, threads=1))
    venv = SB3VecEnv(gymnasium.make_vec(ID, num_envs=2, autoreset_mode=AutoresetMode.SAME_STEP))
    assert isinstance(venv.venv, DreamVectorEnv) and venv.num_envs == 2
    venv.close()


@pytest.mark.slow
def test_ppo_learns_on_dreams():
    from stable_baselines3 import PPO

    venv = SB3VecEnv(num_envs=2, max_episode_steps=20, threads=1)
    policy_kwargs = {"normalize_images": True, "features_extractor_kwargs": {"features_dim": 64}}
    agent = PPO(
        "CnnPolicy", venv, n_steps=16, batch_size=32, n_epochs=1, policy_kwargs=policy_kwargs,
        device="cpu", seed=0,
    )  # fmt: skip
    agent.learn(64)
    assert agent.num_timesteps == 64
    venv.close()
