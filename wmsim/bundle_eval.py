"""``wmsim bundle eval``: how faithful a bundle is, on fresh real play through its own graphs.

The real game is played by a seeded random policy under the bundle's own
settings (frame skip, resize, no-op starts); the bundle never saw these frames.
From every ``stride``-th step, the bundle observes ``context`` real frames,
reconstructs the last one from its latent, and dreams 16 steps open-loop with
the real actions. :mod:`wmsim.fidelity` compares its frames with the real ones
beside copying the last real frame, and its first dreamed reward and end with
what really came next. Dreams take each step's most likely latent (the
bundle format's mode noise), so an evaluation is deterministic; ``--sampled``
dreams as a dream env does, sampling with seeded noise. Nothing here imports
torch: it measures shipped models on a fresh install.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wmsim import fidelity
from wmsim.bundle import Bundle
from wmsim.bundle_dream import real_env
from wmsim.errors import UserError

HORIZONS = (1, 4, 16)
"""Dreamed steps at which frames are judged."""
FIDELITY_SEED = 1000
"""Seed of the real play measured by default; training data is collected from seed 0 up."""
BATCH = 128
"""Windows dreamed per graph call."""


@dataclass(frozen=True)
class BundleEvalArgs:
    """Measure a model bundle on fresh, seeded real play through its own graphs."""

    path: Path
    """The NAME.wmsim directory."""
    steps: int = 10000
    """Real steps to play (random policy); more steps, more reward and end events."""
    seed: int = FIDELITY_SEED
    """Seeds the real game and the policy (training data is collected from seed 0 up)."""
    stride: int = 1
    """A window starts at every stride-th step."""
    sampled: bool = False
    """Dream as a dream env does, sampling each latent with seeded noise, instead of taking
    the most likely one."""
    policies: bool = False
    """Also branch fixed policies (follow the ball, stand still, random) from the same real
    states into the game and the dream, and print how much of the game's difference between
    them the dream reproduces (wmsim.contingency); about 40 seconds more."""
    branches: int = 512
    """Real mid-play states the policies branch from (with --policies)."""
    horizon: int = 32
    """Steps of each branch (with --policies); a longer one is also shown per 16 steps, to see
    whether the dream keeps paying as the game does when it runs on."""
    decoder: str = "auto"
    """What decodes the dreamed frames: auto (OpenVINO on the CPU where installed, int8 where the
    CPU has it, as dream envs do), onnxruntime, openvino (floating point) or openvino-int8."""
    json: Path | None = None
    """Also write the metrics to this JSON file."""


def play(spec: dict, steps: int, seed: int) -> dict[str, np.ndarray]:
    """``steps`` real steps of a seeded random policy, across episodes, with every flag."""
    env = real_env(spec)
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {k: [] for k in ("obs", "action", "reward", "episode", "end", "lost")}
    obs, _ = env.reset(seed=seed)
    episode, reward, end, lost = 0, 0.0, False, False
    for _ in range(steps):
        action = int(rng.integers(len(spec["actions"])))
        for key, value in zip(rows, (obs, action, reward, episode, end, lost), strict=True):
            rows[key].append(value)
        obs, reward, terminated, truncated, info = env.step(action)
        end, lost = bool(terminated), bool(info["life_loss"])
        if terminated or truncated:
            for key, value in zip(rows, (obs, 0, reward, episode, end, lost), strict=True):
                rows[key].append(value)
            obs, _ = env.reset()
            episode, reward, end, lost = episode + 1, 0.0, False, False
    env.close()
    return {k: np.array(v[:steps]) for k, v in rows.items()}


def life_loss_ends(bundle: Bundle) -> bool:
    """Whether the bundle's continue head was trained to end at lost lives."""
    config = json.loads((bundle.path / "config.json").read_text())
    return bool(config.get("train", {}).get("model", {}).get("life_loss_ends", False))


def window_starts(real: dict[str, np.ndarray], context: int, stride: int) -> np.ndarray:
    """Starts of windows whose context and first dreamed step lie in one episode."""
    episode = real["episode"]
    last = np.arange(0, len(episode) - context, stride)
    return last[episode[last] == episode[last + context]]


def dream_windows(graphs, real: dict[str, np.ndarray], starts: np.ndarray, context: int, rng=None):
    """Reconstructions, dreamed frames at :data:`HORIZONS`, first rewards and continues.

    ``rng`` (a numpy Generator) samples every latent; None takes the most likely.
    """
    n, horizon = len(real["obs"]), max(HORIZONS)
    out: dict[str, list] = {"recon": [], "reward": [], "cont": [], **{h: [] for h in HORIZONS}}
    for begin in range(0, len(starts), BATCH):
        s = starts[begin : begin + BATCH]
        rows = s[:, None] + np.arange(context)
        is_first = np.zeros(rows.shape, bool)
        is_first[:, 0] = True
        state, latent = graphs.observe(real["obs"][rows], real["action"][rows[:, :-1]], is_first)
        out["recon"].append(graphs.decode(latent))
        for h in range(1, horizon + 1):
            noise = graphs.bundle.noise(len(s), rng)
            action = real["action"][np.minimum(s + context - 2 + h, n - 1)]
            state, reward, cont, latent = graphs.step(state, action, noise)
            if h == 1:
                out["reward"].append(reward)
                out["cont"].append(cont)
            if h in HORIZONS:
                out[h].append(graphs.decode(latent))
    return {k: np.concatenate(v) for k, v in out.items()}


