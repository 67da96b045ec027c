"""wmsim: learned Atari simulators for reinforcement learning.

Collect real Atari frames, train world models on them, export the models, and
serve them as batched dream environments. Importing this package is light: it
imports gymnasium but no torch, onnxruntime or ale-py (see
``tests/test_import_hygiene.py``).

Importing it registers ``wmsim/<Game>-dream-v0`` for every Atari 100k game, so
after ``import wmsim``, ``gymnasium.make("wmsim/Breakout-dream-v0")`` makes a
single dream env and ``gymnasium.make_vec("wmsim/Breakout-dream-v0", num_envs=8)``
the native vector env. Without the import, ``gymnasium.make("wmsim:wmsim/...")``
imports wmsim first (gymnasium 1.x loads no plugins by itself).
"""

__version__ = "0.1.0"

import gymnasium

from wmsim.games import ATARI_100K

DREAM_EPISODE_STEPS = 1000
"""Steps after which the registered ids truncate a dream episode."""


def _register_dream_envs() -> None:
    for game in ATARI_100K:
        gymnasium.register(
            id=f"wmsim/{game}-dream-v0",
            entry_point="wmsim_client.env:DreamEnv",
            vector_entry_point="wmsim_client.vector:DreamVectorEnv",
            max_episode_steps=DREAM_EPISODE_STEPS,
            nondeterministic=False,
            kwargs={"game": game},
        )


_register_dream_envs()
