"""DreamerV2's RSSM against a step-by-step reference written from the paper's equations."""

import torch
import torch.nn.functional as F

from wmsim.model import RSSMConfig, RSSMWorldModel

CONFIG = RSSMConfig(deter=12, hidden=10, stoch=3, classes=4, depth=4, head_width=8, head_layers=1)
ACTIONS = 3


def reference(model, embeds, actions, is_first, noise):
    """DreamerV2, one step at a time, from the equations of DreamerV2 (Hafner et al., ICLR 2021)."""
    batch, length = embeds.shape[:2]
    h = torch.zeros(batch, CONFIG.deter, dtype=embeds.dtype)
    z = torch.zeros(batch, CONFIG.stoch * CONFIG.classes, dtype=embeds.dtype)
    previous = torch.zeros(batch, dtype=torch.long)
    out = {"h": [], "z": [], "prior": [], "post": []}
    cell = model.cell
    for t in range(length):
        keep = (~is_first[:, t]).to(embeds.dtype).unsqueeze(-1)
        h, z = h * keep, z * keep
        a = F.one_hot(previous, ACTIONS).to(embeds.dtype) * keep
        x = F.elu(model.img_in[0](torch.cat([z, a], -1)))
        r, c, u = cell.norm(cell.linear(torch.cat([x, h], -1))).chunk(3, -1)
        u = torch.sigmoid(u - 1.0)
        h = u * torch.tanh(torch.sigmoid(r) * c) + (1 - u) * h
        prior = torch.log_softmax(model.img_out(h).unflatten(-1, (3, 4)), -1)
        post = torch.log_softmax(
            model.obs_out(torch.cat([h, embeds[:, t]], -1)).unflatten(-1, (3, 4)), -1
        )
        gumbel = -torch.log(-torch.log(noise[:, t]))
        z = F.one_hot((post + gumbel).argmax(-1), 4).to(embeds.dtype).flatten(-2)
        for name, value in zip(out, (h, z, prior, post), strict=True):
            out[name].append(value)
        previous = actions[:, t]
    return {k: torch.stack(v, 1) for k, v in out.items()}


EMBED = 16 * 8 * CONFIG.depth  # the conv encoder's output size


