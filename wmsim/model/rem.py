"""REM: a token-based world model on a RetNet, with Parallel Observation Prediction (POP).

Reference: Cohen, Wang, Kang, Mannor, "Improving Token-Based World Models with
Parallel Observation Prediction" (ICML 2024).

Each step is a block of 65 tokens: the frame's 64 tokens from the VQ
tokenizer, embedded with its (frozen, for the world model) codebook vectors,
then the action token. A RetNet reads the token stream; the output at the
action token predicts the reward's sign and the episode's end.

POP predicts the next frame's 64 tokens in one pass: 64 learned prediction
tokens, placed at the absolute positions the frame's tokens will occupy,
read the recurrent state and, causally, each other, but never write the
state. Dreaming a frame therefore costs two network calls: the frame and the
action update the state; the prediction tokens read it. With ``pop=False`` the
same networks are trained to predict the next token and dream token by token
as IRIS does, 65 sequential calls per frame (REM's no-POP ablation, and the
baseline of ``benchmarks/pop.py``).

Training (REM's parallel path): the real tokens run blockwise, keeping the
state entering every block, and all blocks' prediction tokens run as one
batch on those states (:meth:`RetNet.forward_pop`). Block t's prediction
tokens are labelled with block t's own tokens. The first ``burn_in`` blocks
of a window are context only. The tokenizer trains in the same step on a
sample of the window's frames; no gradient crosses from the world model into
it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wmsim.model.distributions import draw, inverse_cdf
from wmsim.model.networks import masked_mean
from wmsim.model.retnet import RetNet, RetNetConfig
from wmsim.model.tokenizer import Tokenizer, TokenizerConfig

TOKENS = 64
"""Observation tokens per 64 x 64 frame (8 x 8)."""
BLOCK = TOKENS + 1
"""Tokens per step: the frame's, then the action."""


@dataclass(frozen=True)
class REMConfig:
    """REM's world model by default: tokenizer 3.19M, world model 4.63M parameters."""

    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    """The VQ autoencoder; its code size must equal the RetNet's width."""
    retnet: RetNetConfig = field(default_factory=RetNetConfig)
    """The sequence model over tokens."""
    pop: bool = True
    """Predict a frame's tokens at once (POP); False: token by token (IRIS, REM's ablation)."""
    burn_in: int = 2
    """Blocks at the start of each window that are context only (REM's context_length)."""
    head_width: int = 256
    """Hidden width of the observation, reward and end heads."""
    tokenizer_frames: int = 128
    """Frames of each batch the tokenizer trains on (REM: batches of 128 frames)."""
    tokenizer_lr_scale: float = 0.5
    """The tokenizer's learning rate relative to the world model's (REM: 1e-4 vs 2e-4)."""
    life_loss_ends: bool = True
    """A lost life counts as an episode end for the end head."""


def _head(width: int, hidden: int, out: int, **kw) -> nn.Module:
    return nn.Sequential(nn.Linear(width, hidden, **kw), nn.ReLU(), nn.Linear(hidden, out, **kw))


def sample_tokens(logits: Tensor, noise: Tensor | None) -> Tensor:
    """Token ids from logits (..., V), drawn by one uniform (...) each; the modes if None."""
    return draw(F.softmax(logits, -1), noise)


