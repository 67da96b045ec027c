"""REM's agent on its token model: it dreams with POP from real frames, sees the code map."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from wmsim.agent.actor_critic import ActorCritic
from wmsim.agent.config import AGENT_PRESETS
from wmsim.agent.strategy import RealPolicy, strategy_for
from wmsim.agent.tokens import imagine_from_tokens
from wmsim.model import REMWorldModel
from wmsim.train.config import preset

C, ACTIONS, HORIZON = 2, 4, 3


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return REMWorldModel(preset("tiny-rem").model, num_actions=ACTIONS).eval()


def _agent(model):
    config = dataclasses.replace(
        AGENT_PRESETS["tiny-rem"].actor_critic, actor_width=16, critic_width=16
    )
    return ActorCritic(config, model.feature_size, ACTIONS)


def _context(batch=3, seed=0):
    rng = np.random.default_rng(seed)
    context = {
        "obs": rng.integers(0, 256, (batch, C, 64, 64, 3), dtype=np.uint8),
        "action": rng.integers(0, ACTIONS, (batch, C)),
        "is_first": np.zeros((batch, C), bool),
        "is_terminal": np.zeros((batch, C), bool),
    }
    context["is_first"][:, 0] = context["is_first"][1, 1] = True  # row 1: a new episode at t
    context["is_terminal"][2, 1] = True  # row 2's last frame ended its episode
    return {k: torch.from_numpy(v) for k, v in context.items()}


def test_the_agent_sees_the_same_code_map_in_the_dream_and_the_game(model):
    """s_0 of a dream is the last real frame's code map, the one acting reads of that frame."""
    context, agent = _context(), _agent(model)
    traj = imagine_from_tokens(model, agent, context, HORIZON, torch.Generator().manual_seed(1))
    policy = RealPolicy(model, agent, torch.Generator().manual_seed(0))
    seen, _ = policy.features(
        policy.initial(3), context["obs"][:, -1].numpy(), context["is_first"][:, -1].numpy()
    )
    torch.testing.assert_close(traj.features[:, 0], seen, rtol=0, atol=0)
    with torch.no_grad():  # the code map: the codebook vectors of the frame's 64 tokens
        tokens = model.tokenizer.tokenize(context["obs"][:, -1])
        by_hand = model.tokenizer.codebook(tokens).flatten(1)
    torch.testing.assert_close(seen, by_hand, rtol=0, atol=0)
    assert seen.shape == (3, model.feature_size) == (3, 64 * model.config.tokenizer.code_size)


def test_dreams_take_pop_steps_with_sampled_rewards_and_ends(model):
    context, agent = _context(), _agent(model)
    traj = imagine_from_tokens(model, agent, context, HORIZON, torch.Generator().manual_seed(1))
    assert traj.features.shape == (3, HORIZON + 1, model.feature_size)
    assert traj.actions.shape == traj.reward.shape == traj.cont.shape == (3, HORIZON)
    assert set(traj.reward.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert set(traj.cont.unique().tolist()) <= {0.0, 1.0}
    assert traj.start.tolist() == [1.0, 1.0, 0.0]  # a dream from a terminal frame weighs nothing
    # the same draws by hand: the policy at the real frame, then tokens, then reward and end
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        state = model.observe(context["obs"], context["action"][:, :-1], context["is_first"])
        action = agent.act(traj.features[:, 0], generator)
        noise = torch.rand(3, *model.noise_shape, generator=generator)
        outcome = torch.rand(3, 2, generator=generator)
        _, reward, cont, tokens = model.step(state, action, noise)
        _, features, sampled_reward, sampled_cont = model.imagine(state, action, noise, outcome)
    assert torch.equal(traj.actions[:, 0], action)
    torch.testing.assert_close(traj.features[:, 1], model.features(tokens), rtol=0, atol=0)
    torch.testing.assert_close(features, model.features(tokens), rtol=0, atol=0)
    assert torch.equal(traj.reward[:, 0], sampled_reward)
    assert torch.equal(traj.cont[:, 0], sampled_cont)
    # the expected sign and continue probability are what step gives
    assert ((reward >= -1) & (reward <= 1)).all() and ((cont >= 0) & (cont <= 1)).all()


def test_sampled_rewards_and_ends_follow_the_heads(model):
    """Many draws from one state: their means are the expected sign and continue probability."""
    rows = 1000
    context = {k: v[:1] for k, v in _context().items()}
    action = torch.full((rows,), 2)
    noise = torch.rand(1, *model.noise_shape, generator=torch.Generator().manual_seed(2))
    noise = noise.expand(rows, -1)
    outcome = torch.rand(rows, 2, generator=torch.Generator().manual_seed(3))
    outcome[:2] = torch.tensor([[0.0, 0.0], [1 - 1e-6, 1 - 1e-6]])  # the inverse CDF's ends
    with torch.no_grad():
        state = model.observe(context["obs"], context["action"][:, :-1], context["is_first"])
        _, _, expected, cont = model.imagine(state, action[:1], noise[:1])
        state = {k: v.expand(rows, *v.shape[1:]) for k, v in state.items()}
        _, _, reward, flags = model.imagine(state, action, noise, outcome)
    assert reward[:2].tolist() == [-1.0, 1.0] and flags[:2].tolist() == [1.0, 0.0]
    # 4 standard errors at n = 1000: a sign's is below 1 / sqrt(n), a flag's below 0.5 / sqrt(n)
    assert abs(reward.mean() - expected[0]) < 0.127 and abs(flags.mean() - cont[0]) < 0.064


def test_the_strategy_and_presets_name_rems_values():
    rem, tiny = AGENT_PRESETS["rem"], AGENT_PRESETS["tiny-rem"]
    assert strategy_for(preset("rem").model).imagine is imagine_from_tokens
    ac = rem.actor_critic
    assert (ac.form, ac.act_on, ac.gamma, ac.lam, ac.entropy) == (
        "dreamerv2", "posterior", 0.995, 0.95, 1e-3)  # fmt: skip
    assert (ac.optimizer, ac.lr, ac.grad_clip, ac.actor_width, ac.critic_width) == (
        "adamw", 1e-4, 3.0, 512, 512)  # fmt: skip
    assert (ac.slow_decay, ac.slow_every, ac.slow_reg) == (0.0, 1, 0.0)  # bootstrap: the critic
    assert (rem.world_model, rem.imagine_batch, rem.context, rem.horizon) == ("rem", 128, 2, 9)
    assert (tiny.world_model, tiny.context, tiny.horizon) == ("tiny-rem", 2, 9)
    small = tiny.actor_critic
    assert dataclasses.replace(small, actor_width=512, critic_width=512, lr=1e-4) == ac
