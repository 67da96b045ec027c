"""wmsim_client: gymnasium Env and VectorEnv over a dream simulator, local or remote.

It never imports torch (enforced by ``tests/test_import_hygiene.py``), so any RL
library can use dream environments without the training stack. The
Stable-Baselines3 adapter, which needs torch, is imported on its own:
``from wmsim_client.sb3 import SB3VecEnv``.
"""

from wmsim_client.env import DreamEnv
from wmsim_client.simulator import LocalSimulator, Simulator
from wmsim_client.vector import DreamVectorEnv

__all__ = ["DreamEnv", "DreamVectorEnv", "LocalSimulator", "Simulator"]
