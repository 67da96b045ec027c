"""The latent-per-frame world model: STORM's design around any sequence backbone.

References: STORM (Zhang et al. 2023) and DRAMA (Wang et al. 2025), both built
on DreamerV3's latents and losses. Per frame:

    z_t ~ q(z | x_t)                     encoder: 32 x 32 categorical, 1% unimix
    u_t = stem([z_t, onehot(a_t)])       one token per frame
    h_t = backbone(u_<=t)                any SequenceBackbone
    p(z_t+1 | h_t), r_t+1, c_t+1         heads on h_t: prior, reward, continue
    x_t ~ decoder(z_t)

Because the posterior sees the frame alone, a whole window trains in one
parallel pass of the backbone. The loss (STORM): squared error summed over
pixels, two-hot reward cross-entropy, continue BCE, and the KL between the
prior at t and the posterior at t+1 split into a dynamics term (trains the
prior) and a representation term (regularizes the posterior), each clamped
below by free bits.

World-model level contract, used by evaluation, dreams and export:
``observe(frames, actions, is_first) -> state``, then
``step(state, action, noise) -> (state, reward, continue, latent)`` and
``decode(latent) -> frame``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wmsim.model.backbones import BackboneConfig, State, TransformerConfig, make_backbone
from wmsim.model.contract import one_group
from wmsim.model.distributions import (
    TwoHot,
    at_least_fp32,
    categorical_kl,
    draw_one_hot,
    grouped,
    sample_one_hot,
    unimix,
    unimix_probs,
)
from wmsim.model.networks import ConvDecoder, ConvEncoder, MLPHead, masked_mean
from wmsim.model.pixels import frames_to_input, reconstruction_loss


@dataclass(frozen=True)
class LatentWorldModelConfig:
    """STORM's world model by default."""

    backbone: BackboneConfig = field(default_factory=TransformerConfig)
    """The sequence model over one token per frame."""
    stem: str = "storm"
    """How [z_t, onehot(a_t)] becomes a token: storm (2 x Linear + LayerNorm) or drama
    (Linear, RMSNorm, SiLU)."""
    depth: int = 32
    """Channels of the first conv layer; later layers have 2, 4 and 8 times as many."""
    decoder_depth: int = 0
    """The decoder's ``depth`` (0: the encoder's). Decoding is most of a pixel dream's cost, and
    its multiply-adds grow with the square of this; see docs/speed.md."""
    norm: bool = True
    """BatchNorm in the encoder and decoder (STORM, DRAMA)."""
    decoder_sigmoid: bool = False
    """Squash decoded frames into [0, 1] (DRAMA) rather than leave them unbounded (STORM)."""
    activation: str = "relu"
    """relu, elu or silu, in convs and heads."""
    stoch: int = 32
    """Categorical variables per latent."""
    classes: int = 32
    """Classes per categorical variable."""
    unimix: float = 0.01
    """Uniform mixture on the latent distributions."""
    head_width: int = 512
    """Hidden width of the reward and continue heads."""
    head_layers: int = 2
    """Hidden layers of the reward and continue heads."""
    reward_bins: int = 255
    """Two-hot bins for rewards, on [-20, 20] in symlog space."""
    recon_scale: float = 1.0
    """Weight of the reconstruction loss (summed over pixels)."""
    motion_weight: float = 0.0
    """Extra weight of the reconstruction error on pixels that move between real frames, so
    that a small ball counts (0: the papers' plain squared error; see wmsim.model.pixels)."""
    motion_threshold: float = 0.05
    """Change of a pixel (values in [0, 1], summed over channels) that makes it move."""
    prior_recon_scale: float = 0.0
    """Weight of a reconstruction loss on the prior's one-step prediction: a straight-through
    sample of the prior, decoded and compared with the next real frame (moving pixels weighted
    as above). The KL trains the dynamics in latent space, where the few latents that place a
    one-pixel ball weigh little; this trains them in pixels. 0: the papers' (KL only)."""
    reward_scale: float = 1.0
    """Weight of the reward loss."""
    continue_scale: float = 1.0
    """Weight of the continue loss."""
    dyn_scale: float = 0.5
    """Weight of KL[sg(posterior) || prior] (STORM 0.5, DRAMA 1.0)."""
    rep_scale: float = 0.1
    """Weight of KL[posterior || sg(prior)]."""
    free_bits: float = 1.0
    """Each KL term is clamped below at this many nats."""
    free_bits_per_sample: bool = False
    """Clamp each sample's KL (DreamerV3) instead of the batch mean (STORM, DRAMA)."""
    life_loss_ends: bool = True
    """A lost life counts as an end for the continue head (STORM, DRAMA), not only game over."""


