"""The actor-critic's pieces against hand-computed values, and that it learns a bandit."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from wmsim.agent.actor_critic import (
    ActorCritic,
    ActorCriticConfig,
    ReturnNorm,
    RunningNorm,
    lambda_return,
    step_weights,
)
from wmsim.agent.config import AGENT_PRESETS
from wmsim.model.distributions import TwoHot

REWARD = torch.tensor([[1.0, 2.0]])
CONT = torch.tensor([[1.0, 0.5]])
VALUE = torch.tensor([[10.0, 20.0, 30.0]])


def test_lambda_return_dreamerv3_form_by_hand():
    # G_2 = V_2 = 30
    # G_1 = 2 + 0.9 * 0.5 * (0.5 * V_2 + 0.5 * G_2) = 2 + 0.45 * 30 = 15.5
    # G_0 = 1 + 0.9 * 1.0 * (0.5 * V_1 + 0.5 * G_1) = 1 + 0.9 * (10 + 7.75) = 16.975
    returns = lambda_return(REWARD, CONT, VALUE, 0.9, 0.5, "dreamerv3")
    assert returns[0].tolist() == pytest.approx([16.975, 15.5])


def test_lambda_return_storm_form_uses_the_value_of_the_step_itself():
    # STORM's calc_lambda_return: (1 - lambda) V_k, not V_k+1
    # G_1 = 2 + 0.45 * (0.5 * V_1 + 0.5 * 30) = 2 + 0.45 * 25 = 13.25
    # G_0 = 1 + 0.9 * (0.5 * V_0 + 0.5 * 13.25) = 1 + 0.9 * 11.625 = 11.4625
    returns = lambda_return(REWARD, CONT, VALUE, 0.9, 0.5, "storm")
    assert returns[0].tolist() == pytest.approx([11.4625, 13.25])


def test_lambda_return_extremes_and_cuts():
    # lambda 1, no ends: the discounted rewards plus the discounted bootstrap
    full = lambda_return(REWARD, torch.ones(1, 2), VALUE, 0.9, 1.0, "dreamerv3")
    assert full[0].tolist() == pytest.approx([1 + 0.9 * 2 + 0.81 * 30, 2 + 0.9 * 30])
    # lambda 0: one-step TD targets
    td = lambda_return(REWARD, CONT, VALUE, 0.9, 0.0, "dreamerv3")
    assert td[0].tolist() == pytest.approx([1 + 0.9 * 20, 2 + 0.45 * 30])
    # a lambda of 0 at step 0 cuts there: G_0 = r_0 + gamma V_1, whatever follows
    cut = lambda_return(REWARD, CONT, VALUE, 0.9, torch.tensor([[0.0, 0.5]]), "dreamerv3")
    assert cut[0, 0].item() == pytest.approx(1 + 0.9 * 20)
    ended = lambda_return(REWARD, torch.tensor([[0.0, 1.0]]), VALUE, 0.9, 0.5, "storm")
    assert ended[0, 0].item() == 1.0  # nothing follows an end
    with pytest.raises(ValueError, match="form"):
        lambda_return(REWARD, CONT, VALUE, 0.9, 0.5, "dreamer")


def test_dreamerv2_return_and_weights_by_hand():
    """DreamerV2's discount 0.999 and its weights: the product of the discounts gamma c before."""
    reward = torch.tensor([[1.0, 0.0, 2.0]])
    cont = torch.tensor([[0.9, 0.5, 1.0]])  # continue probabilities, as its discount head gives
    value = torch.tensor([[4.0, 6.0, 8.0, 10.0]])
    g = 0.999
    # G_3 = V_3 = 10
    g2 = 2 + g * 1.0 * (0.05 * 10 + 0.95 * 10)
    g1 = 0 + g * 0.5 * (0.05 * 8 + 0.95 * g2)
    g0 = 1 + g * 0.9 * (0.05 * 6 + 0.95 * g1)
    returns = lambda_return(reward, cont, value, g, 0.95, "dreamerv2")
    assert returns[0].tolist() == pytest.approx([g0, g1, g2])
    torch.testing.assert_close(returns, lambda_return(reward, cont, value, g, 0.95, "dreamerv3"))
    weights = step_weights(cont, g, "dreamerv2")
    assert weights[0].tolist() == pytest.approx([1.0, g * 0.9, g * 0.9 * g * 0.5])
    assert step_weights(cont, g, "dreamerv3")[0].tolist() == pytest.approx([1.0, 0.9, 0.45])
    assert step_weights(cont, g, "storm")[0].tolist() == [1.0, 1.0, 1.0]


