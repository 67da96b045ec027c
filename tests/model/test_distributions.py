import pytest
import torch

from wmsim.model.distributions import (
    TwoHot,
    categorical_kl,
    sample_one_hot,
    symexp,
    symlog,
    unimix,
)


def test_symlog_and_symexp_are_inverse_and_odd():
    x = torch.tensor([-1000.0, -2.5, -1e-3, 0.0, 1e-3, 2.5, 1000.0], dtype=torch.float64)
    torch.testing.assert_close(symexp(symlog(x)), x)
    torch.testing.assert_close(symlog(-x), -symlog(x))
    assert symlog(torch.tensor(torch.e - 1)).item() == pytest.approx(1.0)


def test_two_hot_by_hand():
    two_hot = TwoHot(bins=5, low=-2.0, high=2.0)  # bins at -2, -1, 0, 1, 2
    # symlog(e - 1) = 1: all weight on the bin at 1
    torch.testing.assert_close(
        two_hot.target(torch.tensor([torch.e - 1])), torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0]])
    )
    # symlog(x) = 0.25: 3/4 on the bin at 0, 1/4 on the bin at 1
    x = symexp(torch.tensor([0.25]))
    torch.testing.assert_close(two_hot.target(x), torch.tensor([[0.0, 0.0, 0.75, 0.25, 0.0]]))
    # beyond the range: clamped onto the last bin
    torch.testing.assert_close(
        two_hot.target(torch.tensor([1e9])), torch.tensor([[0.0] * 4 + [1.0]])
    )


def test_two_hot_round_trips_through_its_mean():
    two_hot = TwoHot()  # 255 bins on [-20, 20]
    x = torch.tensor([-7.0, -1.0, 0.0, 0.5, 1.0, 4.0, 7.0, 300.0], dtype=torch.float64)
    logits = torch.log(two_hot.target(x).clamp(min=1e-30))
    torch.testing.assert_close(two_hot.mean(logits), x)


def test_two_hot_loss_is_smallest_at_the_target():
    two_hot = TwoHot(bins=5, low=-2.0, high=2.0)
    x = torch.tensor([1.0])
    best = torch.log(two_hot.target(x).clamp(min=1e-9))
    worse = torch.zeros(1, 5)
    assert two_hot.loss(best, x) < two_hot.loss(worse, x)


def test_unimix_keeps_every_class_possible():
    logits = torch.tensor([[100.0, 0.0, 0.0, 0.0]])
    probs = unimix(logits, 0.01).exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(1))
    assert probs.min() == pytest.approx(0.0025)  # 1% spread over 4 classes
    torch.testing.assert_close(unimix(logits, 0.0), torch.log_softmax(logits, -1))


def test_samples_follow_the_distribution_and_pass_gradients_straight_through():
    log_probs = torch.log(torch.tensor([0.6, 0.3, 0.1])).requires_grad_()
    noise = torch.rand(20000, 3, generator=torch.Generator().manual_seed(0))
    samples = sample_one_hot(log_probs.expand(20000, 3), noise)
    assert ((samples == 0) | (samples == 1)).all() and (samples.sum(-1) == 1).all()
    torch.testing.assert_close(samples.mean(0), torch.tensor([0.6, 0.3, 0.1]), atol=0.01, rtol=0)
    (samples[:, 0].sum()).backward()
    assert log_probs.grad.abs().sum() > 0  # gradients reach the logits through the probabilities
    mode = sample_one_hot(torch.log(torch.tensor([0.2, 0.5, 0.3])), None)
    torch.testing.assert_close(mode.detach(), torch.tensor([0.0, 1.0, 0.0]))


def test_categorical_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    p = torch.log_softmax(torch.randn(4, 3, 5, generator=g), -1)
    q = torch.log_softmax(torch.randn(4, 3, 5, generator=g), -1)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=p), torch.distributions.Categorical(logits=q)
    ).sum(-1)
    torch.testing.assert_close(categorical_kl(p, q), expected)
