"""DreamerV2's agent on the RSSM: it dreams from every posterior state, acts on the filter."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from wmsim.agent.actor_critic import ActorCritic
from wmsim.agent.config import AGENT_PRESETS
from wmsim.agent.posterior import imagine_from_posteriors
from wmsim.agent.strategy import STRATEGIES, RealPolicy, strategy_for
from wmsim.errors import UserError
from wmsim.model import AgentWorldModel, RSSMWorldModel, make_world_model
from wmsim.train.config import PRESETS, preset

T, ACTIONS = 5, 4


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return RSSMWorldModel(preset("tiny-dreamerv2").model, num_actions=ACTIONS).eval()


def _agent(model):
    config = dataclasses.replace(
        AGENT_PRESETS["tiny-dreamerv2"].actor_critic, actor_width=16, critic_width=16
    )
    return ActorCritic(config, model.feature_size, ACTIONS)


def _window(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (batch, T, 64, 64, 3), dtype=np.uint8)
    actions = rng.integers(0, ACTIONS, (batch, T))
    is_first = np.zeros((batch, T), bool)
    is_first[:, 0] = is_first[1, 3] = True  # a new episode inside the second window
    is_terminal = np.zeros((batch, T), bool)
    is_terminal[1, 2] = True  # the first episode of the second window ends there
    return frames, actions, is_first, is_terminal


def _uniform(generator, *shape):
    return torch.rand(shape, generator=generator)


def test_dreams_start_from_every_posterior_state(model):
    names = ("obs", "action", "is_first", "is_terminal")
    context = {k: torch.from_numpy(v) for k, v in zip(names, _window(), strict=True)}
    agent = _agent(model)
    traj = imagine_from_posteriors(model, agent, context, 3, torch.Generator().manual_seed(3))
    assert traj.features.shape == (2 * T, 4, model.feature_size)
    assert traj.actions.shape == traj.reward.shape == traj.cont.shape == (2 * T, 3)
    assert traj.start.tolist() == [1.0] * 7 + [0.0] + [1.0] * 2  # window 1, frame 2 ended
    # the same draws by hand: the posterior of every frame, window-major, then the actor
    generator = torch.Generator().manual_seed(3)
    noise = _uniform(generator, 2, T, *model.noise_shape)
    with torch.no_grad():
        states = model.posteriors(context["obs"], context["action"][:, :-1], context["is_first"],
                                  noise)  # fmt: skip
    starts = torch.cat([states["h"], states["z"]], -1).flatten(0, 1)
    torch.testing.assert_close(traj.features[:, 0], starts)
    assert torch.equal(traj.actions[:, 0], agent.act(starts, generator))
    with torch.no_grad():
        _, second, _, _ = model.imagine(
            {"h": starts[:, : model.config.deter], "z": starts[:, model.config.deter :]},
            traj.actions[:, 0], _uniform(generator, 2 * T, *model.noise_shape),
        )  # fmt: skip
    torch.testing.assert_close(traj.features[:, 1], second)


def test_acting_reads_the_posterior_filters_state(model):
    """The features the policy acts on at frame t are [h_t, z_t] of the posterior rollout."""
    frames, actions, is_first, _ = _window()
    policy = RealPolicy(model, _agent(model), torch.Generator().manual_seed(0))
    state, seen = policy.initial(2), []
    for t in range(T):
        features, model_state = policy.features(state, frames[:, t], is_first[:, t])
        seen.append(features)
        state = {"model": model_state, "action": torch.from_numpy(actions[:, t])}
    # the policy drew one (B, S) noise per frame from its generator; the same by hand
    generator = torch.Generator().manual_seed(0)
    noise = torch.stack([_uniform(generator, 2, *model.noise_shape) for _ in range(T)], 1)
    with torch.no_grad():
        states = model.posteriors(torch.from_numpy(frames), torch.from_numpy(actions[:, :-1]),
                                  torch.from_numpy(is_first), noise)  # fmt: skip
    for t in range(T):
        torch.testing.assert_close(seen[t], torch.cat([states["h"][:, t], states["z"][:, t]], -1))
    taken, _ = policy.act(policy.initial(2), frames[:, 0], is_first[:, 0])
    assert taken.shape == (2,) and taken.dtype == np.int64


@pytest.mark.parametrize("name", sorted(n for n in PRESETS if n.startswith("tiny")))
def test_a_strategy_per_world_model_kind_and_a_refusal_for_the_rest(name):
    config = PRESETS[name].model
    if type(config) not in STRATEGIES:
        with pytest.raises(UserError, match="does not run on a REMConfig"):
            strategy_for(config)
        return
    torch.manual_seed(0)
    model = make_world_model(config, ACTIONS).eval()
    assert isinstance(model, AgentWorldModel)
    with torch.no_grad():
        state = model.initial_state(2)
        noise = torch.rand(2, *model.noise_shape)
        _, features, reward, cont = model.imagine(state, torch.tensor([0, 1]), noise)
    assert features.shape == (2, model.feature_size) and reward.shape == cont.shape == (2,)


def test_dreamerv2_presets_name_its_values():
    paper, tiny = AGENT_PRESETS["dreamerv2"], AGENT_PRESETS["tiny-dreamerv2"]
    ac = paper.actor_critic
    assert (ac.form, ac.act_on, ac.gamma, ac.lam, ac.entropy, ac.rho) == (
        "dreamerv2", "posterior", 0.999, 0.95, 1e-3, 1.0)  # fmt: skip
    assert (ac.actor_width, ac.actor_layers, ac.critic_width, ac.critic_layers) == (400, 4, 400, 4)
    assert (ac.activation, ac.actor_unimix, ac.lr, ac.eps, ac.grad_clip) == (
        "elu", 0.0, 4e-5, 1e-5, 100.0)  # fmt: skip
    assert (paper.horizon, paper.train_every, paper.warmup_steps) == (15, 16, 50_000)
    assert paper.imagine_batch * paper.context == 16 * 50  # every posterior state of its batch
    assert not paper.hard_ends and not tiny.hard_ends
    # the tiny one: DreamerV2's returns and slow critic, at the tiny presets' sizes and rate
    small = tiny.actor_critic
    assert dataclasses.replace(small, actor_width=400, actor_layers=4, critic_width=400,
                               critic_layers=4, lr=4e-5, warmup=0) == ac  # fmt: skip
    assert (tiny.horizon, tiny.imagine_batch * tiny.context) == (15, 256)
