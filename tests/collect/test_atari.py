"""The real emulator under the Atari 100k protocol: every preprocessing choice, checked."""

import cv2
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from wmsim.collect.atari import AtariConfig, AtariEnv, block_max, checked, downsample
from wmsim.errors import UserError


def random_actions(env, n, seed=0):
    return np.random.default_rng(seed).integers(env.action_space.n, size=n)


def test_spaces_follow_the_protocol():
    env = AtariEnv()
    assert env.observation_space.shape == (64, 64, 3)
    assert env.observation_space.dtype == np.uint8
    assert env.action_meanings == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    obs, info = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    obs, reward, terminated, truncated, info = env.step(1)
    assert type(reward) is float and type(terminated) is bool and type(truncated) is bool
    assert set(info) == {"lives", "life_loss", "episode_frame_number"}


@pytest.mark.parametrize("game, actions", [("Pong", 6), ("MsPacman", 9), ("Freeway", 3)])
def test_minimal_action_sets(game, actions):
    # counts from ale-py's minimal action sets
    assert AtariEnv(AtariConfig(game=game)).action_space.n == actions


def test_a_step_is_four_frames_and_the_frame_is_the_max_of_the_last_two():
    env = AtariEnv()
    env.reset(seed=3)
    differs_from_last_frame = 0
    for action in random_actions(env, 300):
        state = env.ale.cloneState()
        obs, reward, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
        # replay the same four frames by hand on the emulator's saved state
        env.ale.restoreState(state)
        ale_action = env.ale.getMinimalActionSet()[action]
        frames, total = [], 0
        for _ in range(4):
            total += env.ale.act(ale_action)
            frames.append(env.ale.getScreenRGB())
        assert reward == total
        assert (obs == downsample(np.maximum(frames[2], frames[3]), 64)).all()
        differs_from_last_frame += (obs != downsample(frames[3], 64)).any()
    assert differs_from_last_frame > 50  # the max matters: the ball moves between frames


def final_step_by_hand(env, action):
    """Play ``action`` until the episode ends, from the state before the last step; its frames."""
    frames = []
    while not env.ale.game_over():
        env.ale.act(env.ale.getMinimalActionSet()[action])
        frames.append(env.ale.getScreenRGB())
    return frames


@pytest.mark.parametrize("cap", [None, 9, 10, 11, 12])
def test_an_episode_ending_inside_a_step_shows_its_last_frames(cap):
    # game over (Breakout ends on the first frame of a step) and the frame cap
    # falling on each of the four frames: the max of the last two frames when
    # the step played all four, else the final frame alone
    config = AtariConfig(noop_max=0, max_frames=cap or 108_000)
    env = AtariEnv(config)
    env.reset(seed=2)
    for action in random_actions(env, 5000) if cap is None else [3] * 5:  # LEFT: the paddle moves
        state = env.ale.cloneState()
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    assert terminated == (cap is None) and truncated == (cap is not None)
    env.ale.restoreState(state)
    frames = final_step_by_hand(env, action)
    assert len(frames) == ((cap - 1) % 4 + 1 if cap else 1)
    final = np.maximum(frames[-2], frames[-1]) if len(frames) == 4 else frames[-1]
    assert (obs == downsample(final, 64)).all()


def weakest_trace(resize, height, width):
    """The faintest a white height x width sprite gets after resizing, over all offsets."""
    weakest = 255
    for y in range(100, 110):
        for x in range(70, 80):
            frame = np.zeros((210, 160, 3), np.uint8)
            frame[y : y + height, x : x + width] = 255
            weakest = min(weakest, int(resize(frame).max()))
    return weakest


def test_downsampling_keeps_thin_sprites_and_stays_close_to_area_averaging():
    def bilinear(frame):
        return cv2.resize(frame, (64, 64), interpolation=cv2.INTER_LINEAR)

    ours = lambda frame: downsample(frame, 64)  # noqa: E731
    # a 1x2 missile vanishes at some offsets under plain bilinear sampling, never under ours
    assert weakest_trace(bilinear, 2, 1) == 0
    assert weakest_trace(ours, 2, 1) > 0
    assert weakest_trace(ours, 4, 2) >= 48  # Breakout's ball stays clearly visible

    env, frames = AtariEnv(render_mode="rgb_array"), []
    env.reset(seed=0)
    for action in random_actions(env, 200):
        env.step(action)
        frames.append(env.render())
    ours = np.stack([downsample(f, 64) for f in frames]).astype(int)
    area = np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA) for f in frames])
    assert np.abs(ours - area).mean() < 2.0


def test_rewards_are_raw():
    env = AtariEnv(AtariConfig(game="Asterix"))
    env.reset(seed=0)
    rewards = {env.step(a)[1] for a in random_actions(env, 600)}
    assert 50.0 in rewards  # an Asterix item is worth 50 points, not a clipped 1