def storm_stem(inputs: int, width: int, **kw) -> nn.Module:
    """STORM's token from [z, a]: Linear, LayerNorm, ReLU, Linear, LayerNorm."""
    return nn.Sequential(
        nn.Linear(inputs, width, bias=False, **kw),
        nn.LayerNorm(width, **kw),
        nn.ReLU(),
        nn.Linear(width, width, bias=False, **kw),
        nn.LayerNorm(width, **kw),
    )


def drama_stem(inputs: int, width: int, **kw) -> nn.Module:
    """DRAMA's token from [z, a]: Linear, RMSNorm, SiLU."""
    return nn.Sequential(
        nn.Linear(inputs, width, bias=False, **kw), nn.RMSNorm(width, eps=1e-5, **kw), nn.SiLU()
    )


STEMS = {"storm": storm_stem, "drama": drama_stem}
"""Stem name -> builder (inputs, width, device=, dtype=)."""


class LatentWorldModel(nn.Module):
    """Encoder, stem, backbone, heads and decoder; see the module docstring.

    Args:
        config: sizes and loss weights.
        num_actions: size of the discrete action space.
    """

    def __init__(
        self, config: LatentWorldModelConfig, num_actions: int, *, device=None, dtype=None
    ):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.config, self.num_actions = config, num_actions
        latent = config.stoch * config.classes
        conv = {"norm": config.norm, "activation": config.activation}
        self.encoder = ConvEncoder(config.depth, **conv, **kw)
        self.posterior = nn.Linear(self.encoder.output_dim, latent, **kw)
        width = config.backbone.width
        self.stem = STEMS[config.stem](latent + num_actions, width, **kw)
        self.backbone = make_backbone(config.backbone, width, **kw)
        h = self.backbone.output_dim
        self.prior = nn.Linear(h, latent, **kw)
        head = {"width": config.head_width, "layers": config.head_layers, "activation": "relu"}
        self.reward = MLPHead(h, config.reward_bins, **head, **kw)
        self.cont = MLPHead(h, 1, **head, **kw)
        decoder_depth = config.decoder_depth or config.depth
        self.decoder = ConvDecoder(
            latent, decoder_depth, **conv, sigmoid=config.decoder_sigmoid, **kw
        )
        self.two_hot = TwoHot(config.reward_bins)

    latent_range = (0.0, 1.0)
    """Bounds of :meth:`latent`'s values (one-hot categoricals)."""
    clips_rewards = False

    @property
    def backbone_name(self) -> str:
        """The backbone's name: its config class's, without ``Config``."""
        return type(self.config.backbone).__name__.removesuffix("Config")

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """One group: every parameter learns at the same rate and decay."""
        return one_group(self, weight_decay)

    def export_form(self) -> LatentWorldModel:
        """A copy whose decoder gathers rows for the one-hot latents it gets.

        The same frames, from a cheaper first layer (:meth:`ConvDecoder.for_one_hot`).
        """
        form = copy.deepcopy(self)
        form.decoder = self.decoder.for_one_hot(self.config.stoch, self.config.classes)
        return form

    def reconstruct(self, frames: Tensor) -> None:
        """None: no tokenizer stands between frames and latents."""
        return None

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """Shape of the uniform noise :meth:`step` takes per row: one per categorical latent."""
        return (self.config.stoch,)

    def _grouped(self, logits: Tensor) -> Tensor:
        return grouped(logits, self.config.stoch, self.config.classes)

    def _latent_dist(self, logits: Tensor) -> Tensor:
        """Logits (..., S * K) -> log-probabilities (..., S, K), with unimix."""
        return unimix(self._grouped(logits), self.config.unimix)

    def encode(self, frames: Tensor) -> Tensor:
        """uint8 frames (B, T, H, W, 3) -> posterior log-probabilities (B, T, S, K)."""
        embedding = self.encoder(frames_to_input(frames))
        return self._latent_dist(self.posterior(embedding)).reshape(
            *frames.shape[:2], self.config.stoch, self.config.classes
        )

    def tokens(self, z: Tensor, action: Tensor) -> Tensor:
        """Latents (..., S * K) and actions (...) -> backbone inputs (..., width)."""
        one_hot = F.one_hot(action.long(), self.num_actions).to(z.dtype)
        return self.stem(torch.cat([z, one_hot], -1))

    def decode(self, latent: Tensor) -> Tensor:
        """Latents (..., S * K) -> frames (..., H, W, 3) in [0, 1]."""
        frames = self.decoder(latent.reshape(-1, latent.shape[-1])).clamp(0.0, 1.0)
        return frames.permute(0, 2, 3, 1).reshape(*latent.shape[:-1], *frames.shape[2:], 3)

    def loss(self, batch: dict[str, Tensor], generator: torch.Generator | None = None):
        """The training loss of windows batch[k] (B, T, ...); returns (loss, metrics).

        Targets align with the heads: h_t predicts the latent, reward and
        continuation of step t+1, except where an episode starts at t+1.
        """
        c, obs = self.config, batch["obs"]
        batch_size, length = obs.shape[:2]
        post = self.encode(obs)  # (B, T, S, K)
        # one uniform per class (Gumbel-max): seeded training draws what it always drew
        noise = torch.rand(post.shape, generator=generator, device=post.device, dtype=post.dtype)
        z = sample_one_hot(post, noise).flatten(-2)  # (B, T, S * K)

        recon = self.decoder(z.reshape(batch_size * length, -1))
        recon_loss = reconstruction_loss(
            recon, obs, batch["is_first"],
            motion_weight=c.motion_weight, threshold=c.motion_threshold,
        )  # fmt: skip

        state = self.backbone.initial_state(batch_size, obs.device, z.dtype)
        h, _ = self.backbone(self.tokens(z, batch["action"]), batch["is_first"], state)
        prior = self._latent_dist(self.prior(h[:, :-1]))  # predicts steps 1 .. T-1
        valid = ~batch["is_first"][:, 1:]  # a new episode is not predicted from the old one
        prior_recon_loss = torch.zeros((), device=obs.device)
        if c.prior_recon_scale:
            drawn = torch.rand(prior.shape, generator=generator, device=prior.device)
            predicted = sample_one_hot(prior, drawn.to(prior.dtype)).flatten(-2).to(z.dtype)
            prior_recon_loss = reconstruction_loss(
                self.decoder(predicted.reshape(batch_size * (length - 1), -1)),
                obs[:, 1:], batch["is_first"][:, 1:],
                motion_weight=c.motion_weight, threshold=c.motion_threshold,
            )  # fmt: skip
        dyn = categorical_kl(post[:, 1:].detach(), prior)
        rep = categorical_kl(post[:, 1:], prior.detach())
        dyn_loss, rep_loss = self._free_bits(dyn, valid), self._free_bits(rep, valid)

        reward_logits = at_least_fp32(self.reward(h[:, :-1]))
        reward_loss = masked_mean(self.two_hot.loss(reward_logits, batch["reward"][:, 1:]), valid)
        ends = batch["is_terminal"][:, 1:]
        if c.life_loss_ends:
            ends = ends | batch["life_loss"][:, 1:]
        cont_logits = at_least_fp32(self.cont(h[:, :-1]).squeeze(-1))
        cont_loss = masked_mean(
            F.binary_cross_entropy_with_logits(
                cont_logits, (~ends).to(cont_logits.dtype), reduction="none"
            ),
            valid,
        )
        loss = (
            c.recon_scale * recon_loss
            + c.reward_scale * reward_loss
            + c.continue_scale * cont_loss
            + c.dyn_scale * dyn_loss
            + c.rep_scale * rep_loss
            + c.prior_recon_scale * prior_recon_loss
        )
        metrics = {
            "loss": loss, "recon": recon_loss, "reward": reward_loss, "continue": cont_loss,
            "dyn": dyn_loss, "rep": rep_loss, "kl": masked_mean(dyn, valid),
            **({"prior_recon": prior_recon_loss} if c.prior_recon_scale else {}),
        }  # fmt: skip
        return loss, {k: v.detach() for k, v in metrics.items()}

    def _free_bits(self, kl: Tensor, valid: Tensor) -> Tensor:
        free = self.config.free_bits
        if self.config.free_bits_per_sample:
            return masked_mean(kl.clamp(min=free), valid)
        return masked_mean(kl, valid).clamp(min=free)

    def latent(self, state: State) -> Tensor:
        """The latent (B, S * K) of the frame ``state`` stands at, as :meth:`decode` takes it."""
        return state["z"]

    def initial_state(self, batch_size: int, device=None) -> State:
        """The world-model state of rows that have seen nothing yet (see :meth:`observe`)."""
        latent = self.config.stoch * self.config.classes
        state = self.backbone.initial_state(batch_size, device)
        state["z"] = torch.zeros(batch_size, latent, device=device)
        state["first"] = torch.ones(batch_size, dtype=torch.bool, device=device)
        return state

    def observe(
        self, frames: Tensor, actions: Tensor, is_first: Tensor, noise: Tensor | None = None
    ) -> State:
        """Prime a dream with real context: frames (B, C, H, W, 3) uint8, actions (B, C - 1).

        ``actions[:, t]`` was taken between frames t and t+1; the action after
        the last frame is the first one given to :meth:`step`. ``noise``
        (B, C, S) samples the posteriors (or (B, C, S, K): see ``sample_one_hot``);
        None takes their modes.

        Returns:
            The backbone state after the first C - 1 tokens, plus ``z`` (B, S * K),
            the last frame's latent, and ``first`` (B,), whether it starts an episode.
        """
        z = sample_one_hot(self.encode(frames), noise).flatten(-2)
        state = self.backbone.initial_state(frames.shape[0], frames.device, z.dtype)
        if frames.shape[1] > 1:
            tokens = self.tokens(z[:, :-1], actions)
            _, state = self.backbone(tokens, is_first[:, :-1], state)
        return {**state, "z": z[:, -1], "first": is_first[:, -1]}

    @property
    def feature_size(self) -> int:
        """Size of the features :meth:`imagine` returns: [z, h]."""
        return self.config.stoch * self.config.classes + self.backbone.output_dim

    def imagine(
        self, state: State, action: Tensor, noise: Tensor | None = None
    ) -> tuple[State, Tensor, Tensor, Tensor]:
        """One dreamed step for an agent: action (B,) -> (next state, features, reward, continue).

        The features (B, S * K + D) are [z_t+1, h_t]: the next latent sampled from
        the prior, beside the backbone output h_t that predicted it, the input
        STORM's and DRAMA's actor reads in imagination. ``reward`` and
        ``continue`` (B,) are those of arriving at z_t+1.
        """
        backbone_state = {k: v for k, v in state.items() if k not in ("z", "first")}
        h, backbone_state = self.backbone.step(
            self.tokens(state["z"], action), state["first"], backbone_state
        )
        # probabilities, not their logarithms: drawing needs no Log in the step graph
        prior = unimix_probs(self._grouped(self.prior(h)), self.config.unimix)
        z = draw_one_hot(prior, noise).flatten(-2)
        reward = self.two_hot.mean(self.reward(h))
        cont = torch.sigmoid(self.cont(h).squeeze(-1))
        first = torch.zeros_like(state["first"])
        next_state = {**backbone_state, "z": z, "first": first}
        return next_state, torch.cat([z, h], -1), reward, cont

    def step(
        self, state: State, action: Tensor, noise: Tensor | None = None
    ) -> tuple[State, Tensor, Tensor, Tensor]:
        """One dreamed step: action (B,) -> (next state, reward (B,), continue (B,), latent).

        ``noise`` (B, S) samples the next latent from the prior; None takes its mode.
        The latent (B, S * K) is what :meth:`decode` turns into the next frame.
        """
        state, _, reward, cont = self.imagine(state, action, noise)
        return state, reward, cont, state["z"]