def _with_slow_critic_apart(config):
    torch.manual_seed(0)
    agent = ActorCritic(config, 4, 3)
    for p in agent.critic.parameters():
        torch.nn.init.normal_(p, std=0.3)
    for p in agent.slow_critic.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return agent


def test_dreamerv2_bootstraps_and_baselines_with_the_slow_critic_unscaled():
    config = dataclasses.replace(AGENT_PRESETS["dreamerv2"].actor_critic, actor_width=8,
                                 critic_width=8, actor_layers=1, critic_layers=1)  # fmt: skip
    agent = _with_slow_critic_apart(config)
    features = torch.randn(2, 5, 4)
    actions, reward = torch.randint(3, (2, 4)), torch.randn(2, 4) * 30
    cont = torch.full((2, 4), 0.9)
    _, metrics, _ = agent.objective(features, actions, reward, cont, ReturnNorm())
    with torch.no_grad():
        slow = agent.value(features, slow=True)
        fast = agent.value(features)
    assert not torch.allclose(slow, fast)
    returns = lambda_return(reward, cont, slow, config.gamma, config.lam, "dreamerv2")
    assert metrics["return"].item() == pytest.approx(returns.mean().item(), rel=1e-5)
    assert metrics["return_scale"].item() == 1.0  # returns spread by far more than 1
    advantage = (returns - slow[:, :-1]).mean().item()
    assert metrics["advantage"].item() == pytest.approx(advantage, rel=1e-4, abs=1e-5)
    # a start that was terminal in the real game counts for nothing (DreamerV2's first discount)
    start = torch.tensor([1.0, 0.0])
    loss, _, _ = agent.objective(features, actions, reward, cont, ReturnNorm(), start=start)
    first, _, _ = agent.objective(features[:1], actions[:1], reward[:1], cont[:1], ReturnNorm())
    assert loss.item() == pytest.approx(first.item() / 2, rel=1e-5)


def test_dreamerv2_copies_the_critic_every_hundred_updates():
    config = AGENT_PRESETS["dreamerv2"].actor_critic
    assert (config.slow_decay, config.slow_every, config.slow_reg) == (0.0, 100, 0.0)
    small = dataclasses.replace(config, actor_width=8, critic_width=8)
    agent = _with_slow_critic_apart(small)
    before = [p.clone() for p in agent.slow_critic.parameters()]
    for update in (1, 99, 101):
        agent.update_slow(update)
    kept = zip(agent.slow_critic.parameters(), before, strict=True)
    assert all(torch.equal(a, b) for a, b in kept)
    agent.update_slow(200)
    for slow, fast in zip(agent.slow_critic.parameters(), agent.critic.parameters(), strict=True):
        assert torch.equal(slow, fast)
    with pytest.raises(ValueError, match="rho"):
        ActorCritic(dataclasses.replace(small, rho=0.9), 4, 3)


def test_two_hot_critic_targets_by_hand():
    two_hot = TwoHot(bins=5, low=-2.0, high=2.0)  # bins at -2, -1, 0, 1, 2 in symlog space
    x = torch.tensor([math.expm1(0.25), 0.0, -math.expm1(1.5), 1e6])
    target = two_hot.target(x)
    assert target[0].tolist() == pytest.approx([0, 0, 0.75, 0.25, 0])  # symlog 0.25
    assert target[1].tolist() == pytest.approx([0, 0, 1, 0, 0])
    assert target[2].tolist() == pytest.approx([0.5, 0.5, 0, 0, 0])  # symlog -1.5
    assert target[3].tolist() == pytest.approx([0, 0, 0, 0, 1])  # beyond the last bin: clamped
    # the prediction is symexp of the expected bin: these logits give back x[0]
    logits = torch.log(target[0].clamp(min=1e-12))
    assert two_hot.mean(logits).item() == pytest.approx(math.expm1(0.25), rel=1e-5)
    # the loss is the cross-entropy with the two-hot target
    uniform = torch.zeros(5)
    assert two_hot.loss(uniform, x[0]).item() == pytest.approx(math.log(5))


