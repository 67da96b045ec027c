"""A VQ autoencoder that turns a 64x64 frame into 8 x 8 discrete tokens: REM's tokenizer.

References: van den Oord et al., "Neural Discrete Representation Learning"
(VQ-VAE, 2017); IRIS (Micheli et al. 2023) and REM (Cohen et al., ICML 2024)
for the networks and sizes (REM's paper, appendix, and its released configs):

    x in [-1, 1] -> encoder (3 stride-2 stages) -> z (N, 64, d)
    token_i = argmin_c |z_i - e_c|^2           codebook of 512 codes of size 256
    z_q = z + sg(e_token - z)                  straight-through gradients
    decoder(z_q) -> x_hat

    loss = |x - x_hat|^2 + |sg(z) - e|^2 + beta |z - sg(e)|^2,   beta = 1 (REM)

REM adds a perceptual (LPIPS) term computed with pretrained VGG weights that
must be downloaded; wmsim runs offline, so it is left out.

Codebook collapse: from REM's initialisation (codes near zero) the first
codes the encoder meets win every vector, and a short run ends with a handful
in use. wmsim restarts dead codes (Dhariwal et al., Jukebox, 2020): a running
count of each code's uses is kept, and codes whose count falls below a
threshold are moved onto random encoder outputs of the batch. The first step
thereby initialises the codebook from data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class TokenizerConfig:
    """REM's tokenizer by default: 3.18M parameters."""

    channels: int = 32
    """Channels after the first conv; each of the 3 stages doubles them (REM: 32 -> 256)."""
    codes: int = 512
    """Codebook size: the vocabulary of observation tokens."""
    code_size: int = 256
    """Size of a code vector; the world model embeds observation tokens with them."""
    commitment: float = 1.0
    """beta, the weight of |z - sg(e)|^2 (REM 1.0, VQ-VAE 0.25)."""
    groups: int = 8
    """GroupNorm groups."""
    restart_dead_codes: bool = True
    """Move codes that have gone unused onto encoder outputs of the batch (wmsim's addition,
    as in Jukebox; REM has none). Without it a short run uses a handful of codes."""
    usage_decay: float = 0.99
    """Decay of the running count of each code's uses per batch."""
    dead_below: float = 0.1
    """A code whose running count falls below this is dead and restarted."""


STAGES = 3
"""Stride-2 stages: 64 x 64 pixels -> 8 x 8 tokens."""


def _conv(c_in: int, c_out: int, **kw) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, **kw)


