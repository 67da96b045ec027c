"""DreamVectorEnv: native make_vec, equal to N single envs, and gymnasium's autoreset modes."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from wmsim_client import DreamEnv, DreamVectorEnv

from wmsim.store import EMBEDDED

ID = "wmsim/Breakout-dream-v0"
N, STEPS, LIMIT = 4, 60, 5  # a short step limit: episodes also end by truncation
BUNDLE = EMBEDDED / "Breakout.wmsim"  # a path: module-scoped fixtures see no test's store


def actions_for(steps=STEPS, n=N):
    return np.random.default_rng(0).integers(0, 4, (steps, n))


# Rewards of a batch of 4 and of 1 differ in the last float32 bit (measured: 1.2e-7):
# onnxruntime's matrix products block differently for different batch sizes. Frames,
# terminations and truncations have come out exactly equal, and are compared exactly.
def assert_close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def assert_infos_equal(ours, theirs):
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        if isinstance(value, dict):
            assert_infos_equal(value, theirs[key])
        elif value.dtype == object:  # final_obs: None or an observation per sub-env
            for a, b in zip(value, theirs[key], strict=True):
                assert (a is None and b is None) or np.array_equal(a, b)
        else:
            assert value.dtype == theirs[key].dtype, key
            if value.dtype.kind == "f":
                assert_close(value, theirs[key])
            else:
                assert np.array_equal(value, theirs[key]), key


@pytest.fixture(scope="module")
def singles():
    """N single envs, built once: each comparison reseeds them."""
    envs = [DreamEnv(model=BUNDLE, max_episode_steps=LIMIT, threads=1) for _ in range(N)]
    yield envs
    for env in envs:
        env.close()


def test_make_vec_builds_the_native_vector_env():
    envs = gymnasium.make_vec(ID, num_envs=N)
    assert type(envs) is DreamVectorEnv
    assert envs.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    assert envs.max_episode_steps == 1000  # the registration's limit, applied by the vector env
    assert envs.observation_space.shape == (N, 64, 64, 3)
    assert envs.single_action_space == gymnasium.spaces.Discrete(4)
    envs.close()
    envs = gymnasium.make_vec(ID, num_envs=2, autoreset_mode="SameStep", max_episode_steps=3)
    assert envs.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    assert envs.max_episode_steps == 3
    envs.close()


def test_equals_single_envs_that_reset_on_the_next_step(singles):
    envs = DreamVectorEnv(N, model=BUNDLE, max_episode_steps=LIMIT, threads=1)
    obs, _ = envs.reset(seed=11)
    for i, env in enumerate(singles):
        assert np.array_equal(obs[i], env.reset(seed=11 + i)[0])
    ended, ends = [False] * N, 0
    for actions in actions_for():
        obs, rewards, terminated, truncated, _ = envs.step(actions)
        for i, env in enumerate(singles):
            if ended[i]:  # NEXT_STEP: the step after an end resets instead
                single, reward, term, trunc = env.reset()[0], 0.0, False, False
            else:
                single, reward, term, trunc, _ = env.step(actions[i])
            ended[i] = term or trunc
            ends += ended[i]
            assert np.array_equal(obs[i], single)
            assert (terminated[i], truncated[i]) == (term, trunc)
            assert_close(rewards[i], reward)
    assert ends > N  # the comparison went through resets
    envs.close()


def run_both(mode, singles, seed=21):
    """Our vector env and SyncVectorEnv over single envs, same seeds and actions, side by side."""
    ours = DreamVectorEnv(N, model=BUNDLE, max_episode_steps=LIMIT, autoreset_mode=mode, threads=1)
    theirs = SyncVectorEnv([lambda env=env: env for env in singles], autoreset_mode=mode)
    results = [(ours.reset(seed=seed), theirs.reset(seed=seed))]
    for actions in actions_for():
        last = results[-1][0]
        if mode is AutoresetMode.DISABLED and len(last) == 5 and (last[2] | last[3]).any():
            mask = last[2] | last[3]  # SyncVectorEnv pops the mask from options: one dict each
            results.append((ours.reset(options={"reset_mask": mask}),
                            theirs.reset(options={"reset_mask": mask.copy()})))  # fmt: skip
        results.append((ours.step(actions), theirs.step(actions)))
    ours.close()  # not theirs: it would close the shared single envs
    return results


@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_equals_gymnasium_sync_vector_env_infos_included(mode, singles):
    results = run_both(mode, singles)
    for ours, theirs in results:
        assert np.array_equal(ours[0], theirs[0])  # observations
        assert_infos_equal(ours[-1], theirs[-1])
        if len(ours) == 5:  # a step: rewards, terminations, truncations
            assert_close(ours[1], theirs[1])
            assert np.array_equal(ours[2], theirs[2]) and np.array_equal(ours[3], theirs[3])
    assert sum(len(r[0]) == 5 and (r[0][2] | r[0][3]).any() for r in results) > 5


def test_next_step_resets_the_sub_env_after_an_end(fake_simulator):
    simulator = fake_simulator(3, cont=1.0)
    simulator.cont[0] = 0.0  # sub-env 0 terminates at every step it takes
    envs = DreamVectorEnv(3, max_episode_steps=2, simulator=simulator)
    envs.reset(seed=0)
    obs, rewards, terminated, truncated, infos = envs.step(np.array([1, 2, 3]))
    assert terminated.tolist() == [True, False, False] and not truncated.any()
    assert infos["_continue"].tolist() == [True, True, True] and "context" not in infos
    obs, rewards, terminated, truncated, infos = envs.step(np.array([3, 2, 1]))
    assert rewards.tolist() == [0.0, 2.0, 1.0]  # sub-env 0 was reset: its action is ignored
    assert terminated.tolist() == [False, False, False]
    assert truncated.tolist() == [False, True, True]
    assert obs[:, 0, 0, 0].tolist() == [0, 2, 2]
    assert infos["_context"].tolist() == [True, False, False]
    assert infos["_continue"].tolist() == [False, True, True]
    assert simulator.step_calls[-1].tolist() == [1, 2]  # one batched call, reset rows left out
    obs, rewards, *_ = envs.step(np.array([1, 1, 1]))
    assert rewards.tolist() == [1.0, 0.0, 0.0] and obs[:, 0, 0, 0].tolist() == [1, 0, 0]
    assert len(simulator.step_calls) == 3


def test_same_step_resets_at_once_and_reports_the_final_obs_and_info(fake_simulator):
    simulator = fake_simulator(3, cont=1.0)
    simulator.cont[1] = 0.0
    envs = DreamVectorEnv(3, autoreset_mode=AutoresetMode.SAME_STEP, simulator=simulator)
    envs.reset(seed=0)
    obs, rewards, terminated, truncated, infos = envs.step(np.array([1, 2, 3]))
    assert terminated.tolist() == [False, True, False] and rewards.tolist() == [1.0, 2.0, 3.0]
    assert obs[:, 0, 0, 0].tolist() == [1, 0, 1]  # sub-env 1 shows its reset observation
    assert infos["_final_obs"].tolist() == infos["_final_info"].tolist() == [False, True, False]
    assert infos["final_obs"][0] is None and infos["final_obs"][1][0, 0, 0] == 1
    assert infos["final_info"]["_continue"].tolist() == [False, True, False]
    assert infos["final_info"]["continue"][1] == 0.0
    assert infos["_continue"].tolist() == [True, False, True]  # sub-env 1 has its reset info
    assert infos["_context"].tolist() == [False, True, False]
    obs, rewards, *_ = envs.step(np.array([1, 1, 1]))
    assert rewards.tolist() == [1.0, 1.0, 1.0]  # stepped again at once: no skipped step


def test_disabled_never_resets_by_itself(fake_simulator):
    simulator = fake_simulator(3, cont=1.0)
    envs = DreamVectorEnv(3, autoreset_mode="Disabled", max_episode_steps=2, simulator=simulator)
    envs.reset(seed=0)
    envs.step(np.zeros(3, int))
    simulator.cont[2] = 0.0
    obs, _, terminated, truncated, _ = envs.step(np.zeros(3, int))
    assert truncated.all() and terminated.tolist() == [False, False, True]
    with pytest.raises(RuntimeError, match=r"sub-envs \[0, 1, 2\] ended.*reset_mask"):
        envs.step(np.zeros(3, int))
    obs, infos = envs.reset(seed=5, options={"reset_mask": np.array([True, False, True])})
    assert obs[:, 0, 0, 0].tolist() == [0, 2, 0]  # the others keep their last observation
    assert infos["_context"].tolist() == [True, False, True]
    assert simulator.reset_calls[-1] == ([0, 2], [5, 7])
    with pytest.raises(RuntimeError, match=r"sub-envs \[1\] ended"):
        envs.step(np.zeros(3, int))


@pytest.mark.parametrize(
    ("mask", "error", "message"),
    [
        ([True, False], TypeError, "must be a numpy array"),
        (np.array([True]), ValueError, r"must have shape \(2,\)"),
        (np.array([1, 0]), TypeError, "must have dtype bool"),
        (np.array([False, False]), ValueError, "selects no sub-env"),
    ],
)
def test_bad_reset_masks_are_refused(fake_simulator, mask, error, message):
    envs = DreamVectorEnv(2, autoreset_mode="Disabled", simulator=fake_simulator(2))
    with pytest.raises(error, match=message):
        envs.reset(options={"reset_mask": mask})


def test_seeds_as_gymnasium_seeds_sub_envs(fake_simulator):
    simulator = fake_simulator(3)
    envs = DreamVectorEnv(3, simulator=simulator)
    envs.reset(seed=7)
    assert envs.np_random_seed == 7
    envs.reset(seed=[1, None, 3])
    envs.reset()
    assert [seeds for _, seeds in simulator.reset_calls] == [[7, 8, 9], [1, None, 3], [None] * 3]
    with pytest.raises(ValueError, match="one per sub-env"):
        envs.reset(seed=[1, 2])


def test_render_gives_a_frame_per_sub_env_like_sync_vector_env():
    envs = gymnasium.make_vec(ID, num_envs=2, render_mode="rgb_array")
    obs, _ = envs.reset(seed=0)
    obs, *_ = envs.step(np.array([0, 1]))
    frames = envs.render()
    assert isinstance(frames, tuple) and len(frames) == 2
    assert all(f.shape == (64, 64, 3) and f.dtype == np.uint8 for f in frames)
    assert np.array_equal(np.stack(frames), obs)
    envs.close()
    envs.close()


def test_latent_vector_env_observations():
    envs = gymnasium.make_vec(ID, num_envs=2, obs_type="latent")
    obs, _ = envs.reset(seed=0)
    assert obs in envs.observation_space and obs.shape == (2, 1024)
    obs, *_ = envs.step(np.array([0, 1]))
    assert obs in envs.observation_space
    envs.close()


def test_bad_input_is_refused(fake_simulator):
    with pytest.raises(ValueError, match="num_envs must be a positive int"):
        DreamVectorEnv(0, simulator=fake_simulator(1))
    with pytest.raises(ValueError, match="autoreset_mode must be an AutoresetMode or one of"):
        DreamVectorEnv(2, autoreset_mode="sometimes", simulator=fake_simulator(2))
    with pytest.raises(ValueError, match="2 rows"):
        DreamVectorEnv(3, simulator=fake_simulator(2))
    envs = DreamVectorEnv(2, simulator=fake_simulator(2))
    with pytest.raises(RuntimeError, match="reset"):
        envs.step(np.zeros(2, int))
    envs.reset(seed=0)
    for actions in (np.zeros(3, int), np.zeros(2), np.array([0, 4]), np.array([-1, 0])):
        with pytest.raises(ValueError, match=r"actions must be .*ints in \[0, 4\)"):
            envs.step(actions)
    envs.close()
    with pytest.raises(RuntimeError, match="closed"):
        envs.reset()