class REMWorldModel(nn.Module):
    """Tokenizer, token embeddings, RetNet and heads; see the module docstring.

    Rewards are predicted as their sign, as REM (and most Atari agents) train
    on clipped rewards; :attr:`clips_rewards` tells evaluation so.
    """

    clips_rewards = True
    backbone_name = None  # its RetNet is part of REM's design, not a choice among backbones

    def __init__(self, config: REMConfig, num_actions: int, *, device=None, dtype=None):
        super().__init__()
        width = config.retnet.width
        if config.tokenizer.code_size != width:
            raise ValueError(
                f"the tokenizer's code size {config.tokenizer.code_size} must equal the RetNet's "
                f"width {width}: REM embeds observation tokens with the codebook"
            )
        kw = {"device": device, "dtype": dtype}
        self.config, self.num_actions = config, num_actions
        self.tokenizer = Tokenizer(config.tokenizer, **kw)
        self.retnet = RetNet(config.retnet, **kw)
        self.action_embed = nn.Embedding(num_actions, width, **kw)
        self.query_embed = nn.Embedding(TOKENS, width, **kw) if config.pop else None
        self.obs_head = _head(width, config.head_width, config.tokenizer.codes, **kw)
        self.reward_head = _head(width, config.head_width, 3, **kw)  # sign(r) + 1
        self.end_head = _head(width, config.head_width, 2, **kw)  # 1: the episode ends

    @property
    def latent_range(self) -> tuple[int, int]:
        """Bounds of :meth:`latent`'s values: token ids."""
        return (0, self.config.tokenizer.codes - 1)

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """Shape of the uniform noise :meth:`step` takes per row: one per token."""
        return (TOKENS,)

    def _embed(self, tokens: Tensor) -> Tensor:
        """Observation token ids (...) -> codebook vectors (..., width); REM does not train them."""
        return self.tokenizer.codebook(tokens).detach()

    def _blocks(self, tokens: Tensor, actions: Tensor) -> Tensor:
        """Frame tokens (B, T, 64) and actions (B, T) -> the token stream (B, T * 65, width)."""
        action = self.action_embed(actions).unsqueeze(2)  # (B, T, 1, width)
        return torch.cat([self._embed(tokens), action], 2).flatten(1, 2)

    @staticmethod
    def _resets(is_first: Tensor, per_block: int) -> Tensor:
        """Episode starts (B, T) -> token resets (B, T * per_block), set on each block's first."""
        resets = torch.zeros(*is_first.shape, per_block, dtype=torch.bool, device=is_first.device)
        resets[..., 0] = is_first
        return resets.flatten(1)

    def _states(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        return {f"s{i}": state[f"s{i}"] for i in range(self.config.retnet.layers)}

    def _outcome(self, h: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Action-token outputs (B, width) -> clipped reward (B,), continue (B,).

        Without ``noise`` the reward's expectation and the continue probability; with
        uniform ``noise`` (B, 2) a reward drawn from the three classes, in {-1, 0, 1}, and a
        continue flag drawn from its probability, as REM's agent imagines.
        """
        reward = F.softmax(self.reward_head(h), -1)  # (B, 3): sign(r) + 1
        cont = F.softmax(self.end_head(h), -1)[:, 0]
        if noise is None:
            return reward[:, 2] - reward[:, 0], cont
        sign = inverse_cdf(reward, noise[:, 0]) - 1
        return sign.to(reward.dtype), (noise[:, 1] < cont).to(cont.dtype)

    def predict(self, tokens: Tensor, actions: Tensor, is_first: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher-forced predictions over whole windows, in one parallel pass.

        Args:
            tokens: (B, T, 64) frame tokens.
            actions: (B, T) actions; ``actions[:, t]`` follows frame t.
            is_first: (B, T) episode starts.

        Returns:
            Logits (B, T, 64, codes) of each frame's tokens given the steps before it
            (POP: from block t's prediction tokens; else from the token before each),
            and the action-token outputs (B, T, width), whose heads give step t + 1's
            reward and end.
        """
        batch_size, length = tokens.shape[:2]
        x = self._blocks(tokens, actions)  # (B, T * 65, width)
        positions = torch.arange(x.shape[1], device=x.device).expand(batch_size, -1)
        resets = self._resets(is_first, BLOCK)
        states = self.retnet.initial_state(batch_size, x.device, x.dtype)
        if self.config.pop:
            queries = self.query_embed.weight.expand(batch_size, length, -1, -1)
            query_positions = positions.unflatten(1, (length, BLOCK))[..., :TOKENS]
            h, obs_h, _ = self.retnet.forward_pop(
                x, positions, resets, states, queries, query_positions, BLOCK
            )
        else:  # the output at each token predicts the next one
            h, _ = self.retnet(x, positions, resets, states, chunk=3 * BLOCK)
            before = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], 1)
            obs_h = before.unflatten(1, (length, BLOCK))[:, :, :TOKENS]
        return self.obs_head(obs_h), h.unflatten(1, (length, BLOCK))[:, :, TOKENS]

    def loss(self, batch: dict[str, Tensor], generator: torch.Generator | None = None):
        """The training loss of windows batch[k] (B, T, ...); returns (loss, metrics)."""
        c, obs, is_first = self.config, batch["obs"], batch["is_first"]
        batch_size, length = obs.shape[:2]
        frames = obs.flatten(0, 1)
        pick = torch.randperm(len(frames), generator=generator, device=obs.device)
        tokenizer_loss, metrics = self.tokenizer.loss(frames[pick[: c.tokenizer_frames]], generator)
        with torch.no_grad():
            tokens = self.tokenizer.tokenize(obs)  # (B, T, 64), the world model's targets
        logits, act_h = self.predict(tokens, batch["action"], is_first)

        step = torch.arange(length, device=obs.device)
        obs_valid = (step >= c.burn_in) & ~is_first  # a new episode is not predicted from the old
        obs_ce = F.cross_entropy(logits.flatten(0, 2), tokens.flatten(), reduction="none")
        obs_loss = masked_mean(obs_ce.view(batch_size, length, TOKENS).mean(-1), obs_valid)
        hit = (logits.argmax(-1) == tokens).float().mean(-1)

        # the action token of step t predicts the reward and end that step t + 1 records
        next_valid = (step[:-1] >= c.burn_in) & ~is_first[:, 1:]
        reward_class = (batch["reward"][:, 1:].sign() + 1).long()
        reward_ce = F.cross_entropy(
            self.reward_head(act_h[:, :-1]).flatten(0, 1), reward_class.flatten(), reduction="none"
        )
        ends = batch["is_terminal"][:, 1:]
        if c.life_loss_ends:
            ends = ends | batch["life_loss"][:, 1:]
        end_ce = F.cross_entropy(
            self.end_head(act_h[:, :-1]).flatten(0, 1), ends.long().flatten(), reduction="none"
        )
        reward_loss = masked_mean(reward_ce.view_as(ends), next_valid)
        end_loss = masked_mean(end_ce.view_as(ends), next_valid)
        loss = tokenizer_loss + obs_loss + reward_loss + end_loss
        metrics |= {
            "loss": loss.detach(), "tokenizer": tokenizer_loss.detach(),
            "obs": obs_loss.detach(), "reward": reward_loss.detach(), "end": end_loss.detach(),
            "token_accuracy": masked_mean(hit, obs_valid),
        }  # fmt: skip
        return loss, metrics

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Optimizer groups as REM's: decay on the world model's matrices only.

        The tokenizer learns at its own rate (``lr_scale``), without decay.
        """
        tokenizer = set(self.tokenizer.parameters())
        embeddings = {
            p for m in self.modules() if isinstance(m, nn.Embedding) for p in m.parameters()
        }
        decayed, rest = [], []
        for p in self.parameters():
            if p not in tokenizer:
                (decayed if p.ndim >= 2 and p not in embeddings else rest).append(p)
        return [
            {"params": decayed, "weight_decay": weight_decay},
            {"params": rest, "weight_decay": 0.0},
            # in module order, as the others: a set's order changes from process to process,
            # and a resumed optimizer's state must meet its parameters in the saved order
            {"params": list(self.tokenizer.parameters()), "weight_decay": 0.0,
             "lr_scale": self.config.tokenizer_lr_scale},
        ]  # fmt: skip

    def decode(self, latent: Tensor) -> Tensor:
        """Token ids (..., 64) -> frames (..., 64, 64, 3) in [0, 1]."""
        return self.tokenizer.decode(latent)

    def export_form(self) -> REMWorldModel:
        """Itself: its graphs compute as it does."""
        return self

    def reconstruct(self, frames: Tensor) -> Tensor:
        """uint8 frames (..., 64, 64, 3) through the tokenizer -> (..., 64, 64, 3) in [0, 1]."""
        return self.tokenizer.decode(self.tokenizer.tokenize(frames))

    def observe(
        self, frames: Tensor, actions: Tensor, is_first: Tensor, noise: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Prime a dream with real context: frames (B, C, H, W, 3) uint8, actions (B, C - 1).

        ``noise`` is accepted for the contract and unused: tokenizing is deterministic.

        Returns:
            The RetNet states after the context's tokens; ``tokens`` (B, 64), the last
            frame's; ``position`` (B,), the next token's index; ``first`` (B,). With POP
            the last frame's tokens wait for the first action, so one call reads both.
        """
        tokens = self.tokenizer.tokenize(frames)  # (B, C, 64)
        batch_size, context = tokens.shape[:2]
        x = self._blocks(tokens[:, :-1], actions)
        resets = self._resets(is_first[:, :-1], BLOCK)
        if not self.config.pop:  # token by token, the last frame is read now
            x = torch.cat([x, self._embed(tokens[:, -1])], 1)
            resets = torch.cat([resets, self._resets(is_first[:, -1:], TOKENS)], 1)
        states = self.retnet.initial_state(batch_size, frames.device, x.dtype)
        if x.shape[1]:
            positions = torch.arange(x.shape[1], device=frames.device).expand(batch_size, -1)
            _, states = self.retnet(x, positions, resets, states, chunk=3 * BLOCK)
        position = torch.full((batch_size,), (context - 1) * BLOCK, device=frames.device)
        if not self.config.pop:
            position = position + TOKENS
        return {**states, "tokens": tokens[:, -1], "position": position, "first": is_first[:, -1]}

    def latent(self, state: dict[str, Tensor]) -> Tensor:
        """The token ids (B, 64) of the frame ``state`` stands at, as :meth:`decode` takes them."""
        return state["tokens"]

    def step(
        self, state: dict[str, Tensor], action: Tensor, noise: Tensor | None = None
    ) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor]:
        """One dreamed step: action (B,) -> (state, reward (B,), continue (B,), tokens (B, 64)).

        ``noise`` (B, 64) samples the next frame's tokens; None takes each one's mode.
        The reward is the expected sign and the continue a probability.
        """
        state, reward, cont = self._dream(state, action, noise, None)
        return state, reward, cont, state["tokens"]

    def imagine(
        self,
        state: dict[str, Tensor],
        action: Tensor,
        noise: Tensor | None = None,
        outcome_noise: Tensor | None = None,
    ) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor]:
        """:meth:`step` for the agent: action (B,) -> (state, features (B, F), reward, continue).

        ``outcome_noise`` (B, 2) uniform draws the reward in {-1, 0, 1} and the continue flag
        (REM's imagination); None gives the expected sign and the continue probability.
        """
        state, reward, cont = self._dream(state, action, noise, outcome_noise)
        return state, self.features(state["tokens"]), reward, cont

    @property
    def feature_size(self) -> int:
        """Size of :meth:`features`: the 8 x 8 code map of a frame, flattened."""
        return TOKENS * self.config.tokenizer.code_size

    def features(self, tokens: Tensor) -> Tensor:
        """Token ids (B, 64) -> the tokenizer's code map z_q (B, 64 * code_size), token-major.

        REM's controller input; the agent reads it of real and dreamed frames alike.
        """
        return self._embed(tokens).flatten(1)

    def initial_state(self, batch_size: int, device=None) -> dict[str, Tensor]:
        """The state of ``batch_size`` rows that have seen nothing: a first frame of token 0."""
        states = self.retnet.initial_state(batch_size, device, self.action_embed.weight.dtype)
        return {
            **states,
            "tokens": torch.zeros(batch_size, TOKENS, dtype=torch.long, device=device),
            "position": torch.zeros(batch_size, dtype=torch.long, device=device),
            "first": torch.ones(batch_size, dtype=torch.bool, device=device),
        }

    def _dream(self, state, action, noise, outcome_noise):
        """One dreamed step: (state, reward (B,), continue (B,)); see :meth:`_outcome`."""
        step = self._step_pop if self.config.pop else self._step_tokens
        states, h, tokens = step(state, action, noise)
        reward, cont = self._outcome(h, outcome_noise)
        position = state["position"] + BLOCK
        first = torch.zeros_like(state["first"])
        return {**states, "tokens": tokens, "position": position, "first": first}, reward, cont

    def _step_pop(self, state, action, noise):
        """Two calls: the pending frame and the action update the state, then 64 tokens at once.

        Returns (states, the action token's output (B, width), tokens (B, 64)).
        """
        batch_size, position = action.shape[0], state["position"]
        x = torch.cat([self._embed(state["tokens"]), self.action_embed(action)[:, None]], 1)
        offsets = torch.arange(BLOCK, device=action.device)
        resets = self._resets(state["first"][:, None], BLOCK)
        h, states = self.retnet(x, position[:, None] + offsets, resets, self._states(state))
        action_h = h[:, -1]  # predicts the step's reward and end
        queries = self.query_embed.weight.expand(batch_size, -1, -1)  # (B, 64, width)
        # at the positions the next frame's tokens will take; the state they would give is dropped
        no_resets = torch.zeros_like(resets[:, :TOKENS])
        h, _ = self.retnet(queries, position[:, None] + BLOCK + offsets[:TOKENS], no_resets, states)
        return states, action_h, sample_tokens(self.obs_head(h), noise)

    def _step_tokens(self, state, action, noise):
        """65 calls: the action, then each sampled token in turn (IRIS)."""
        position, no_reset = state["position"], torch.zeros_like(state["first"])
        h, states = self.retnet.step(
            self.action_embed(action), position, no_reset, self._states(state)
        )
        action_h, tokens = h, []
        for k in range(TOKENS):
            token = sample_tokens(self.obs_head(h), None if noise is None else noise[:, k])
            tokens.append(token)
            h, states = self.retnet.step(self._embed(token), position + 1 + k, no_reset, states)
        return states, action_h, torch.stack(tokens, 1)
