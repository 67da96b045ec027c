"""DreamEnv: gymnasium's and SB3's checkers, types, seeding, episode ends and bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import gymnasium
import numpy as np
import pytest
from wmsim_client import DreamEnv

from wmsim.errors import UserError

ID = "wmsim/Breakout-dream-v0"


def rollout(env, seed, steps=30):
    obs, info = env.reset(seed=seed)
    trajectory = [(obs, info["context"])]
    for t in range(steps):
        obs, reward, terminated, truncated, info = env.step(t % env.action_space.n)
        trajectory.append((obs, reward, terminated, truncated, info["continue"]))
        if terminated or truncated:
            obs, info = env.reset()
            trajectory.append((obs, info["context"]))
    return trajectory


def same(a, b):
    return all(
        all(np.array_equal(x, y) for x, y in zip(p, q, strict=True))
        for p, q in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("obs_type", ["pixels", "latent"])
def test_gymnasium_check_env_passes_without_warnings(obs_type):
    from gymnasium.utils.env_checker import check_env

    env = gymnasium.make(ID, obs_type=obs_type)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []
    env.close()


@pytest.mark.parametrize("obs_type", ["pixels", "latent"])
def test_sb3_check_env_passes_without_warnings(obs_type):
    from stable_baselines3.common.env_checker import check_env

    env = gymnasium.make(ID, obs_type=obs_type)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    assert [str(w.message) for w in caught] == []
    env.close()


def test_spaces_and_python_types():
    env = gymnasium.make(ID, render_mode="rgb_array")
    assert env.observation_space == gymnasium.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert env.action_space == gymnasium.spaces.Discrete(4)
    assert env.spec.max_episode_steps == 1000 and not env.spec.nondeterministic
    assert env.unwrapped.get_action_meanings() == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    obs, info = env.reset(seed=0)
    assert obs in env.observation_space and type(info["context"]) is int
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert obs in env.observation_space
        assert type(reward) is float and type(terminated) is bool and type(truncated) is bool
        assert type(info["continue"]) is float and 0 <= info["continue"] <= 1
    frame = env.render()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    assert np.array_equal(frame, obs)  # pixels: the render is the observation
    env.close()
    env.close()


def test_latent_observations_render_frames():
    env = DreamEnv(obs_type="latent", render_mode="rgb_array")
    spec = env.simulator.spec["latent"]
    assert env.observation_space.shape == tuple(spec["shape"])
    assert env.observation_space.dtype == np.dtype(spec["dtype"])
    obs, _ = env.reset(seed=0)
    assert obs in env.observation_space
    obs, *_ = env.step(1)
    assert obs in env.observation_space
    frame = env.render()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    env.close()


def test_a_seed_reproduces_a_trajectory_and_another_seed_does_not():
    env = gymnasium.make(ID, max_episode_steps=4)
    first, again, other = rollout(env, 5), rollout(env, 5), rollout(env, 6)
    assert same(first, again)
    assert not same(first, other)
    env.close()


def test_the_continue_probability_decides_termination(fake_simulator):
    def ends(cont, steps=400):
        env = DreamEnv(simulator=fake_simulator(1, cont), ends="sampled")
        env.reset(seed=0)
        return np.mean([env.step(0)[2] for _ in range(steps)])

    assert ends(1.0) == 0 and ends(0.0) == 1
    assert 0.6 < ends(0.3) < 0.8  # terminates with probability 1 - continue


def test_likely_ends_come_where_an_end_is_more_likely_than_not(fake_simulator):
    def ends(cont, steps=200):
        env = DreamEnv(simulator=fake_simulator(1, cont))  # the default
        env.reset(seed=0)
        return np.mean([env.step(0)[2] for _ in range(steps)])

    assert DreamEnv(simulator=fake_simulator(1)).ends == "likely"
    assert ends(0.3) == 1 and ends(0.55) == 0 and ends(0.97) == 0
    with pytest.raises(ValueError, match="ends must be one of sampled, likely"):
        DreamEnv(simulator=fake_simulator(1), ends="never")


def test_a_seed_goes_to_the_simulator_row_once(fake_simulator):
    simulator = fake_simulator(1)
    env = DreamEnv(simulator=simulator)
    env.reset(seed=3)
    env.reset()
    assert simulator.reset_calls == [([0], [3]), ([0], [None])]
    assert env.np_random_seed == 3  # gymnasium's own generator is seeded alike


def test_max_episode_steps_truncates_inside_the_env(fake_simulator):
    env = DreamEnv(simulator=fake_simulator(1, 1.0), max_episode_steps=3)
    env.reset(seed=0)
    assert [env.step(0)[3] for _ in range(3)] == [False, False, True]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"obs_type": "rgb"}, "obs_type must be one of pixels, latent"),
        ({"render_mode": "human"}, "render_mode must be None or one of rgb_array"),
        ({"max_episode_steps": 0}, "max_episode_steps must be None or a positive int"),
        ({"latents": "argmax"}, "latents must be one of sampled, mode"),
    ],
)
def test_bad_options_are_refused_before_loading(options, message):
    with pytest.raises(ValueError, match=message):
        DreamEnv(**options)


@pytest.mark.parametrize("action", [4, -1, 1.0, "1", [1], True])
def test_bad_actions_name_the_valid_range(fake_simulator, action):
    env = DreamEnv(simulator=fake_simulator(1))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"an action is an int in \[0, 4\)"):
        env.step(action)


def test_stepping_before_reset_or_after_close_is_an_error(fake_simulator):
    env = DreamEnv(simulator=fake_simulator(1))
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.close()
    assert env.simulator is None
    with pytest.raises(RuntimeError, match="closed"):
        env.reset()


def test_an_injected_simulator_must_fit(fake_simulator):
    with pytest.raises(ValueError, match="2 rows"):
        DreamEnv(simulator=fake_simulator(2))
    with pytest.raises(UserError, match="dreams Breakout, not Pong"):
        DreamEnv(game="Pong", simulator=fake_simulator(1))


def test_a_game_without_a_model_names_the_commands_that_make_one():
    with pytest.raises(UserError, match="wmsim export"):
        gymnasium.make("wmsim/Pong-dream-v0")


def test_a_model_of_another_game_is_refused():
    with pytest.raises(UserError, match="is a model of Breakout, not Pong"):
        gymnasium.make("wmsim/Pong-dream-v0", model="Breakout")


def test_make_works_in_a_fresh_process_without_importing_wmsim(tmp_path):
    code = (
        "import gymnasium\n"
        "env = gymnasium.make('wmsim:wmsim/Breakout-dream-v0')\n"
        "obs, info = env.reset(seed=0)\n"
        "print(type(env.unwrapped).__name__, obs.shape, env.step(0)[1:4])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "WMSIM_MODEL"}
    env["WMSIM_HOME"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.startswith("DreamEnv (64, 64, 3) (")


def test_the_decoder_is_chosen_where_the_env_is_made():
    """``decoder=`` reaches the env's graphs: onnxruntime shows the exported graph's frames
    exactly; openvino decodes without int8; a server decodes with its own."""
    from wmsim.runtime import openvino_decode
    from wmsim.runtime.graphs import Graphs

    env = gymnasium.make("wmsim/Breakout-dream-v0", decoder="onnxruntime")
    try:
        env.reset(seed=5)
        for action in (1, 2, 3, 0):
            frame = env.step(action)[0]
        dreams = env.unwrapped.simulator.dreams
        assert dreams.runtime.graphs.decoder == "onnxruntime"
        exported = Graphs(dreams.runtime.bundle, device="cpu", decoder="onnxruntime")
        np.testing.assert_array_equal(frame, exported.decode(dreams.latents(np.array([0])))[0])
    finally:
        env.close()
    if openvino_decode.available():
        envs = gymnasium.make_vec("wmsim/Breakout-dream-v0", num_envs=2, decoder="openvino")
        try:
            decoder = envs.simulator.dreams.runtime.graphs.decoder
            assert decoder.startswith("openvino ") and "int8" not in decoder
        finally:
            envs.close()
    with pytest.raises(ValueError, match="a server decodes with its own"):
        gymnasium.make("wmsim/Breakout-dream-v0", server="127.0.0.1:1", decoder="onnxruntime")
    with pytest.raises(ValueError, match="decoder must be one of auto, onnxruntime"):
        gymnasium.make("wmsim/Breakout-dream-v0", decoder="fast")
