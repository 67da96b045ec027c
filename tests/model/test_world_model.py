"""World models: the loss, and the dream API (observe / step / decode) against the training path."""

import dataclasses

import pytest
import torch

from wmsim.model import LatentWorldModelConfig, RSSMConfig, make_world_model
from wmsim.model.backbones import GRUConfig, TransformerConfig

SMALL = {"depth": 4, "stoch": 4, "classes": 5, "head_width": 16, "head_layers": 1}
CONFIGS = {
    "transformer": LatentWorldModelConfig(
        backbone=TransformerConfig(width=16, layers=1, heads=2, ffn=16, window=6, dropout=0.0),
        **SMALL,
    ),
    "gru": LatentWorldModelConfig(backbone=GRUConfig(width=16), **SMALL),
    "rssm": RSSMConfig(deter=16, hidden=16, **SMALL),
}
ACTIONS = 3


def windows(batch=3, length=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    is_first = torch.rand(batch, length, generator=g) < 0.15
    return {
        "obs": torch.randint(0, 256, (batch, length, 64, 64, 3), generator=g, dtype=torch.uint8),
        "action": torch.randint(0, ACTIONS, (batch, length), generator=g),
        "reward": torch.randn(batch, length, generator=g).round(),
        "is_first": is_first,
        "is_terminal": torch.rand(batch, length, generator=g) < 0.05,
        "life_loss": torch.rand(batch, length, generator=g) < 0.1,
    }


@pytest.fixture(params=sorted(CONFIGS))
def model(request):
    torch.manual_seed(0)
    return make_world_model(CONFIGS[request.param], ACTIONS)


def test_loss_is_finite_and_trains_every_parameter(model):
    # at initialization the zeroed head outputs and the free-bits floor stop some gradients
    # by design; open them so that every parameter's path to the loss is exercised
    for head in (model.reward, model.cont):
        torch.nn.init.normal_(head.out.weight, std=0.1)
    if hasattr(model.config, "free_bits"):
        model.config = dataclasses.replace(model.config, free_bits=0.0)
    loss, metrics = model.loss(windows(), torch.Generator().manual_seed(1))
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in metrics.values())
    loss.backward()
    untouched = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not untouched


def test_a_gradient_step_lowers_the_loss_on_the_same_batch(model):
    batch, optimizer = windows(), torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss, _ = model.loss(batch, torch.Generator().manual_seed(1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_dreams_have_the_right_shapes_and_are_reproducible(model):
    model.eval()
    batch = windows(batch=2, length=6)
    with torch.no_grad():
        state = model.observe(batch["obs"], batch["action"][:, :5], batch["is_first"])
        noise = torch.rand(2, *model.noise_shape, generator=torch.Generator().manual_seed(3))
        first = model.step(state, batch["action"][:, 5], noise)
        again = model.step(state, batch["action"][:, 5], noise)
        frames = model.decode(first[3])
    for a, b in zip(first[1:], again[1:], strict=True):
        torch.testing.assert_close(a, b)
    assert first[1].shape == first[2].shape == (2,)
    assert frames.shape == (2, 64, 64, 3) and 0 <= frames.min() and frames.max() <= 1
    assert ((0 <= first[2]) & (first[2] <= 1)).all()


def test_latent_model_dream_step_equals_the_training_pass():
    """observe + step predicts frame C exactly as the parallel training pass does."""
    torch.manual_seed(0)
    model = make_world_model(CONFIGS["transformer"], ACTIONS).eval()
    batch = windows(batch=2, length=7)
    batch["is_first"][:] = False
    with torch.no_grad():
        z = torch.nn.functional.one_hot(model.encode(batch["obs"]).argmax(-1), 5).flatten(-2)
        state0 = model.backbone.initial_state(2, dtype=z.dtype)
        h, _ = model.backbone(model.tokens(z.float(), batch["action"]), batch["is_first"], state0)
        expected_reward = model.two_hot.mean(model.reward(h[:, -1]))
        expected_latent = model._latent_dist(model.prior(h[:, -1])).argmax(-1)
        state = model.observe(batch["obs"], batch["action"][:, :-1], batch["is_first"])
        _, reward, _, latent = model.step(state, batch["action"][:, -1])
    torch.testing.assert_close(reward, expected_reward)
    assert (latent.unflatten(-1, (4, 5)).argmax(-1) == expected_latent).all()


def test_no_prediction_is_trained_across_an_episode_start():
    torch.manual_seed(0)
    model = make_world_model(CONFIGS["gru"], ACTIONS)
    batch = windows()
    batch["is_first"][:] = False
    batch["is_first"][0, 4] = True
    loss, _ = model.loss(batch, torch.Generator().manual_seed(1))
    batch["reward"][0, 4] = 1e6  # the reward "into" the first frame of an episode: never a target
    batch["is_terminal"][0, 4] = True
    other, _ = model.loss(batch, torch.Generator().manual_seed(1))
    torch.testing.assert_close(loss, other)


@pytest.mark.parametrize("life_loss_ends", [False, True])
def test_life_loss_ends_selects_the_continue_target(life_loss_ends):
    torch.manual_seed(0)
    config = LatentWorldModelConfig(
        backbone=GRUConfig(width=16), life_loss_ends=life_loss_ends, **SMALL
    )
    model = make_world_model(config, ACTIONS)
    torch.nn.init.constant_(model.cont.out.bias, 2.0)  # a zeroed head's BCE ignores its target
    batch = windows()
    batch["is_first"][:] = False
    batch["is_terminal"][:] = False
    batch["life_loss"][:] = False
    _, base = model.loss(batch, torch.Generator().manual_seed(1))
    batch["life_loss"][:, 5] = True
    _, lost = model.loss(batch, torch.Generator().manual_seed(1))
    assert (base["continue"] != lost["continue"]) == life_loss_ends


def test_the_prior_reconstruction_trains_the_dynamics_in_pixels():
    """prior_recon_scale decodes the prior's one-step prediction against the next real frame:
    its gradient reaches the backbone and the prior layer through the straight-through sample,
    and with scale 0 the loss is the papers' exactly."""
    torch.manual_seed(0)
    config = LatentWorldModelConfig(backbone=GRUConfig(width=16), motion_weight=20.0, **SMALL)
    plain = make_world_model(config, ACTIONS)
    with_prior = make_world_model(dataclasses.replace(config, prior_recon_scale=1.0), ACTIONS)
    with_prior.load_state_dict(plain.state_dict())
    batch = windows()
    loss, metrics = plain.loss(batch, torch.Generator().manual_seed(1))
    assert "prior_recon" not in metrics
    other, metrics = with_prior.loss(batch, torch.Generator().manual_seed(1))
    assert metrics["prior_recon"] > 0
    torch.testing.assert_close(other, loss + metrics["prior_recon"])
    with_prior.config = dataclasses.replace(with_prior.config, recon_scale=0.0, dyn_scale=0.0,
                                            rep_scale=0.0, reward_scale=0.0,
                                            continue_scale=0.0)  # fmt: skip
    only, _ = with_prior.loss(batch, torch.Generator().manual_seed(1))
    only.backward()
    assert with_prior.prior.weight.grad.abs().sum() > 0  # through the straight-through sample
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in with_prior.backbone.parameters())  # fmt: skip