def evaluate_bundle(
    bundle: Bundle,
    *,
    steps: int,
    seed: int,
    stride: int = 1,
    sampled: bool = False,
    device: str = "cpu",
    decoder: str = "auto",
) -> dict[str, float]:
    """The fidelity metrics of ``bundle`` on fresh real play (see the module docstring)."""
    from wmsim.runtime.graphs import Graphs

    context = bundle.context
    if context < 2:
        raise UserError(f"{bundle.path} starts dreams from {context} frame; need at least 2")
    if steps < context + max(HORIZONS) + 1 or stride < 1:
        raise UserError(f"--steps must be over {context + max(HORIZONS)} and --stride positive")
    real = play(bundle.spec, steps, seed)
    starts = window_starts(real, context, stride)
    rng = np.random.default_rng(seed) if sampled else None
    graphs = Graphs(bundle, device=device, decoder=decoder)
    dream = dream_windows(graphs, real, starts, context, rng)
    episode, obs = real["episode"], real["obs"]
    last = starts + context - 1  # the last real frame each dream starts from
    metrics: dict[str, float] = {"real_steps": steps, "windows": len(starts), "sampled": sampled}
    judged = {"recon": (last, dream["recon"], last - 1)}
    for h in HORIZONS:
        t = np.minimum(last + h, len(obs) - 1)
        keep = (last + h < len(obs)) & (episode[t] == episode[last])
        judged[f"h{h}"] = (t[keep], dream[h][keep], last[keep])
    for name, (t, frames, copy) in judged.items():
        ours = fidelity.frame_metrics(obs[t - 1], obs[t], frames)
        baseline = fidelity.frame_metrics(obs[t - 1], obs[t], obs[copy])
        metrics[f"{name}_objects"] = ours["objects"]
        for key in ("object_recall", "moving_mse", "mse", "spurious"):
            metrics[f"{name}_{key}"], metrics[f"{name}_copy_{key}"] = ours[key], baseline[key]
    arrived = last + 1  # the row the first dreamed step predicts
    metrics.update(fidelity.event_metrics(dream["reward"], real["reward"][arrived]))
    ends = real["end"][arrived] | (real["lost"][arrived] & life_loss_ends(bundle))
    metrics.update(fidelity.end_metrics(dream["cont"], ends))
    return metrics


def json_ready(metrics: dict[str, float]) -> dict[str, float | None]:
    """The metrics with NaN (no event to measure on) as None, which JSON can hold."""
    return {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in metrics.items()}


ROW = ("objects", "object_recall", "copy_object_recall", "moving_mse", "copy_moving_mse", "mse",
       "copy_mse", "spurious")  # fmt: skip


def table(metrics: dict[str, float]) -> str:
    """The metrics as text: frames by horizon beside the copy baseline, then events."""
    lines = [
        f"{'':6} {'objects':>7} {'recall':>7} {'copy':>6} {'moving mse':>10} {'copy':>7} "
        f"{'mse':>8} {'copy':>8} {'spurious':>8}"
    ]
    for name in ("recon", *(f"h{h}" for h in HORIZONS)):
        row = {key: metrics[f"{name}_{key}"] for key in ROW}
        lines.append(
            f"{name:6} {int(row['objects']):7d} {row['object_recall']:7.1%} "
            f"{row['copy_object_recall']:6.1%} {row['moving_mse']:10.4f} "
            f"{row['copy_moving_mse']:7.4f} {row['mse']:8.5f} {row['copy_mse']:8.5f} "
            f"{row['spurious']:8.1f}"
        )
    lines.append(
        f"rewards one step ahead: recall {metrics['reward_recall']:.2f}, precision "
        f"{metrics['reward_precision']:.2f} over {metrics['reward_events']} events"
    )
    lines.append(
        f"ends one step ahead: recall {metrics['end_recall']:.2f}, precision "
        f"{metrics['end_precision']:.2f}, mean end probability {metrics['end_prob_at_ends']:.3f} "
        f"at real ends, {metrics['end_prob_elsewhere']:.3f} elsewhere "
        f"({metrics['end_prob_ratio']:.1f}x) over {metrics['end_events']} events"
    )
    return "\n".join(lines)
