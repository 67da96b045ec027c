"""DreamerV2's world model: the RSSM with discrete latents and KL balancing.

Reference: Hafner et al., "Mastering Atari with Discrete World Models" (ICLR
2021), its Atari configuration. Per step, with resets at episode starts:

    h_t = GRU(ELU(W [z_t-1; a_t-1]), h_t-1)      LayerNorm GRU, update bias -1
    p(z_t | h_t)        prior: ELU MLP on h_t
    q(z_t | h_t, e_t)   posterior: ELU MLP on [h_t; embed(x_t)]
    heads on [h_t; z_t]: frame x_t, reward r_t, continue c_t

Unlike the latent-per-frame models, the posterior depends on h_t, so training
runs the recurrence step by step. The KL is balanced: the prior is pulled
towards the posterior four times as hard as the posterior towards the prior
(alpha 0.8), which DreamerV3 later split into its dynamics and
representation terms. Rewards use the shared symlog two-hot head instead of
DreamerV2's unit Gaussian on tanh-clipped rewards, so all models predict raw
Atari rewards the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wmsim.model.backbones.gru import LayerNormGRUCell
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
from wmsim.model.networks import ACTIVATIONS, ConvDecoder, ConvEncoder, MLPHead
from wmsim.model.pixels import frames_to_input, reconstruction_loss

State = dict[str, Tensor]


@dataclass(frozen=True)
class RSSMConfig:
    """DreamerV2's Atari world model by default."""

    deter: int = 600
    """Size of the deterministic state h."""
    hidden: int = 600
    """Width of the layers around the GRU."""
    stoch: int = 32
    """Categorical variables per latent."""
    classes: int = 32
    """Classes per categorical variable."""
    unimix: float = 0.0
    """Uniform mixture on the latent distributions (DreamerV2: none)."""
    depth: int = 48
    """Channels of the first conv layer."""
    norm: bool = False
    """BatchNorm in the encoder and decoder (DreamerV2: none)."""
    activation: str = "elu"
    """Activation of convs, heads and the layers around the GRU."""
    head_width: int = 400
    """Hidden width of the reward and continue heads."""
    head_layers: int = 4
    """Hidden layers of the reward and continue heads."""
    reward_bins: int = 255
    """Two-hot bins for rewards."""
    recon_scale: float = 0.5
    """Weight of the summed squared pixel error (a unit Gaussian's log-likelihood)."""
    motion_weight: float = 0.0
    """Extra weight of the reconstruction error on pixels that move between real frames
    (0: DreamerV2's plain squared error; see wmsim.model.pixels)."""
    motion_threshold: float = 0.05
    """Change of a pixel (values in [0, 1], summed over channels) that makes it move."""
    reward_scale: float = 1.0
    """Weight of the reward loss."""
    continue_scale: float = 5.0
    """Weight of the continue loss (DreamerV2's discount scale)."""
    kl_scale: float = 0.1
    """Weight of the balanced KL."""
    kl_balance: float = 0.8
    """Share of the KL that trains the prior; the rest regularizes the posterior."""
    free_nats: float = 0.0
    """Each KL term's batch mean is clamped below at this (DreamerV2 Atari: 0)."""
    life_loss_ends: bool = False
    """A lost life counts as an end for the continue head (DreamerV2: no)."""


