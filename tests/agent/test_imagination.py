"""Imagination and acting in the real game read the world model the same way its training does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wmsim.agent.actor_critic import ActorCritic, ActorCriticConfig
from wmsim.agent.imagination import imagine
from wmsim.agent.strategy import RealPolicy
from wmsim.model import LatentWorldModel
from wmsim.train.config import preset

T = 7


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LatentWorldModel(preset("tiny").model, num_actions=4).eval()


def _agent(model, act_on="prior"):
    config = ActorCriticConfig(act_on=act_on, actor_width=16, critic_width=16)
    return ActorCritic(config, model.feature_size, 4)


def _window(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (batch, T, 64, 64, 3), dtype=np.uint8)
    actions = rng.integers(0, 4, (batch, T))
    is_first = np.zeros((batch, T), bool)
    is_first[:, 0] = True
    is_first[1, 4] = True  # a new episode inside the second window
    return frames, actions, is_first


def test_imagine_starts_from_the_context_and_follows_the_actor(model):
    frames, actions, is_first = _window()
    context = {
        "obs": torch.from_numpy(frames), "action": torch.from_numpy(actions),
        "is_first": torch.from_numpy(is_first),
    }  # fmt: skip
    agent = _agent(model)
    traj = imagine(model, agent, context, 5, torch.Generator().manual_seed(3))
    assert traj.features.shape == (2, 6, model.feature_size)
    assert traj.actions.shape == traj.reward.shape == traj.cont.shape == (2, 5)
    # the same draws by hand: observe the context, then the real last action predicts s_0
    generator = torch.Generator().manual_seed(3)
    noise = torch.rand((2, T, *model.noise_shape), generator=generator)
    state = model.observe(context["obs"], context["action"][:, :-1], context["is_first"], noise)
    noise = torch.rand((2, *model.noise_shape), generator=generator)
    state, first, _, _ = model.imagine(state, context["action"][:, -1], noise)
    assert torch.equal(traj.features[:, 0], first)
    action = agent.act(first, generator)
    assert torch.equal(traj.actions[:, 0], action)
    hard = imagine(model, agent, context, 5, torch.Generator().manual_seed(3), hard_ends=True)
    assert set(hard.cont.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("act_on", ["posterior", "prior"])
def test_acting_step_by_step_equals_the_parallel_backbone(model, act_on):
    """The h the policy reads at frame t is the parallel form's output for the token at t - 1."""
    frames, actions, is_first = _window()
    policy = RealPolicy(model, _agent(model, act_on), torch.Generator().manual_seed(0))
    state, latents, hs, seen = policy.initial(2), [], [], []
    latent_size = model.config.stoch * model.config.classes
    for t in range(T):
        features, model_state = policy.features(state, frames[:, t], is_first[:, t])
        latents.append(model_state["z"])
        seen.append(features[:, :latent_size])
        hs.append(features[:, latent_size:])
        state = {"model": model_state, "action": torch.from_numpy(actions[:, t])}
    z = torch.stack(latents, 1)
    with torch.no_grad():
        tokens = model.tokens(z, torch.from_numpy(actions))
        initial = model.backbone.initial_state(2)
        h_parallel, _ = model.backbone(tokens, torch.from_numpy(is_first), initial)
    for t in range(T):
        for b in range(2):
            if is_first[b, t]:
                assert torch.count_nonzero(hs[t][b]) == 0
                assert torch.equal(seen[t][b], latents[t][b])  # no prediction at a first frame
            else:
                torch.testing.assert_close(hs[t][b], h_parallel[b, t - 1], atol=1e-5, rtol=1e-5)
                if act_on == "posterior":
                    assert torch.equal(seen[t][b], latents[t][b])
    if act_on == "prior":
        differs = [not torch.equal(seen[t][0], latents[t][0]) for t in range(1, T)]
        assert any(differs)  # it acts on the prediction, not on the frame's encoding
    actions_taken, _ = policy.act(policy.initial(2), frames[:, 0], is_first[:, 0])
    assert actions_taken.shape == (2,) and actions_taken.dtype == np.int64