def test_return_normalization_by_hand():
    norm = ReturnNorm(decay=0.5, percentiles=(5.0, 95.0))
    returns = torch.arange(101, dtype=torch.float32)  # P5 = 5, P95 = 95
    assert norm.update(returns) == pytest.approx(45.0)  # low 2.5, high 47.5
    assert norm.update(returns) == pytest.approx(67.5)  # low 3.75, high 71.25
    assert (norm.low, norm.high) == pytest.approx((3.75, 71.25))
    small = ReturnNorm(decay=0.99)
    assert small.update(returns) == 1.0  # a spread below 1 is not scaled up
    restored = ReturnNorm()
    restored.load_state_dict(norm.state_dict())
    assert restored.scale == pytest.approx(67.5)


def test_slow_critic_is_an_ema_of_the_critic():
    torch.manual_seed(0)
    agent = ActorCritic(ActorCriticConfig(slow_decay=0.75, critic_width=8, actor_width=8), 4, 3)
    for p in agent.critic.parameters():
        torch.nn.init.normal_(p)
    slow_before = [p.clone() for p in agent.slow_critic.parameters()]
    agent.update_slow(0)
    for slow, old, fast in zip(
        agent.slow_critic.parameters(), slow_before, agent.critic.parameters(), strict=True
    ):
        assert torch.allclose(slow, 0.75 * old + 0.25 * fast)
    assert not any(p.requires_grad for p in agent.slow_critic.parameters())


def test_weights_follow_the_form():
    """DreamerV3 weighs each step by the continue flags before it; STORM weighs all alike."""
    torch.manual_seed(0)
    features = torch.randn(1, 4, 6)
    actions, reward = torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3)
    cont = torch.tensor([[1.0, 0.0, 1.0]])  # ends after the second step
    agent = ActorCritic(ActorCriticConfig(form="dreamerv3", critic_width=8, actor_width=8), 6, 2)
    torch.nn.init.normal_(agent.critic[-1].weight)
    _, implicit, _ = agent.objective(features, actions, reward, cont, ReturnNorm())
    _, explicit, _ = agent.objective(
        features, actions, reward, cont, ReturnNorm(), weight=torch.tensor([[1.0, 1.0, 0.0]])
    )
    assert implicit["critic_loss"].item() == pytest.approx(explicit["critic_loss"].item())
    _, unweighted, _ = agent.objective(
        features, actions, reward, cont, ReturnNorm(), weight=torch.ones(1, 3)
    )
    assert unweighted["critic_loss"].item() != pytest.approx(implicit["critic_loss"].item())


