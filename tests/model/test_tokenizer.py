"""The VQ tokenizer: REM's sizes, nearest-code tokens, straight-through gradients, and it learns
real Breakout frames."""

import numpy as np
import torch

from wmsim.model.tokenizer import Tokenizer, TokenizerConfig
from wmsim.replay import Replay

SMALL = TokenizerConfig(channels=8, codes=32, code_size=16, groups=4)


def test_rem_sizes():
    tokenizer = Tokenizer(TokenizerConfig())
    # REM's tokenizer is about 3.19M parameters (REM: Cohen et al., ICML 2024)
    assert abs(sum(p.numel() for p in tokenizer.parameters()) / 1e6 - 3.19) < 0.01
    frames = torch.zeros(1, 2, 64, 64, 3, dtype=torch.uint8)
    assert tokenizer.tokenize(frames).shape == (1, 2, 64)


def test_tokens_are_the_nearest_codes_and_decode_to_frames():
    torch.manual_seed(0)
    tokenizer = Tokenizer(SMALL)
    torch.nn.init.normal_(tokenizer.codebook.weight)
    frames = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8)
    ids = tokenizer.tokenize(frames)
    z = tokenizer._vectors(tokenizer.encoder(tokenizer._pixels(frames)))  # (3, 64, d)
    nearest = torch.cdist(z, tokenizer.codebook.weight.expand(3, -1, -1)).argmin(-1)
    assert (ids == nearest).all()
    decoded = tokenizer.decode(ids)
    assert decoded.shape == (3, 64, 64, 3)
    assert decoded.min() >= 0 and decoded.max() <= 1


def test_gradients_pass_the_quantizer_straight_through():
    torch.manual_seed(0)
    tokenizer = Tokenizer(SMALL)
    loss, metrics = tokenizer.loss(torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8))
    loss.backward()
    for name, module in [("encoder", tokenizer.encoder), ("decoder", tokenizer.decoder)]:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()), name
    assert tokenizer.codebook.weight.grad.abs().sum() > 0
    assert 1 <= metrics["codes_used"] <= SMALL.codes


def test_it_learns_to_reconstruct_real_breakout_frames(breakout_replay):
    replay = Replay(breakout_replay)
    rows = np.arange(0, replay.num_steps, 47)
    frames = torch.from_numpy(replay.gather(rows, 1, fields=("obs",))["obs"][:, 0])
    torch.manual_seed(0)
    tokenizer = Tokenizer(TokenizerConfig(channels=8, code_size=32, groups=4))

    @torch.no_grad()
    def error():
        return float(
            (tokenizer.decode(tokenizer.tokenize(frames)) - frames / 255.0).square().mean()
        )

    before = error()
    optimizer = torch.optim.Adam(tokenizer.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        loss, metrics = tokenizer.loss(frames, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # a fast check that it learns; docs/world-models.md measures how well, on 20,000 frames
    assert error() < 0.2 * before, (error(), before)
    assert metrics["codes_used"] > 8, "dead codes are restarted"
