"""The reference actor-critic: DreamerV3's behaviour learning, as STORM and DRAMA use it.

References: DreamerV3 (Hafner et al. 2023), STORM (Zhang et al. 2023),
DRAMA (Wang et al. 2025) and DreamerV2 (Hafner et al., ICLR 2021), as their
papers and released configs give it.
On a trajectory of features s_0..s_H, actions a_0..a_H-1, rewards r_k and
continue flags c_k (of arriving at s_k+1):

    G_k      lambda-return, bootstrapped from the critic (see lambda_return)
    critic   two-hot symlog cross-entropy to sg(G_k), plus the same to a slow
             critic's target (an EMA of the critic) as a regularizer
    actor    -log pi(a_k | s_k) sg((G_k - V(s_k)) / max(1, S)) - eta H(pi(. | s_k)),
             S the EMA of the 95th minus the 5th percentile of the returns

Where the seeds differ the choice is named by ``ActorCriticConfig.form``:

- ``storm`` (STORM, DRAMA): the (1 - lambda) term of the lambda-return uses
  V_k, not V_k+1 (their ``calc_lambda_return``); the slow critic's target is
  the lambda-return computed with its values; steps are not weighted.
- ``dreamerv3``: the textbook lambda-return with V_k+1; the slow critic's
  target is its value; each step is weighted by the product of the continue
  flags before it, so steps after a predicted end do not count.
- ``dreamerv2`` (DreamerV2's Atari agent, its eqs. 4-6): the textbook lambda-return,
  bootstrapped from the slow critic (its target network, copied every
  ``slow_every`` updates), which is also the actor's baseline; advantages are
  not scaled (no return normalization); each step is weighted by the product of
  the discounts gamma c before it. The actor's gradient is REINFORCE alone:
  DreamerV2's rho = 1 on Atari (``rho``). Its indexing is DreamerV3's: r_k is
  the reward of the step from s_k, where DreamerV2 pairs the reward of arriving
  at s_k with V(s_k+1); the two differ by a baseline that the action cannot change.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from wmsim.model.distributions import TwoHot
from wmsim.model.networks import mlp

FORMS = ("storm", "dreamerv3", "dreamerv2")
"""The lambda-return and regularizer variants; see the module docstring."""


@dataclass(frozen=True)
class ActorCriticConfig:
    """The actor-critic's networks, losses and optimizer (STORM's by default)."""

    form: str = "storm"
    """storm (STORM, DRAMA), dreamerv3 or dreamerv2: the lambda-return, baseline and
    regularizer variant (see the module docstring)."""
    act_on: str = "prior"
    """What the actor reads of the current frame: prior (STORM, DRAMA: the latent the
    world model predicted for it, as in imagination) or posterior (the frame's encoding)."""
    gamma: float = 0.985
    """Discount (STORM, DRAMA 0.985; DreamerV3 1 - 1/333; DreamerV2 0.999)."""
    lam: float = 0.95
    """Lambda of the lambda-return."""
    entropy: float = 3e-4
    """Weight of the policy's entropy bonus (DreamerV2 Atari 1e-3)."""
    rho: float = 1.0
    """Share of REINFORCE in the actor's gradient, the rest dynamics backpropagation
    (DreamerV2: 1 on Atari, 0 on continuous control). Only 1 is built: the rest would need
    gradients through imagination, which runs without them."""
    actor_unimix: float = 0.0
    """Uniform mixture on the policy (DreamerV3 0.01; STORM, DRAMA none)."""
    actor_input_norm: bool = False
    """Normalize the actor's inputs by their running mean and std, clipped at 10 (DRAMA's
    VecNormalize); the statistics follow the imagined features it trains on."""
    actor_width: int = 512
    """Hidden width of the actor."""
    actor_layers: int = 2
    """Hidden layers of the actor."""
    critic_width: int = 512
    """Hidden width of the critic."""
    critic_layers: int = 2
    """Hidden layers of the critic."""
    norm: str = "layer"
    """Normalization in hidden layers: layer (STORM) or rms (DRAMA)."""
    activation: str = "relu"
    """relu (STORM) or silu (DRAMA, DreamerV3)."""
    bins: int = 255
    """Two-hot bins of the critic, on [-20, 20] in symlog space."""
    slow_decay: float = 0.98
    """EMA decay of the slow critic: slow = d * slow + (1 - d) * critic (DreamerV2 0: a copy)."""
    slow_every: int = 1
    """Updates between moves of the slow critic (DreamerV2 100)."""
    slow_reg: float = 1.0
    """Weight of the slow critic's target in the critic loss (DreamerV2: none)."""
    return_decay: float = 0.99
    """EMA decay of the return percentiles."""
    return_range: tuple[float, float] = (5.0, 95.0)
    """Percentiles whose distance scales the advantages."""
    optimizer: str = "adam"
    """adam or laprop (DRAMA)."""
    lr: float = 3e-5
    """Learning rate of actor and critic."""
    eps: float = 1e-5
    """The optimizer's epsilon."""
    grad_clip: float = 100.0
    """Gradients of actor and critic are clipped to this global norm."""
    warmup: int = 0
    """Updates of linear learning-rate warm-up (DRAMA 1000)."""


def lambda_return(
    reward: Tensor, cont: Tensor, value: Tensor, gamma: float, lam: float | Tensor, form: str
) -> Tensor:
    """Lambda-returns G (B, H) of rewards and continue flags (B, H), values (B, H + 1).

    ``reward[:, k]`` and ``cont[:, k]`` belong to the step from s_k to s_k+1;
    ``value[:, k]`` is V(s_k). With G_H = V(s_H):

        dreamerv3, dreamerv2: G_k = r_k + gamma c_k ((1 - lam) V(s_k+1) + lam G_k+1)
        storm:                G_k = r_k + gamma c_k ((1 - lam) V(s_k)   + lam G_k+1)

    ``lam`` may be a tensor (B, H): 0 at a step cuts the return there (it then
    bootstraps from V(s_k+1) alone, in the dreamerv3 form).
    """
    if form not in FORMS:
        raise ValueError(f"unknown lambda-return form {form!r}; choose one of {FORMS}")
    lam = torch.as_tensor(lam, dtype=reward.dtype, device=reward.device).expand_as(reward)
    blend = value[:, :-1] if form == "storm" else value[:, 1:]
    returns, last = [], value[:, -1]
    for k in reversed(range(reward.shape[1])):
        last = reward[:, k] + gamma * cont[:, k] * (
            (1 - lam[:, k]) * blend[:, k] + lam[:, k] * last
        )
        returns.append(last)
    return torch.stack(returns[::-1], 1)


def step_weights(cont: Tensor, gamma: float, form: str) -> Tensor:
    """The form's weight (B, H) of each step, from continue flags (B, H) of arriving at s_1..s_H.

    storm: w_k = 1. dreamerv3: w_k = prod_j<k c_j, so steps after a predicted end do not
    count. dreamerv2: w_k = prod_j<k gamma c_j, as DreamerV2's discounts include gamma.
    """
    if form == "storm":
        return torch.ones_like(cont)
    discount = cont * gamma if form == "dreamerv2" else cont
    return torch.cumprod(torch.cat([torch.ones_like(cont[:, :1]), discount[:, :-1]], 1), 1)


def spread_scale(low: float, high: float) -> float:
    """max(1, high - low): the divisor of advantages, for returns between low and high."""
    return max(1.0, high - low)


class ReturnNorm:
    """EMAs of the low and high percentiles of returns; advantages are divided by their spread.

    Both start at 0 (STORM's EMAScalar), so early advantages are divided by 1.
    """

    def __init__(self, decay: float = 0.99, percentiles: tuple[float, float] = (5.0, 95.0)):
        self.decay, self.percentiles = decay, percentiles
        self.low, self.high = 0.0, 0.0

    def folded(self, returns: Tensor) -> tuple[float, float]:
        """(low, high): the EMAs with the percentiles of ``returns`` folded in; self unchanged."""
        flat = returns.detach().flatten().float()
        q = torch.tensor([p / 100.0 for p in self.percentiles], device=flat.device)
        low, high = torch.quantile(flat, q).tolist()
        d = self.decay
        return d * self.low + (1 - d) * low, d * self.high + (1 - d) * high

    def update(self, returns: Tensor) -> float:
        """Fold the percentiles of ``returns`` into the EMAs; return max(1, high - low)."""
        self.low, self.high = self.folded(returns)
        return self.scale

    @property
    def scale(self) -> float:
        """max(1, high - low): returns that spread less than 1 are not scaled up."""
        return spread_scale(self.low, self.high)

    def state_dict(self) -> dict[str, float]:
        """The two EMAs."""
        return {"low": self.low, "high": self.high}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore the two EMAs."""
        self.low, self.high = float(state["low"]), float(state["high"])


class RunningNorm(nn.Module):
    """Running mean and variance of inputs (..., size), which it normalizes and clips.

    As Stable-Baselines3's VecNormalize, which DRAMA's actor uses: the count
    starts at 1e-4 with mean 0 and variance 1, batches are merged exactly
    (Chan et al.), and x -> clip((x - mean) / sqrt(var + 1e-8), -clip, clip).
    """

    def __init__(self, size: int, clip: float = 10.0, eps: float = 1e-8):
        super().__init__()
        self.clip, self.eps = clip, eps
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("var", torch.ones(size))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    @torch.no_grad()
    def merged(self, x: Tensor) -> tuple[Tensor, Tensor, float]:
        """(mean (size,), var (size,), count) with the batch x (..., size) merged in.

        Self is unchanged: :meth:`load` applies the result.
        """
        x = x.reshape(-1, x.shape[-1])
        n = x.shape[0]
        batch_mean, batch_var = x.mean(0), x.var(0, unbiased=False)
        count = float(self.count)
        total = count + n
        delta = batch_mean - self.mean
        m2 = self.var * count + batch_var * n + delta.square() * count * n / total
        return self.mean + delta * n / total, m2 / total, total

    @torch.no_grad()
    def load(self, statistics: tuple[Tensor, Tensor, float]) -> None:
        """Take (mean, var, count), as :meth:`merged` returns them, as the statistics."""
        mean, var, count = statistics
        self.mean.copy_(mean)
        self.var.copy_(var)
        self.count.fill_(count)

    def update(self, x: Tensor) -> None:
        """Merge the batch x (..., size) into the statistics."""
        self.load(self.merged(x))

    def forward(self, x: Tensor, statistics: tuple[Tensor, Tensor, float] | None = None) -> Tensor:
        """x normalized by the statistics so far (or the given ones), and clipped."""
        mean, var = (self.mean, self.var) if statistics is None else statistics[:2]
        return ((x - mean) / torch.sqrt(var + self.eps)).clamp(-self.clip, self.clip)


@dataclass(frozen=True)
class Statistics:
    """What one actor-critic loss computed for the update step to apply.

    See :meth:`ActorCritic.objective` and :meth:`ActorCritic.update_statistics`.
    """

    return_range: tuple[float, float]
    """The return normalizer's (low, high) EMAs with this batch's returns folded in."""
    actor_inputs: tuple[Tensor, Tensor, float] | None
    """The actor input normalizer's (mean, var, count) with this batch's acting states merged
    in; None without one."""


class ActorCritic(nn.Module):
    """Actor, critic and slow critic over features of size ``features``.

    Args:
        config: networks and losses.
        features: size of the feature vectors the actor and critic read.
        num_actions: size of the discrete action space.
    """

    def __init__(self, config: ActorCriticConfig, features: int, num_actions: int):
        super().__init__()
        c = config
        if c.form not in FORMS or c.act_on not in ("prior", "posterior"):
            raise ValueError(f"form must be one of {FORMS}, act_on prior or posterior")
        if c.rho != 1.0 or c.slow_every < 1:
            raise ValueError("rho must be 1 (REINFORCE; see its docstring), slow_every positive")
        self.config, self.num_actions = config, num_actions
        self.actor_norm = RunningNorm(features) if c.actor_input_norm else None
        self.actor = mlp(features, num_actions, c.actor_width, c.actor_layers, c.norm, c.activation)
        self.critic = mlp(features, c.bins, c.critic_width, c.critic_layers, c.norm, c.activation)
        # outputs start small: a near-uniform policy and a value of exactly 0 (DreamerV3)
        nn.init.normal_(self.actor[-1].weight, std=1e-3)
        nn.init.zeros_(self.actor[-1].bias)
        nn.init.zeros_(self.critic[-1].weight)
        nn.init.zeros_(self.critic[-1].bias)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.two_hot = TwoHot(c.bins)

    def log_policy(
        self, features: Tensor, input_statistics: tuple[Tensor, Tensor, float] | None = None
    ) -> Tensor:
        """Log-probabilities (..., A) of the actions, with the configured unimix.

        ``input_statistics`` replace the actor input normalizer's own (see :class:`Statistics`).
        """
        if self.actor_norm is not None:
            features = self.actor_norm(features, input_statistics)
        probs = torch.softmax(self.actor(features), -1)
        mix = self.config.actor_unimix
        return torch.log((1 - mix) * probs + mix / self.num_actions)

    def act(
        self, features: Tensor, generator: torch.Generator | None, greedy: bool = False
    ) -> Tensor:
        """Actions (B,) for features (B, F): sampled, or the most likely with ``greedy``."""
        log_probs = self.log_policy(features)
        if greedy:
            return log_probs.argmax(-1)
        return torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(-1)

    def value(self, features: Tensor, slow: bool = False) -> Tensor:
        """The critic's (or slow critic's) value (...) of features (..., F)."""
        return self.two_hot.mean((self.slow_critic if slow else self.critic)(features))

    def objective(
        self,
        features: Tensor,
        actions: Tensor,
        reward: Tensor,
        cont: Tensor,
        norm: ReturnNorm,
        *,
        lam: Tensor | None = None,
        weight: Tensor | None = None,
        start: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor], Statistics]:
        """Actor and critic loss of a trajectory: (loss, metrics, statistics).

        The normalizers are read, never written: the loss uses them with this batch
        folded in, and returns those statistics for the update step to apply
        (:meth:`update_statistics`), so computing it twice changes nothing.

        Args:
            features: (B, H + 1, F) states s_0..s_H (gradients flow into them, if they have any).
            actions: (B, H) actions taken at s_0..s_H-1.
            reward: (B, H) rewards of the steps.
            cont: (B, H) continue flags (or probabilities) of arriving at s_1..s_H.
            norm: the return normalizer.
            lam: (B, H) lambda per step, to cut returns at episode ends of real
                rollouts; the configured lambda when None.
            weight: (B, H) weight per step, replacing the form's.
            start: (B,) 1 - is_terminal of s_0, where s_0 is a real frame's posterior
                (DreamerV2's true first discount): it scales every step's weight.
        """
        c = self.config
        lam = c.lam if lam is None else lam
        logits = self.critic(features)  # (B, H + 1, bins)
        value = self.two_hot.mean(logits).detach()
        with torch.no_grad():
            slow = self.value(features, slow=True)
            # DreamerV2 bootstraps from its target network, the slow critic, and baselines with it
            baseline = slow if c.form == "dreamerv2" else value
            returns = lambda_return(reward, cont, baseline, c.gamma, lam, c.form)
            if c.form == "storm":
                slow_target = lambda_return(reward, cont, slow, c.gamma, lam, c.form)
            else:
                slow_target = slow[:, :-1]
            weight = step_weights(cont, c.gamma, c.form) if weight is None else weight
            weight = weight if start is None else weight * start.unsqueeze(1)
        critic_loss = self.two_hot.loss(logits[:, :-1], returns)
        critic_loss = critic_loss + c.slow_reg * self.two_hot.loss(logits[:, :-1], slow_target)
        return_range = norm.folded(returns)
        scale = 1.0 if c.form == "dreamerv2" else spread_scale(*return_range)
        advantage = (returns - baseline[:, :-1]) / scale
        acting = features[:, :-1].detach()
        inputs = None if self.actor_norm is None else self.actor_norm.merged(acting)
        log_probs = self.log_policy(features[:, :-1], inputs)  # (B, H, A)
        taken = log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        actor_loss = -(taken * advantage + c.entropy * entropy)
        loss = (weight * (actor_loss + critic_loss)).mean()
        metrics = {
            "actor_loss": (weight * actor_loss).mean(),
            "critic_loss": (weight * critic_loss).mean(),
            "return": returns.mean(), "value": value.mean(), "advantage": advantage.mean(),
            "entropy": entropy.mean(), "return_scale": torch.tensor(scale),
            "reward": reward.mean(), "continue": cont.mean(),
        }  # fmt: skip
        statistics = Statistics(return_range, inputs)
        return loss, {k: v.detach() for k, v in metrics.items()}, statistics

    def update_statistics(self, norm: ReturnNorm, statistics: Statistics) -> None:
        """Apply what :meth:`objective` computed: the return and actor input normalizers."""
        norm.load_state_dict(dict(zip(("low", "high"), statistics.return_range, strict=True)))
        if self.actor_norm is not None:
            self.actor_norm.load(statistics.actor_inputs)

    @torch.no_grad()
    def update_slow(self, update: int) -> None:
        """Move the slow critic towards the critic after every ``slow_every``-th update.

        ``update`` counts updates from 0; slow = d * slow + (1 - d) * critic.
        """
        if update % self.config.slow_every:
            return
        d = self.config.slow_decay
        for slow, fast in zip(self.slow_critic.parameters(), self.critic.parameters(), strict=True):
            slow.mul_(d).add_(fast.detach(), alpha=1 - d)
