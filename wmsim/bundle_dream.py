"""``wmsim dream`` from a model bundle: the real game live beside the bundle's dream of it.

The real game is played with a seeded random policy under the bundle's own
settings (frame skip, sticky actions, no-op starts). The bundle observes the
first ``context`` real frames of the episode, then dreams the actions the real
game took, open-loop, sampling with a seeded generator, as a dream env would.
Nothing here imports torch: this runs on the embedded default model from a
fresh install, offline.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from wmsim.bundle import open_bundle
from wmsim.errors import UserError
from wmsim.store import resolve_model
from wmsim.video import side_by_side, write_video


def real_env(spec: dict):
    """The real game under a bundle's own settings (frame skip, resize, ...), as an AtariEnv."""
    from wmsim.collect.atari import AtariConfig, AtariEnv

    known = {f.name for f in dataclasses.fields(AtariConfig)}
    settings = {k: v for k, v in spec.get("env", {}).items() if k in known}
    return AtariEnv(AtariConfig(**{**settings, "game": spec["game"]}))


def play_real(spec: dict, steps: int, seed: int) -> dict[str, np.ndarray]:
    """``steps`` real steps of a random policy from an episode start: frames, actions, is_first."""
    env = real_env(spec)
    rng = np.random.default_rng(seed)
    frame, _ = env.reset(seed=seed)
    frames, actions = [frame], []
    for _ in range(steps - 1):
        action = int(rng.integers(len(spec["actions"])))
        frame, _, terminated, truncated, _ = env.step(action)
        actions.append(action)
        frames.append(frame)
        if terminated or truncated:  # a short game: the video ends with it
            break
    env.close()
    is_first = np.zeros(len(frames), bool)
    is_first[0] = True
    return {
        "frames": np.stack(frames),
        "actions": np.array(actions, np.int64),
        "is_first": is_first,
    }


def dream_bundle(
    out: Path, *, game: str, model: str | None, steps: int, seed: int, device: str = "auto"
) -> Path:
    """Write the real game and the bundle's dream of it side by side to ``out``; return ``out``."""
    from wmsim.runtime.graphs import Graphs

    bundle = open_bundle(resolve_model(game, model))
    if model is not None and bundle.game != game:
        game = bundle.game  # --model names the game; --game only picks the default model
    graphs = Graphs(bundle, device=device)
    context = bundle.context
    real = play_real(bundle.spec, context + steps, seed)
    if len(real["frames"]) <= context:
        raise UserError(
            f"the real game ended within the {context} context frames; try another --seed"
        )
    state, _ = graphs.observe(
        real["frames"][None, :context], real["actions"][None, : context - 1],
        real["is_first"][None, :context],
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    dreamed = []
    for action in real["actions"][context - 1 :]:
        noise = bundle.noise(1, rng)
        state, _, _, latent = graphs.step(state, np.array([action]), noise)
        dreamed.append(graphs.decode(latent)[0])
    frames = real["frames"]
    dream_frames = np.concatenate([frames[:context], np.stack(dreamed)])
    write_video(out, side_by_side(frames, dream_frames, context))
    return out