class Encoder(nn.Module):
    """(N, 3, 64, 64) in [-1, 1] -> (N, code_size, 8, 8)."""

    def __init__(self, config: TokenizerConfig, **kw):
        super().__init__()
        c, g = config.channels, config.groups
        layers: list[nn.Module] = [_conv(3, c, **kw)]
        for _ in range(STAGES):
            layers += [
                nn.GroupNorm(g, c, **kw), nn.SiLU(),
                nn.ZeroPad2d((0, 1, 0, 1)),  # REM's asymmetric padding before a stride-2 conv
                nn.Conv2d(c, 2 * c, 3, stride=2, **kw),
                _conv(2 * c, 2 * c, **kw),
            ]  # fmt: skip
            c *= 2
        layers += [nn.GroupNorm(g, c, **kw), nn.SiLU(), _conv(c, c, **kw)]
        layers += [nn.Conv2d(c, config.code_size, 1, **kw)]  # pre-quantization
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, 64, 64) -> (N, code_size, 8, 8)."""
        return self.net(x)


class Decoder(nn.Module):
    """(N, code_size, 8, 8) -> (N, 3, 64, 64) in [-1, 1] scale (not clamped)."""

    def __init__(self, config: TokenizerConfig, **kw):
        super().__init__()
        c, g = config.channels * 2**STAGES, config.groups
        layers: list[nn.Module] = [nn.Conv2d(config.code_size, c, 1, **kw), _conv(c, c, **kw)]
        for _ in range(STAGES):
            layers += [
                nn.GroupNorm(g, c, **kw), nn.SiLU(),
                nn.Upsample(scale_factor=2, mode="nearest-exact"),
                _conv(c, c // 2, **kw),
                _conv(c // 2, c // 2, **kw),
            ]  # fmt: skip
            c //= 2
        layers += [nn.GroupNorm(g, c, **kw), nn.SiLU(), _conv(c, 3, **kw)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """(N, code_size, 8, 8) -> (N, 3, 64, 64)."""
        return self.net(z)


class Tokenizer(nn.Module):
    """Frames <-> tokens; see the module docstring. Frames are uint8 (..., 64, 64, 3)."""

    def __init__(self, config: TokenizerConfig, *, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.config = config
        self.encoder, self.decoder = Encoder(config, **kw), Decoder(config, **kw)
        self.codebook = nn.Embedding(config.codes, config.code_size, **kw)
        nn.init.uniform_(self.codebook.weight, -1.0 / config.codes, 1.0 / config.codes)
        # training statistics, like BatchNorm's: saved with the model, so a resumed run goes on
        self.register_buffer("usage", torch.zeros(config.codes, device=device))

    def _pixels(self, frames: Tensor) -> Tensor:
        """uint8 (..., H, W, 3) -> (N, 3, H, W) in [-1, 1], in the model's dtype."""
        x = frames.reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2)
        return x.to(self.codebook.weight.dtype) / 127.5 - 1.0

    @staticmethod
    def _vectors(z: Tensor) -> Tensor:
        """Encoder output (N, d, h, w) -> one vector per token (N, h * w, d)."""
        return z.flatten(2).transpose(1, 2)

    def _nearest(self, z: Tensor) -> Tensor:
        """Vectors (..., d) -> the ids of their nearest codes (...)."""
        codes = self.codebook.weight
        distance = z.square().sum(-1, keepdim=True) - 2 * z @ codes.T + codes.square().sum(-1)
        return distance.argmin(-1)

    def tokenize(self, frames: Tensor) -> Tensor:
        """uint8 frames (..., 64, 64, 3) -> token ids (..., 64)."""
        ids = self._nearest(self._vectors(self.encoder(self._pixels(frames))))
        return ids.reshape(*frames.shape[:-3], -1)

    def decode(self, tokens: Tensor) -> Tensor:
        """Token ids (..., 64) -> frames (..., 64, 64, 3) in [0, 1]."""
        side = round(tokens.shape[-1] ** 0.5)
        e = self.codebook(tokens.reshape(-1, side, side)).permute(0, 3, 1, 2)  # (N, d, h, w)
        x = ((self.decoder(e) + 1.0) / 2.0).clamp(0.0, 1.0)
        return x.permute(0, 2, 3, 1).reshape(*tokens.shape[:-1], *x.shape[2:], 3)

    def loss(
        self, frames: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The VQ-VAE loss of uint8 frames (..., 64, 64, 3); returns (loss, metrics).

        In training mode, first restarts dead codes (see the module docstring),
        drawing their new places with ``generator``.
        """
        x = self._pixels(frames)
        z = self.encoder(x)  # (N, d, h, w)
        ids = self._nearest(self._vectors(z))  # (N, h * w)
        if self.training and self.config.restart_dead_codes:
            vectors = self._vectors(z.detach()).flatten(0, 1)
            if self._restart_dead_codes(ids.flatten(), vectors, generator):
                ids = self._nearest(self._vectors(z))  # only when codes moved
        e = self.codebook(ids).transpose(1, 2).reshape(z.shape)
        codebook_loss = F.mse_loss(e, z.detach())
        commitment_loss = F.mse_loss(z, e.detach())
        recon = self.decoder(z + (e - z).detach())  # straight-through
        recon_loss = F.mse_loss(recon, x)
        loss = recon_loss + codebook_loss + self.config.commitment * commitment_loss
        used = torch.zeros(self.config.codes, device=ids.device).index_fill_(0, ids.flatten(), 1)
        metrics = {
            "tokenizer_recon": recon_loss, "tokenizer_codebook": codebook_loss,
            "tokenizer_commitment": commitment_loss, "codes_used": used.sum(),
        }  # fmt: skip
        return loss, {k: v.detach() for k, v in metrics.items()}

    @torch.no_grad()
    def _restart_dead_codes(
        self, ids: Tensor, vectors: Tensor, generator: torch.Generator | None
    ) -> bool:
        """Count code uses in ``ids`` (M,); move dead codes onto some of ``vectors`` (M, d).

        ``ids`` are the vectors' nearest codes. Returns whether any code moved.
        """
        c = self.config
        counts = torch.bincount(ids, minlength=c.codes)
        self.usage.mul_(c.usage_decay).add_(counts.to(self.usage.dtype), alpha=1 - c.usage_decay)
        dead = (self.usage < c.dead_below).nonzero().squeeze(1)
        if len(dead) == 0:
            return False
        pick = torch.randint(len(vectors), (len(dead),), generator=generator, device=vectors.device)
        self.codebook.weight[dead] = vectors[pick].to(self.codebook.weight.dtype)
        self.usage[dead] = 1.0  # a fresh code has a grace period: ~230 steps at decay 0.99
        return True