def test_episodes_start_with_1_to_30_no_ops():
    env = AtariEnv()
    frames = {env.reset(seed=s)[1]["episode_frame_number"] for s in range(40)}
    assert min(frames) >= 1 and max(frames) <= 30 and len(frames) > 10
    env = AtariEnv(AtariConfig(noop_max=0))
    assert {env.reset(seed=s)[1]["episode_frame_number"] for s in range(5)} == {0}


def test_episodes_are_truncated_at_the_frame_cap():
    assert AtariConfig().max_frames == 108_000
    env = AtariEnv(AtariConfig(max_frames=100))
    env.reset(seed=1)
    for _ in range(100):
        _, _, terminated, truncated, info = env.step(0)  # without FIRE the game never ends
        if truncated:
            break
    assert truncated and not terminated
    assert info["episode_frame_number"] == 100


def test_life_loss_is_its_own_flag_and_game_over_terminates():
    env = AtariEnv()
    _, info = env.reset(seed=1)
    lives, losses = info["lives"], 0
    for action in random_actions(env, 5000):
        _, _, terminated, truncated, info = env.step(action)
        assert info["life_loss"] == (info["lives"] < lives)
        losses += info["life_loss"]
        lives = info["lives"]
        if terminated or truncated:
            break
    assert terminated and not truncated
    assert losses == 5 and lives == 0


def test_sticky_actions_repeat_the_previous_action():
    def play(sticky, actions):
        env = AtariEnv(AtariConfig(sticky_action_prob=sticky))
        frames = [env.reset(seed=5)[0]]
        frames += [env.step(a)[0] for a in actions]
        return np.stack(frames)

    actions = random_actions(AtariEnv(), 100)
    noops = np.zeros_like(actions)
    # with p = 1 the emulator never leaves the reset action (NOOP): as if we pressed nothing
    assert (play(1.0, actions) == play(0.0, noops)).all()
    assert (play(0.0, actions) != play(0.0, noops)).any()


def test_seeded_resets_and_steps_are_reproducible():
    def trajectory(seed):
        env = AtariEnv(AtariConfig(sticky_action_prob=0.25))
        obs = [env.reset(seed=seed)[0]]
        for action in random_actions(env, 100):
            obs.append(env.step(action)[0])
        return np.stack(obs)

    assert (trajectory(11) == trajectory(11)).all()
    assert (trajectory(11) != trajectory(12)).any()


def test_gymnasium_check_env():
    check_env(AtariEnv(render_mode="rgb_array"), skip_render_check=True)


@pytest.mark.parametrize(
    "config, message",
    [
        (AtariConfig(game="Breakot"), "did you mean Breakout"),
        (AtariConfig(sticky_action_prob=1.5), "sticky_action_prob must be in"),
        (AtariConfig(noop_max=-1), "noop_max must be 0 or more"),
        (AtariConfig(frame_skip=0), "frame_skip must be at least 1"),
        (AtariConfig(max_frames=30), r"max_frames \(30\) must exceed noop_max \+ frame_skip"),
        (AtariConfig(size=4096), "size must be at most 210"),
    ],
)
def test_bad_settings_are_named(config, message):
    with pytest.raises(UserError, match=message):
        checked(config)


def test_game_names_are_made_canonical():
    assert checked(AtariConfig(game="ms_pacman")).game == "MsPacman"


def test_block_max_keeps_a_ball_at_full_colour_and_sees_every_pixel_once():
    ball = lambda frame: block_max(frame, 64)  # noqa: E731
    assert weakest_trace(ball, 4, 2) == 255  # at every offset the ball keeps its brightest value
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (210, 160, 3), dtype=np.uint8)
    rows = (np.arange(65) * 210) // 64
    columns = (np.arange(65) * 160) // 64
    expected = np.stack([
        np.stack([frame[rows[i] : rows[i + 1], columns[j] : columns[j + 1]].max((0, 1))
                  for j in range(64)])
        for i in range(64)
    ])  # fmt: skip
    assert (block_max(frame, 64) == expected).all()
    with pytest.raises(ValueError, match="enlarge"):
        block_max(frame, 200)


def test_the_env_resizes_by_block_max_when_asked():
    env = AtariEnv(AtariConfig(resize="max"), render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    for action in random_actions(env, 50):
        obs, *_ = env.step(action)
        assert (obs == block_max(env.render(), 64)).all()
    with pytest.raises(UserError, match="resize"):
        checked(AtariConfig(resize="nearest"))
    with pytest.raises(UserError, match="160"):
        checked(AtariConfig(resize="max", size=200))
