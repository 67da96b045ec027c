"""LaProp against its update rule written out by hand, the optimizer table, the warm-up."""

import io
import math

import pytest
import torch

from wmsim.train.optim import OPTIMIZERS, LaProp, warm_up


def test_laprop_follows_its_update_rule():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = LaProp([p], lr=0.1, betas=(0.9, 0.99), eps=1e-8)
    grads = [torch.tensor([0.5, -1.0]), torch.tensor([-0.2, 3.0])]
    expected, m, v = torch.tensor([1.0, -2.0]), torch.zeros(2), torch.zeros(2)
    for t, g in enumerate(grads, 1):
        # the gradient is normalized before it enters the momentum (Adam normalizes after)
        v = 0.99 * v + 0.01 * g**2
        m = 0.9 * m + 0.1 * 0.1 * g / ((v / (1 - 0.99**t)).sqrt() + 1e-8)
        expected = expected - m / (1 - 0.9**t)
        p.grad = g.clone()
        optimizer.step()
        torch.testing.assert_close(p.detach(), expected)


def test_laprop_first_step_moves_each_weight_by_lr_whatever_the_gradient_scale():
    p = torch.nn.Parameter(torch.zeros(3))
    optimizer = LaProp([p], lr=0.01, eps=1e-20)
    p.grad = torch.tensor([1e-6, 1.0, -1e6])
    optimizer.step()
    torch.testing.assert_close(p.detach(), torch.tensor([-0.01, -0.01, 0.01]))


def test_laprop_resumes_from_a_saved_state_dict():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    opt_a = LaProp(a.parameters(), lr=0.01)
    for _ in range(3):
        a(torch.randn(4, 3)).square().sum().backward()
        opt_a.step()
    b.load_state_dict(a.state_dict())
    opt_b = LaProp(b.parameters(), lr=0.01)
    saved = io.BytesIO()
    torch.save(opt_a.state_dict(), saved)  # as a checkpoint does
    saved.seek(0)
    opt_b.load_state_dict(torch.load(saved))
    x = torch.randn(4, 3)
    for model, opt in ((a, opt_a), (b, opt_b)):
        opt.zero_grad()
        model(x).square().sum().backward()
        opt.step()
    torch.testing.assert_close(a.weight, b.weight)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="invalid LaProp"):
        LaProp([torch.nn.Parameter(torch.zeros(1))], lr=-1.0)
    assert set(OPTIMIZERS) == {"adam", "adamw", "laprop"}
    assert not math.isnan(
        OPTIMIZERS["adam"](
            [torch.nn.Parameter(torch.zeros(1))], lr=1e-3, eps=1e-8, weight_decay=0.0
        ).defaults["lr"]
    )


def test_warm_up_rises_linearly_and_scales_each_group():
    weights = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.Adam(
        [{"params": weights[:1]}, {"params": weights[1:], "lr_scale": 0.1}]
    )
    rates = [warm_up(optimizer, 1e-3, 4, step) for step in range(6)]
    assert rates == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-3, 1e-4])
    assert warm_up(optimizer, 1e-3, 0, 0) == 1e-3  # no warm-up
