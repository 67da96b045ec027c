"""SB3VecEnv: a dream vector env as a Stable-Baselines3 ``VecEnv``.

SB3 has its own vector API and cannot drive a gymnasium ``VectorEnv``: ``reset()``
returns observations only (infos go to ``reset_infos``), ``step`` returns
``obs, rewards, dones, infos`` with ``infos`` a list of dicts, and an ended
episode resets in the same step with its last observation in
``infos[i]["terminal_observation"]``. So the adapter drives a vector env in
gymnasium's SAME_STEP mode and moves ``final_obs``/``final_info`` to those places.

This module imports stable_baselines3 and so torch; ``import wmsim_client`` does
not import it.

Example::

    venv = SB3VecEnv(num_envs=8, game="Breakout", max_episode_steps=1000)
    stable_baselines3.PPO("CnnPolicy", venv).learn(100_000)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from wmsim_client.vector import DreamVectorEnv


def env_info(infos: dict[str, Any], i: int) -> dict[str, Any]:
    """Sub-env ``i``'s info out of gymnasium's dict of arrays with ``_key`` masks."""
    info = {}
    for key, value in infos.items():
        mask = infos.get(f"_{key}")
        if mask is None or not mask[i]:  # a mask itself, or not about sub-env i
            continue
        if isinstance(value, dict):
            info[key] = env_info(value, i)
        else:
            item = value[i]
            info[key] = item.item() if isinstance(item, np.generic) else item
    return info


class SB3VecEnv(VecEnv):
    """A SAME_STEP gymnasium vector env (a DreamVectorEnv by default) as an SB3 VecEnv.

    Args:
        venv: the vector env to adapt, in SAME_STEP autoreset mode, for example
            ``gymnasium.make_vec("wmsim/Breakout-dream-v0", num_envs=8,
            autoreset_mode=AutoresetMode.SAME_STEP)``. None builds a DreamVectorEnv.
        **kwargs: without ``venv``: DreamVectorEnv's options (``num_envs``, ``game``, ...).
    """

    def __init__(self, venv: VectorEnv | None = None, **kwargs: Any):
        if venv is None:
            venv = DreamVectorEnv(**{"autoreset_mode": AutoresetMode.SAME_STEP, **kwargs})
        elif kwargs:
            raise TypeError(f"give a venv or the options to build one, not both ({list(kwargs)})")
        mode = venv.metadata.get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"SB3 resets ended episodes in the same step: the vector env's autoreset mode "
                f"must be AutoresetMode.SAME_STEP, not {mode}"
            )
        self.venv = venv  # before VecEnv.__init__, which reads render_mode through get_attr
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        """Reset every sub-env with the seeds given to :meth:`seed`, if any; they are used once."""
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        options = self._options[0]
        if any(o != options for o in self._options):
            raise ValueError("a batched reset takes one options dict for all sub-envs")
        obs, infos = self.venv.reset(seed=seeds, options=options or None)
        self.reset_infos = [env_info(infos, i) for i in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Keep the actions (num_envs,) for :meth:`step_wait`."""
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Step; ended sub-envs come back reset, their last obs in ``terminal_observation``."""
        if self._actions is None:
            raise RuntimeError("call step_async(actions) before step_wait()")
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        self._actions = None
        dones = terminated | truncated
        env_infos = []
        for i in range(self.num_envs):
            info = env_info(infos, i)
            if dones[i]:
                # the top-level info of an ended sub-env is its reset info (gymnasium's layout)
                self.reset_infos[i] = {k: v for k, v in info.items() if not k.startswith("final")}
                info = {**info.get("final_info", {}), "terminal_observation": infos["final_obs"][i]}
            info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            env_infos.append(info)
        return obs, rewards.astype(np.float32), dones, env_infos

    def close(self) -> None:
        """Close the vector env."""
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Each sub-env's current frame (H, W, 3) uint8; Nones when not rendering rgb_array."""
        if self.render_mode != "rgb_array":
            message = f"get_images() needs render_mode='rgb_array', not {self.render_mode}"
            warnings.warn(message, stacklevel=2)
            return [None] * self.num_envs
        return list(self.venv.render())

    # A vector env is one object: its attributes and methods belong to all sub-envs at once.

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The vector env's attribute, once per sub-env asked for."""
        value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the vector env; only for all sub-envs at once.

        Raises:
            ValueError: ``indices`` names only some sub-envs.
        """
        if sorted(self._get_indices(indices)) != list(range(self.num_envs)):
            raise ValueError(f"{attr_name} is shared by all sub-envs: set it for all or none")
        setattr(self.venv, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs
    ) -> list[Any]:
        """Call the vector env's method once; its result is repeated per sub-env asked for."""
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(
        self, wrapper_class: type[gymnasium.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        """False for every sub-env: they are rows of one vector env, not wrapped gymnasium envs."""
        return [False for _ in self._get_indices(indices)]
