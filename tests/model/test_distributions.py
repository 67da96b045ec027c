import numpy as np
import pytest
import torch

from wmsim.bundle import MODE_NOISE, SAMPLING
from wmsim.model.distributions import (
    TwoHot,
    categorical_kl,
    inverse_cdf,
    sample_one_hot,
    symexp,
    symlog,
    unimix,
    unimix_probs,
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
    torch.testing.assert_close(unimix_probs(logits, 0.01), probs)  # what dreams draw from


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


def test_one_uniform_per_categorical_draws_each_class_as_often_as_its_probability():
    probs = torch.tensor([[0.5, 0.25, 0.15, 0.07, 0.03], [0.02, 0.08, 0.1, 0.3, 0.5]])
    draws = 40_000
    noise = torch.rand(draws, 2, generator=torch.Generator().manual_seed(0))  # (N, S)
    log_probs = torch.log(probs).expand(draws, 2, 5).requires_grad_()
    samples = sample_one_hot(log_probs, noise)  # (N, S, K)
    assert ((samples == 0) | (samples == 1)).all() and (samples.sum(-1) == 1).all()
    counts = samples.detach().sum(0)  # (S, K)
    expected = draws * probs
    chi_square = ((counts - expected) ** 2 / expected).sum(-1)
    # 4 degrees of freedom: P(chi2 > 18.47) = 0.001; off by one class, it is in the thousands
    assert (chi_square < 18.47).all(), chi_square
    (samples[:, 0, 0].sum()).backward()
    assert log_probs.grad.abs().sum() > 0  # straight through, as Gumbel-max samples


def test_a_negative_uniform_takes_the_mode():
    log_probs = torch.log(torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]]))
    mode = sample_one_hot(log_probs, torch.tensor([-1.0, -1e-3])).detach()
    torch.testing.assert_close(mode, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    # beside a drawn row, each takes its own way
    mixed = sample_one_hot(log_probs, torch.tensor([-1.0, 0.0])).detach()
    torch.testing.assert_close(mixed, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))


def test_every_formats_mode_noise_takes_the_mode():
    """bundle.MODE_NOISE and SAMPLING, format by format, against the sampler the graphs run."""
    log_probs = torch.log_softmax(
        torch.randn(6, 4, 7, generator=torch.Generator().manual_seed(1)), -1
    )
    for version, value in MODE_NOISE.items():
        per_class = SAMPLING[version] == "gumbel-max"
        noise = torch.full(log_probs.shape if per_class else log_probs.shape[:-1], value)
        torch.testing.assert_close(
            sample_one_hot(log_probs, noise), sample_one_hot(log_probs, None), msg=str(version)
        )


def test_inverse_cdf_at_its_boundaries():
    probs = torch.tensor([0.25, 0.25, 0.5])
    below_one = float(np.nextafter(np.float32(1), np.float32(0)))
    uniforms = torch.tensor([0.0, 0.25 - 1e-6, 0.25, 0.5, below_one])
    assert inverse_cdf(probs.expand(5, 3), uniforms).tolist() == [0, 0, 1, 2, 2]
    # a class of probability 0 is never drawn, not even at u = 0
    assert inverse_cdf(torch.tensor([0.0, 0.4, 0.6]), torch.tensor(0.0)).item() == 1
    # probabilities that sum to just under 1 (rounding): a u above their sum takes the last class
    short = torch.tensor([0.5, 0.3, 0.2 - 1e-4])
    assert inverse_cdf(short.expand(2, 3), torch.tensor([0.99995, below_one])).tolist() == [2, 2]


def test_bf16_autocast_leaves_the_cumulative_sums_in_fp32():
    probs = torch.softmax(torch.randn(64, 32, 32, generator=torch.Generator().manual_seed(2)), -1)
    uniform = torch.rand(64, 32, generator=torch.Generator().manual_seed(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = inverse_cdf(probs, uniform)
    assert torch.equal(under, inverse_cdf(probs, uniform))


def test_noise_of_another_shape_is_refused():
    with pytest.raises(
        ValueError, match=r"noise of shape \(2, 4\) is not one uniform per categori"
    ):
        sample_one_hot(torch.zeros(2, 3, 4), torch.rand(2, 4))


def test_categorical_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    p = torch.log_softmax(torch.randn(4, 3, 5, generator=g), -1)
    q = torch.log_softmax(torch.randn(4, 3, 5, generator=g), -1)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=p), torch.distributions.Categorical(logits=q)
    ).sum(-1)
    torch.testing.assert_close(categorical_kl(p, q), expected)