def inputs(batch=3, length=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    embeds = torch.randn(batch, length, EMBED, generator=g, dtype=torch.float64)
    actions = torch.randint(0, ACTIONS, (batch, length), generator=g)
    is_first = torch.rand(batch, length, generator=g) < 0.2
    is_first[:, 0] = True
    noise = torch.rand(batch, length, 3, 4, generator=g, dtype=torch.float64)
    return embeds, actions, is_first, noise


def model_for():
    torch.manual_seed(0)
    return RSSMWorldModel(CONFIG, ACTIONS, dtype=torch.float64)


def test_observe_agrees_with_the_step_by_step_reference():
    model = model_for()
    embeds, actions, is_first, noise = inputs()
    state = model.initial_state(3, dtype=torch.float64)
    out, _ = model.observe_sequence(embeds, actions, is_first, state, noise)
    expected = reference(model, embeds, actions, is_first, noise)
    for name in expected:
        torch.testing.assert_close(out[name], expected[name], msg=name)


def test_imagine_agrees_with_observe_prior():
    # the prior that observe computes at t is what an imagined step from t - 1 computes
    model = model_for()
    embeds, actions, is_first, noise = inputs()
    is_first[:, 1:] = False
    out, _ = model.observe_sequence(
        embeds, actions, is_first, model.initial_state(3, dtype=torch.float64), noise
    )
    for t in range(1, embeds.shape[1]):
        state = {"h": out["h"][:, t - 1], "z": out["z"][:, t - 1]}
        no_reset = torch.zeros(3, dtype=torch.bool)
        h, prior = model.img_step(state, actions[:, t - 1], no_reset)
        torch.testing.assert_close(h, out["h"][:, t])
        torch.testing.assert_close(prior, out["prior"][:, t])


def first_class_past(probs, u):
    """The first class whose cumulative probability exceeds ``u``, else the last."""
    cumulative = 0.0
    for c, p in enumerate(probs.tolist()):
        cumulative += p
        if u < cumulative:
            return c
    return len(probs) - 1


def test_imagined_rollout_agrees_with_the_reference_prior_chain():
    model = model_for()
    embeds, actions, is_first, noise = inputs()
    out, _ = model.observe_sequence(
        embeds, actions, is_first, model.initial_state(3, dtype=torch.float64), noise
    )
    state = {"h": out["h"][:, -1], "z": out["z"][:, -1]}
    h, z = state["h"], state["z"]
    for k in range(5):
        dream_noise = torch.rand(3, 3, generator=torch.Generator().manual_seed(k))  # (B, S)
        assert dream_noise.shape[1:] == model.noise_shape
        state, _, _, features = model.step(state, actions[:, k], dream_noise)
        # by hand: the prior step, then the first class whose cumulative probability passes u
        x = F.elu(model.img_in[0](torch.cat([z, F.one_hot(actions[:, k], ACTIONS).double()], -1)))
        h = model.cell(x, h)
        prior = torch.softmax(model.img_out(h).unflatten(-1, (3, 4)), -1)
        index = torch.tensor([[first_class_past(prior[b, s], dream_noise[b, s].item())
                               for s in range(3)] for b in range(3)])  # fmt: skip
        z = F.one_hot(index, 4).double().flatten(-2)
        torch.testing.assert_close(features, torch.cat([h, z], -1))


def test_resets_forget_the_past():
    model = model_for()
    embeds, actions, is_first, noise = inputs()
    is_first[:] = False
    is_first[:, 0] = is_first[:, 5] = True
    state = model.initial_state(3, dtype=torch.float64)
    out, _ = model.observe_sequence(embeds, actions, is_first, state, noise)
    changed = embeds.clone()
    changed[:, :5] = torch.randn_like(changed[:, :5])
    other_actions = actions.clone()
    other_actions[:, :4] = (actions[:, :4] + 1) % ACTIONS
    out2, _ = model.observe_sequence(changed, other_actions, is_first, state, noise)
    torch.testing.assert_close(out["h"][:, 5:], out2["h"][:, 5:])
    torch.testing.assert_close(out["post"][:, 5:], out2["post"][:, 5:])


def _frames(batch=2, length=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (batch, length, 64, 64, 3), generator=g, dtype=torch.uint8)
    actions = torch.randint(0, ACTIONS, (batch, length - 1), generator=g)
    is_first = torch.zeros(batch, length, dtype=torch.bool)
    is_first[:, 0] = is_first[1, 3] = True
    noise = torch.rand(batch, length, 3, 4, generator=g)
    return frames, actions, is_first, noise


def frame_model():
    torch.manual_seed(0)
    return RSSMWorldModel(CONFIG, ACTIONS)  # float32, as frames_to_input gives frames


def test_posteriors_are_the_observed_states_of_every_prefix():
    model = frame_model()
    frames, actions, is_first, noise = _frames()
    with torch.no_grad():
        states = model.posteriors(frames, actions, is_first, noise)
        assert states["h"].shape == (2, 6, CONFIG.deter) and states["z"].shape == (2, 6, 12)
        for t in range(6):
            last = model.observe(frames[:, : t + 1], actions[:, :t], is_first[:, : t + 1],
                                 noise[:, : t + 1])  # fmt: skip
            torch.testing.assert_close(states["h"][:, t], last["h"])
            torch.testing.assert_close(states["z"][:, t], last["z"])


def test_observe_step_filters_frame_by_frame_as_posteriors_do():
    """The agent's real-game filter equals the posterior rollout over the same frames."""
    model = frame_model()
    frames, actions, is_first, noise = _frames()
    with torch.no_grad():
        states = model.posteriors(frames, actions, is_first, noise)
        state, previous = model.initial_state(2), torch.zeros(2).long()
        for t in range(6):
            state = model.observe_step(state, previous, frames[:, t], is_first[:, t], noise[:, t])
            torch.testing.assert_close(model.latent(state), torch.cat(
                [states["h"][:, t], states["z"][:, t]], -1))  # fmt: skip
            previous = actions[:, t] if t < 5 else previous
    assert model.feature_size == model.latent(state).shape[-1] == CONFIG.deter + 12


def test_imagine_is_step_with_the_features_first():
    model = model_for()
    state = {"h": torch.randn(3, CONFIG.deter, dtype=torch.float64),
             "z": torch.zeros(3, 12, dtype=torch.float64)}  # fmt: skip
    noise = torch.rand(3, *model.noise_shape, dtype=torch.float64)
    action = torch.tensor([0, 1, 2])
    with torch.no_grad():
        after, features, reward, cont = model.imagine(state, action, noise)
        stepped, reward2, cont2, latent = model.step(state, action, noise)
    for a, b in [(features, latent), (reward, reward2), (cont, cont2), (after["h"], stepped["h"])]:
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(features, model.latent(after))
