"""REM's world model: dreaming step by step gives what the parallel training pass predicts, for
POP and token by token; two network calls per frame with POP, 65 without; REM's sizes."""

import dataclasses

import pytest
import torch

from wmsim.model import REMConfig, make_world_model
from wmsim.model.rem import BLOCK, TOKENS
from wmsim.model.retnet import RetNetConfig
from wmsim.model.tokenizer import TokenizerConfig

SMALL = REMConfig(
    tokenizer=TokenizerConfig(channels=8, codes=32, code_size=16, groups=4),
    retnet=RetNetConfig(width=16, layers=2, heads=2, ffn=24, dropout=0.0),
    head_width=16,
)


def model(pop=True, seed=0):
    torch.manual_seed(seed)
    rem = make_world_model(dataclasses.replace(SMALL, pop=pop), 3, dtype=torch.float64)
    torch.nn.init.normal_(rem.tokenizer.codebook.weight)  # spread codes: many distinct tokens
    return rem.eval()


def window(length=5, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (batch, length, 64, 64, 3), generator=g, dtype=torch.uint8)
    actions = torch.randint(0, 3, (batch, length), generator=g)
    is_first = torch.zeros(batch, length, dtype=torch.bool)
    is_first[:, 0] = True
    return frames, actions, is_first


def test_rem_sizes():
    rem = make_world_model(REMConfig(), 18)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert abs(count(rem.tokenizer) / 1e6 - 3.19) < 0.01
    assert abs(count(rem.retnet) / 1e6 - 4.28) < 0.01
    # REM's world model is 4.76M with a 512 x 256 embedding table it does not use for
    # observations (they are embedded with the tokenizer's codebook); ours has no such copy
    assert abs((count(rem) - count(rem.tokenizer)) / 1e6 - 4.63) < 0.01


@pytest.mark.parametrize("pop", [True, False])
@torch.no_grad()
def test_dreaming_predicts_what_the_parallel_training_pass_predicts(pop):
    rem, (frames, actions, is_first), context = model(pop), window(), 3
    state = rem.observe(frames[:, :context], actions[:, : context - 1], is_first[:, :context])
    tokens = rem.tokenizer.tokenize(frames[:, :context])
    for k in range(2):  # two dreamed steps, the second from the first's own tokens
        state, reward, cont, dreamed = rem.step(state, actions[:, context - 1 + k])
        t = tokens.shape[1]
        logits, action_out = rem.predict(
            torch.cat([tokens, dreamed[:, None]], 1), actions[:, : t + 1], is_first[:, : t + 1]
        )
        assert (logits[:, t].argmax(-1) == dreamed).all()
        expected = torch.softmax(rem.reward_head(action_out[:, t - 1]), -1)
        torch.testing.assert_close(reward, expected[:, 2] - expected[:, 0])
        torch.testing.assert_close(
            cont, torch.softmax(rem.end_head(action_out[:, t - 1]), -1)[:, 0]
        )
        tokens = torch.cat([tokens, dreamed[:, None]], 1)
    assert len(tokens.unique()) > 3, "the test needs varied tokens to mean anything"


@pytest.mark.parametrize("pop", [True, False])
@torch.no_grad()
def test_an_episode_start_in_the_context_forgets_what_came_before(pop):
    rem, (frames, actions, is_first) = model(pop), window()
    is_first[:, 2] = True
    noise = torch.rand(2, *rem.noise_shape, generator=torch.Generator().manual_seed(3))
    after_reset = rem.observe(frames[:, :3], actions[:, :2], is_first[:, :3])
    alone = rem.observe(frames[:, 2:3], actions[:, :0], is_first[:, 2:3])
    after_reset = rem.step(after_reset, actions[:, 2], noise)
    alone = rem.step(alone, actions[:, 2], noise)
    for a, b in zip(after_reset[1:], alone[1:], strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(("pop", "calls"), [(True, 2), (False, BLOCK)])
@torch.no_grad()
def test_network_calls_per_dreamed_frame(pop, calls, monkeypatch):
    rem, (frames, actions, is_first) = model(pop), window()
    state = rem.observe(frames[:, :2], actions[:, :1], is_first[:, :2])
    counted = []
    monkeypatch.setattr(rem.retnet, "forward", counting(rem.retnet.forward, counted))
    monkeypatch.setattr(rem.retnet, "step", counting(rem.retnet.step, counted))
    for k in range(3):
        state, *_ = rem.step(state, actions[:, 2 + k])
    assert len(counted) == 3 * calls


def counting(method, calls):
    def wrapper(*args, **kwargs):
        calls.append(1)
        return method(*args, **kwargs)

    return wrapper


def test_same_noise_same_dream_and_the_mode_without_noise():
    rem, (frames, actions, is_first) = model(), window()
    state = rem.observe(frames[:, :2], actions[:, :1], is_first[:, :2])
    noise = torch.rand(2, *rem.noise_shape, dtype=torch.float64)
    assert rem.noise_shape == (TOKENS,)  # one uniform per token
    a, b = rem.step(state, actions[:, 2], noise)[3], rem.step(state, actions[:, 2], noise)[3]
    assert (a == b).all()
    other = rem.step(state, actions[:, 2], torch.rand_like(noise))[3]
    assert (a != other).any()
    assert rem.decode(a).shape == (2, 64, 64, 3)


def test_the_world_model_never_trains_the_tokenizer():
    rem, (frames, actions, is_first) = model(), window()
    tokens = rem.tokenizer.tokenize(frames).detach()
    logits, action_out = rem.predict(tokens, actions, is_first)
    (logits.sum() + action_out.sum()).backward()
    assert all(p.grad is None for p in rem.tokenizer.parameters())
    assert rem.query_embed.weight.grad.abs().sum() > 0


def test_training_loss_and_parameter_groups():
    rem, (frames, actions, is_first) = model(), window(length=6)
    batch = {
        "obs": frames, "action": actions, "is_first": is_first,
        "reward": torch.tensor([[0, 0, 4, 0, -1, 0], [0, 1, 0, 0, 0, 0]], dtype=torch.float64),
        "is_terminal": torch.zeros(2, 6, dtype=torch.bool),
        "life_loss": torch.zeros(2, 6, dtype=torch.bool),
    }  # fmt: skip
    loss, metrics = rem.train().loss(batch, torch.Generator().manual_seed(0))
    loss.backward()
    assert {"obs", "reward", "end", "tokenizer", "codes_used", "token_accuracy"} <= set(metrics)
    torch.testing.assert_close(
        loss.item(),
        float(metrics["obs"] + metrics["reward"] + metrics["end"] + metrics["tokenizer"]),
    )
    groups = rem.parameter_groups(0.05)
    params = [p for g in groups for p in g["params"]]
    assert len(params) == len(set(params)) == len(list(rem.parameters()))
    decayed = set(groups[0]["params"])
    assert rem.retnet.layers[0].retention.q.weight in decayed
    assert rem.action_embed.weight not in decayed and rem.retnet.norm.weight not in decayed
    assert groups[2]["lr_scale"] == 0.5 and rem.tokenizer.codebook.weight in set(
        groups[2]["params"]
    )
    # every group in module order: a resumed optimizer meets its state in the saved order (a
    # set-ordered group differed between processes, and tiny-rem could not resume)
    order = {id(p): i for i, p in enumerate(rem.parameters())}
    for group in groups:
        indices = [order[id(p)] for p in group["params"]]
        assert indices == sorted(indices)