class RSSMWorldModel(nn.Module):
    """DreamerV2's recurrent state-space model; see the module docstring."""

    def __init__(self, config: RSSMConfig, num_actions: int, *, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.config, self.num_actions = config, num_actions
        c, act = config, ACTIVATIONS[config.activation]
        latent = c.stoch * c.classes
        conv = {"norm": c.norm, "activation": c.activation}
        self.encoder = ConvEncoder(c.depth, **conv, **kw)
        self.img_in = nn.Sequential(nn.Linear(latent + num_actions, c.hidden, **kw), act())
        self.cell = LayerNormGRUCell(c.hidden, c.deter, **kw)
        self.img_out = nn.Sequential(
            nn.Linear(c.deter, c.hidden, **kw), act(), nn.Linear(c.hidden, latent, **kw)
        )
        self.obs_out = nn.Sequential(
            nn.Linear(c.deter + self.encoder.output_dim, c.hidden, **kw),
            act(),
            nn.Linear(c.hidden, latent, **kw),
        )
        features = c.deter + latent
        head = {"width": c.head_width, "layers": c.head_layers, "activation": c.activation}
        self.reward = MLPHead(features, c.reward_bins, **head, **kw)
        self.cont = MLPHead(features, 1, **head, **kw)
        self.decoder = ConvDecoder(features, c.depth, **conv, **kw)
        self.two_hot = TwoHot(c.reward_bins)

    latent_range = (-float("inf"), float("inf"))
    """Bounds of :meth:`latent`'s values (its deterministic part is unbounded)."""
    clips_rewards = False
    backbone_name = None  # the RSSM is its own sequence model

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """One group, as DreamerV2's world-model optimizer."""
        return one_group(self, weight_decay)

    def export_form(self) -> RSSMWorldModel:
        """Itself: its graphs compute as it does."""
        return self

    def reconstruct(self, frames: Tensor) -> None:
        """None: no tokenizer stands between frames and latents."""
        return None

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """Shape of the uniform noise :meth:`step` takes per row: one per categorical latent."""
        return (self.config.stoch,)

    def _grouped(self, logits: Tensor) -> Tensor:
        return grouped(logits, self.config.stoch, self.config.classes)

    def _dist(self, logits: Tensor) -> Tensor:
        return unimix(self._grouped(logits), self.config.unimix)

    def initial_state(self, batch_size: int, device=None, dtype=torch.float32) -> State:
        """h and z (flattened) at zero, as DreamerV2 starts every episode."""
        c = self.config
        return {
            "h": torch.zeros(batch_size, c.deter, device=device, dtype=dtype),
            "z": torch.zeros(batch_size, c.stoch * c.classes, device=device, dtype=dtype),
        }

    def _recur(self, state: State, action: Tensor, is_first: Tensor) -> Tensor:
        """(h, z) of t-1, a_t-1 (B,) -> h_t (B, deter); rows where ``is_first`` start from zeros."""
        keep = (~is_first).to(state["h"].dtype).unsqueeze(-1)
        one_hot = F.one_hot(action.long(), self.num_actions).to(state["h"].dtype) * keep
        x = self.img_in(torch.cat([state["z"] * keep, one_hot], -1))
        return self.cell(x, state["h"] * keep)

    def img_step(self, state: State, action: Tensor, is_first: Tensor) -> tuple[Tensor, Tensor]:
        """The prior step: (h, z) of t-1, a_t-1 (B,) -> h_t (B, deter), prior (B, S, K).

        Rows where ``is_first`` (B,) is set start from zeros: state and action alike.
        """
        h = self._recur(state, action, is_first)
        return h, self._dist(self.img_out(h))

    def _obs_step(
        self, state: State, action: Tensor, embed: Tensor, is_first: Tensor, noise: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The posterior step -> h_t (B, D), prior, posterior (B, S, K) and z_t (B, S * K)."""
        h, prior = self.img_step(state, action, is_first)
        post = self._dist(self.obs_out(torch.cat([h, embed], -1)))
        return h, prior, post, sample_one_hot(post, noise).flatten(-2)

    def observe_step(
        self,
        state: State,
        action: Tensor,
        frame: Tensor,
        is_first: Tensor,
        noise: Tensor | None = None,
    ) -> State:
        """Filter one real frame into the state, as an agent acting in the real game does.

        Shapes: B rows; D = deter; S * K = stoch * classes.

        Args:
            state: h (B, D) and z (B, S * K) of the previous frame (:meth:`initial_state`
                before the first).
            action: (B,) the action taken at the previous frame.
            frame: (B, H, W, 3) uint8, the new frame.
            is_first: (B,) the frame starts an episode: state and action are forgotten.
            noise: (B, S) samples the posterior (or (B, S, K): see ``sample_one_hot``);
                None takes its mode.

        Returns:
            The posterior state h_t (B, D), z_t (B, S * K) of the frame: what
            :meth:`observe` holds after a context ending at it, given the same noise.
        """
        embed = self.encoder(frames_to_input(frame.unsqueeze(1))).reshape(frame.shape[0], -1)
        h, _, _, z = self._obs_step(state, action, embed, is_first, noise)
        return {"h": h, "z": z}

    def observe_sequence(
        self,
        embeds: Tensor,
        actions: Tensor,
        is_first: Tensor,
        state: State,
        noise: Tensor | None = None,
    ) -> tuple[dict[str, Tensor], State]:
        """Posterior rollout over embeddings (B, T, E).

        ``actions[:, t]`` is the action taken at step t (it leads to t+1), so
        step t consumes ``actions[:, t - 1]``, and the carried state's action
        for t = 0 comes from ``state["action"]`` if present (else 0).

        Returns:
            {h, z, prior, post} stacked over time, and the final state.
        """
        steps: dict[str, list[Tensor]] = {"h": [], "z": [], "prior": [], "post": []}
        previous = state.get("action", torch.zeros_like(actions[:, 0]))
        for t in range(embeds.shape[1]):
            draw = None if noise is None else noise[:, t]
            h, prior, post, z = self._obs_step(state, previous, embeds[:, t], is_first[:, t], draw)
            for name, value in zip(steps, (h, z, prior, post), strict=True):
                steps[name].append(value)
            state, previous = {"h": h, "z": z}, actions[:, t]
        return {k: torch.stack(v, 1) for k, v in steps.items()}, {**state, "action": previous}

    def decode(self, latent: Tensor) -> Tensor:
        """Features [h, z] (..., deter + S * K) -> frames (..., H, W, 3) in [0, 1]."""
        frames = self.decoder(latent.reshape(-1, latent.shape[-1])).clamp(0.0, 1.0)
        return frames.permute(0, 2, 3, 1).reshape(*latent.shape[:-1], *frames.shape[2:], 3)

    def loss(self, batch: dict[str, Tensor], generator: torch.Generator | None = None):
        """DreamerV2's loss over windows batch[k] (B, T, ...); returns (loss, metrics)."""
        c, obs = self.config, batch["obs"]
        batch_size, length = obs.shape[:2]
        embeds = self.encoder(frames_to_input(obs)).reshape(batch_size, length, -1)
        # one uniform per class (Gumbel-max): seeded training draws what it always drew
        shape = (batch_size, length, c.stoch, c.classes)
        noise = torch.rand(shape, generator=generator, device=obs.device)
        state = self.initial_state(batch_size, obs.device)
        out, _ = self.observe_sequence(embeds, batch["action"], batch["is_first"], state, noise)
        features = torch.cat([out["h"], out["z"]], -1)

        recon = self.decoder(features.reshape(batch_size * length, -1))
        recon_loss = reconstruction_loss(
            recon, obs, batch["is_first"],
            motion_weight=c.motion_weight, threshold=c.motion_threshold,
        )  # fmt: skip
        reward_loss = self.two_hot.loss(
            at_least_fp32(self.reward(features)), batch["reward"]
        ).mean()
        ends = batch["is_terminal"] | (batch["life_loss"] if c.life_loss_ends else False)
        cont_logits = at_least_fp32(self.cont(features).squeeze(-1))
        cont_loss = F.binary_cross_entropy_with_logits(cont_logits, (~ends).to(cont_logits.dtype))
        prior_term = (
            categorical_kl(out["post"].detach(), out["prior"]).mean().clamp(min=c.free_nats)
        )
        post_term = categorical_kl(out["post"], out["prior"].detach()).mean().clamp(min=c.free_nats)
        kl_loss = c.kl_balance * prior_term + (1.0 - c.kl_balance) * post_term
        loss = (
            c.recon_scale * recon_loss
            + c.reward_scale * reward_loss
            + c.continue_scale * cont_loss
            + c.kl_scale * kl_loss
        )
        kl = categorical_kl(out["post"], out["prior"]).mean()
        metrics = {
            "loss": loss, "recon": recon_loss, "reward": reward_loss, "continue": cont_loss,
            "kl": kl,
        }  # fmt: skip
        return loss, {k: v.detach() for k, v in metrics.items()}

    def posteriors(
        self, frames: Tensor, actions: Tensor, is_first: Tensor, noise: Tensor | None = None
    ) -> State:
        """The posterior state of every frame of real windows, DreamerV2's imagination starts.

        Shapes: B windows of T frames; D = deter; S * K = stoch * classes.

        Args:
            frames: (B, T, H, W, 3) uint8.
            actions: (B, T - 1), ``actions[:, t]`` taken between frames t and t+1.
            is_first: (B, T) episode starts.
            noise: (B, T, S) samples the posteriors (or (B, T, S, K): see
                ``sample_one_hot``); None takes their modes.

        Returns:
            h (B, T, D) and z (B, T, S * K): row t is the state :meth:`observe` returns
            for the window's first t + 1 frames.
        """
        batch_size, length = frames.shape[:2]
        embeds = self.encoder(frames_to_input(frames)).reshape(batch_size, length, -1)
        padded = torch.cat([actions, actions.new_zeros(batch_size, 1)], 1)  # the last is unused
        state = self.initial_state(batch_size, frames.device, embeds.dtype)
        out, _ = self.observe_sequence(embeds, padded, is_first, state, noise)
        return {"h": out["h"], "z": out["z"]}

    def observe(
        self, frames: Tensor, actions: Tensor, is_first: Tensor, noise: Tensor | None = None
    ) -> State:
        """Prime a dream with real context: frames (B, C, H, W, 3) uint8, actions (B, C - 1).

        Returns the posterior state (h, z) of the last frame; the next action goes to :meth:`step`.
        """
        return {k: v[:, -1] for k, v in self.posteriors(frames, actions, is_first, noise).items()}

    @property
    def feature_size(self) -> int:
        """Size of :meth:`latent`'s features [h, z], what the actor and critic read."""
        return self.config.deter + self.config.stoch * self.config.classes

    def latent(self, state: State) -> Tensor:
        """Features [h, z] (B, D + S * K) of the frame ``state`` stands at, for :meth:`decode`."""
        return torch.cat([state["h"], state["z"]], -1)

    def imagine(
        self, state: State, action: Tensor, noise: Tensor | None = None
    ) -> tuple[State, Tensor, Tensor, Tensor]:
        """One dreamed step for an agent: action (B,) -> (next state, features, reward, continue).

        ``noise`` (B, S) samples the prior; None takes its mode. The features
        (B, D + S * K) are [h_t+1, z_t+1], what DreamerV2's actor and critic read;
        ``reward`` and ``continue`` (B,) are the heads' on them.
        """
        no_reset = torch.zeros(action.shape[0], dtype=torch.bool, device=action.device)
        h = self._recur(state, action, no_reset)
        # probabilities, not their logarithms: drawing needs no Log in the step graph
        prior = unimix_probs(self._grouped(self.img_out(h)), self.config.unimix)
        z = draw_one_hot(prior, noise).flatten(-2)
        features = torch.cat([h, z], -1)
        reward = self.two_hot.mean(self.reward(features))
        cont = torch.sigmoid(self.cont(features).squeeze(-1))
        return {"h": h, "z": z}, features, reward, cont

    def step(
        self, state: State, action: Tensor, noise: Tensor | None = None
    ) -> tuple[State, Tensor, Tensor, Tensor]:
        """One dreamed step: action (B,) -> (next state, reward (B,), continue (B,), latent).

        ``noise`` (B, S) samples the prior; None takes its mode. The latent is
        the feature vector [h, z] that :meth:`decode` turns into a frame.
        """
        state, features, reward, cont = self.imagine(state, action, noise)
        return state, reward, cont, features