@pytest.mark.parametrize("form", ["storm", "dreamerv3", "dreamerv2"])
def test_learns_a_two_armed_bandit(form):
    """Action 1 pays 1, action 0 pays 0: the policy must come to prefer action 1."""
    torch.manual_seed(0)
    config = ActorCriticConfig(form=form, actor_width=16, critic_width=16, lr=3e-3, entropy=1e-3)
    agent = ActorCritic(config, 4, 2)
    optimizer = torch.optim.Adam([p for p in agent.parameters() if p.requires_grad], lr=3e-3)
    norm, generator = ReturnNorm(), torch.Generator().manual_seed(0)
    features = torch.randn(64, 4).unsqueeze(1).expand(64, 5, 4)  # a state that never changes
    for update in range(150):
        actions = agent.act(features[:, :4].reshape(-1, 4), generator).reshape(64, 4)
        loss, metrics, statistics = agent.objective(
            features, actions, actions.float(), torch.ones(64, 4), norm
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        agent.update_slow(update)
        agent.update_statistics(norm, statistics)
    preferred = agent.log_policy(features[:, 0]).exp()[:, 1].mean().item()
    assert preferred > 0.9
    assert metrics["value"].item() > 1.0  # the critic sees the rewards ahead


def test_unimix_keeps_every_action_possible():
    agent = ActorCritic(ActorCriticConfig(actor_unimix=0.01, actor_width=8, critic_width=8), 3, 4)
    with torch.no_grad():
        agent.actor[-1].bias.copy_(torch.tensor([100.0, 0.0, 0.0, 0.0]))
    probs = agent.log_policy(torch.zeros(1, 3)).exp()[0]
    assert probs[1:].tolist() == pytest.approx([0.0025] * 3, rel=1e-3)
    assert agent.act(torch.zeros(2, 3), None, greedy=True).tolist() == [0, 0]


def test_running_norm_merges_batches_exactly_and_clips():
    norm = RunningNorm(3)
    torch.manual_seed(0)
    batches = [torch.randn(5, 7, 3) * 4 + 2, torch.randn(11, 3) - 1]
    for batch in batches:
        norm.update(batch)
    seen = torch.cat([b.reshape(-1, 3) for b in batches]).double()
    # Stable-Baselines3's prior: count 1e-4 of mean 0, variance 1
    n, prior = len(seen), 1e-4
    mean = seen.mean(0) * n / (n + prior)
    var = seen.var(0, unbiased=False) * n + prior + seen.mean(0).square() * prior * n / (n + prior)
    var = var / (n + prior)
    torch.testing.assert_close(norm.mean.double(), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(norm.var.double(), var, rtol=1e-5, atol=1e-6)
    assert float(norm.count) == pytest.approx(n + prior)
    x = torch.tensor([[1e6, -1e6, 0.0]])
    expected = ((x - norm.mean) / torch.sqrt(norm.var + 1e-8)).clamp(-10, 10)
    torch.testing.assert_close(norm(x), expected)
    assert norm(x)[0, :2].tolist() == [10.0, -10.0]


def test_dramas_actor_reads_normalized_features_and_keeps_the_statistics():
    config = dataclasses.replace(AGENT_PRESETS["drama"].actor_critic, actor_width=8, critic_width=8)
    agent = ActorCritic(config, 4, 3)
    assert not ActorCritic(AGENT_PRESETS["storm"].actor_critic, 4, 3).state_dict().keys() & {
        "actor_norm.mean"
    }  # only where the preset asks for it
    features = torch.randn(2, 5, 4) * 100 + 50  # far from normalized
    norm = ReturnNorm()
    statistics = agent.objective(features, torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4),
                                 torch.ones(2, 4), norm)[2]  # fmt: skip
    agent.update_statistics(norm, statistics)
    assert float(agent.actor_norm.count) == pytest.approx(8 + 1e-4)  # the 2 x 4 acting states
    by_hand = torch.log_softmax(agent.actor(agent.actor_norm(features[:, 0])), -1)
    torch.testing.assert_close(agent.log_policy(features[:, 0]), by_hand)
    restored = ActorCritic(config, 4, 3)
    restored.load_state_dict(agent.state_dict())
    torch.testing.assert_close(restored.actor_norm.mean, agent.actor_norm.mean)


@pytest.mark.parametrize("preset", ["storm", "drama"])
def test_the_objective_leaves_the_statistics_alone_and_the_update_step_applies_them(preset):
    """Computing the loss twice changes no normalizer; the update step applies its statistics."""
    config = dataclasses.replace(AGENT_PRESETS[preset].actor_critic, actor_width=8, critic_width=8)
    torch.manual_seed(0)
    agent = ActorCritic(config, 4, 3)
    features = torch.randn(2, 5, 4) * 100 + 50
    trajectory = (features, torch.randint(3, (2, 4)), torch.randn(2, 4) * 10, torch.ones(2, 4))
    norm = ReturnNorm(config.return_decay, config.return_range)
    before = copy.deepcopy(agent.state_dict())
    first = agent.objective(*trajectory, norm)
    second = agent.objective(*trajectory, norm)
    assert norm.state_dict() == {"low": 0.0, "high": 0.0}
    assert all(torch.equal(value, before[key]) for key, value in agent.state_dict().items())
    assert torch.equal(first[0], second[0])
    agent.update_statistics(norm, first[2])
    assert norm.state_dict() != {"low": 0.0, "high": 0.0}
    if preset == "drama":
        assert float(agent.actor_norm.count) == pytest.approx(8 + 1e-4)
