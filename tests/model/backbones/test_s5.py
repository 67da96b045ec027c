"""S5: the reset operator and its scan against the sequential recurrence, and the HiPPO-N start."""

import pytest
import torch

from wmsim.model.backbones import S5Config
from wmsim.model.backbones.s5 import S5SSM, associative_scan, hippo_n, reset_operator


def random_elements(batch, length, modes, seed, resets=0.2):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    c = (torch.rand(batch, length, 1, generator=g) < resets).double().expand(-1, -1, modes)
    return rand(batch, length, modes), rand(batch, length, modes), rand(batch, length, modes), \
        rand(batch, length, modes), c  # fmt: skip


def sequential(elements, x0):
    """x_t = (1 - c_t) a_t x_{t-1} + b_t, with complex numbers as (re, im) pairs."""
    a_re, a_im, b_re, b_im, c = elements
    re, im, out = x0[0], x0[1], []
    for t in range(a_re.shape[1]):
        keep = 1 - c[:, t]
        re, im = (
            keep * (a_re[:, t] * re - a_im[:, t] * im) + b_re[:, t],
            keep * (a_re[:, t] * im + a_im[:, t] * re) + b_im[:, t],
        )
        out.append((re, im))
    return torch.stack([o[0] for o in out], 1), torch.stack([o[1] for o in out], 1)


@pytest.mark.parametrize("length", [1, 2, 7, 37, 64])
def test_the_reset_scan_equals_the_sequential_recurrence_from_a_carried_state(length):
    elements = random_elements(3, length, 5, seed=length)
    g = torch.Generator().manual_seed(100 + length)
    x0 = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)  # non-zero carried state
    # the carried state enters as a first element (1, x0, no reset), as in Lu et al.'s code
    one, zero = torch.ones(3, 1, 5, dtype=torch.float64), torch.zeros(3, 1, 5, dtype=torch.float64)
    first = (one, zero, x0[0].unsqueeze(1), x0[1].unsqueeze(1), zero)
    scanned = associative_scan(
        reset_operator, tuple(torch.cat([f, e], 1) for f, e in zip(first, elements, strict=True))
    )
    expected_re, expected_im = sequential(elements, x0)
    torch.testing.assert_close(scanned[2][:, 1:], expected_re)
    torch.testing.assert_close(scanned[3][:, 1:], expected_im)


def test_the_scan_reaches_the_carried_state_only_until_the_first_reset():
    elements = random_elements(1, 10, 3, seed=1, resets=0.0)
    c = elements[4].clone()
    c[:, 4] = 1.0
    elements = (*elements[:4], c)
    x0 = torch.randn(2, 1, 3, dtype=torch.float64)
    before, after = sequential(elements, x0), sequential(elements, 10 * x0)
    assert not torch.allclose(before[0][:, :4], after[0][:, :4])
    torch.testing.assert_close(before[0][:, 4:], after[0][:, 4:])


def test_the_reset_operator_is_associative():
    x, y, z = (random_elements(2, 1, 4, seed=s, resets=0.5) for s in (1, 2, 3))
    left = reset_operator(reset_operator(x, y), z)
    right = reset_operator(x, reset_operator(y, z))
    for a, b in zip(left, right, strict=True):
        torch.testing.assert_close(a, b)


def test_hippo_n_eigenvalues_have_real_part_minus_one_half():
    eigenvalues, vectors = hippo_n(16)
    torch.testing.assert_close(eigenvalues.real, torch.full((16,), -0.5, dtype=torch.float64))
    # the eigenvectors are unitary, so V^-1 is V^H
    torch.testing.assert_close(vectors.conj().T @ vectors, torch.eye(16, dtype=torch.complex128))
    # the modes come in conjugate pairs: keeping one half loses nothing
    imag = eigenvalues.imag.sort().values
    torch.testing.assert_close(imag, -imag.flip(0))


def test_discretized_modes_are_stable_and_match_complex_arithmetic():
    torch.manual_seed(0)
    ssm = S5SSM(S5Config(width=8, state=16), dtype=torch.float64)
    (re, im), (b_re, b_im) = ssm.discretize()
    assert (re.square() + im.square()).sqrt().max() < 1.0
    lam = torch.complex(ssm.lambda_re, ssm.lambda_im)
    lambda_bar = torch.exp(lam * ssm.log_dt.exp())
    b_bar = ((lambda_bar - 1) / lam)[:, None] * torch.complex(ssm.b_re, ssm.b_im)
    torch.testing.assert_close(torch.complex(re, im), lambda_bar)
    torch.testing.assert_close(torch.complex(b_re, b_im), b_bar)
