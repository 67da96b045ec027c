"""DreamVectorEnv: N dreams of a learned Atari simulator stepped in one batched call.

It is the native vector env of the ``wmsim/<Game>-dream-v0`` ids
(``gymnasium.make_vec`` builds it through the ``vector_entry_point``) and equals
N :class:`wmsim_client.env.DreamEnv` step for step: each sub-env is one row of
the simulator, with its own random generator, seeded as a single env seeds its
row (see :mod:`wmsim.runtime.dreams`). The autoreset modes follow gymnasium's
``SyncVectorEnv``, infos included. In NEXT_STEP mode the sub-envs that ended
last step are reset in the same simulator call that steps the others: one
round trip per step to a server.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import logger, spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from wmsim_client.env import (
    DEFAULT_ENDS,
    RENDER_FPS,
    RENDER_MODES,
    check_options,
    observation_space,
    open_simulator,
    terminations,
)
from wmsim_client.simulator import DEFAULT_LATENTS, ReplicaLost, Simulator


def autoreset_mode_of(mode: AutoresetMode | str) -> AutoresetMode:
    """An AutoresetMode from a member or its value (``"NextStep"``, ``"SameStep"``, ``"Disabled"``).

    Raises:
        ValueError: naming the modes allowed.
    """
    try:
        return mode if isinstance(mode, AutoresetMode) else AutoresetMode(mode)
    except ValueError:
        names = ", ".join(repr(m.value) for m in AutoresetMode)
        raise ValueError(
            f"autoreset_mode must be an AutoresetMode or one of {names}, got {mode!r}"
        ) from None


def check_reset_mask(mask: Any, num_envs: int) -> np.ndarray:
    """A partial reset's mask, checked as SyncVectorEnv checks it.

    Raises:
        TypeError: it is no numpy array, or not of dtype bool.
        ValueError: its shape is not (num_envs,), or it selects no sub-env.
    """
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"options['reset_mask'] must be a numpy array, got {type(mask).__name__}")
    if mask.shape != (num_envs,):
        raise ValueError(f"options['reset_mask'] must have shape ({num_envs},), got {mask.shape}")
    if mask.dtype != np.bool_:
        raise TypeError(f"options['reset_mask'] must have dtype bool, got {mask.dtype}")
    if not mask.any():
        raise ValueError("options['reset_mask'] selects no sub-env: give at least one True")
    return mask


class DreamVectorEnv(VectorEnv):
    """N dreamed Atari games in one simulator; see the module docstring.

    Args:
        num_envs: sub-envs (dream rows).
        game, model, obs_type, render_mode, device, threads, decoder: as for
            :class:`wmsim_client.env.DreamEnv`.
        max_episode_steps: truncate each episode after this many steps (``make_vec``
            passes the registration's limit here); None for no limit.
        ends, latents: as for :class:`wmsim_client.env.DreamEnv`.
        autoreset_mode: NEXT_STEP (default), SAME_STEP or DISABLED, as gymnasium defines them.
        simulator: a ready simulator of ``num_envs`` rows to drive; ``model``, ``device``,
            ``threads`` and ``decoder`` are then unused.
        server, token, tls, timeout, tune_malloc: dream on a ``wmsim serve``, as for
            :class:`wmsim_client.env.DreamEnv`. A list of servers is a set of replicas: the
            sub-envs are split evenly over them (sub-envs 0..k-1 on the first, ...) and a
            vector step steps every replica at once. If one goes away, the step raises
            :class:`wmsim_client.simulator.ReplicaLost` naming it and its sub-envs; the other
            replicas keep their sessions, but that step's results are lost with the exception,
            so every sub-env must be reset before the next step: ``reset()`` reopens the lost
            sub-envs on the surviving replicas, and a seed dreams what it dreams anywhere.
    """

    def __init__(
        self,
        num_envs: int = 1,
        *,
        game: str = "Breakout",
        model: str | os.PathLike | None = None,
        obs_type: str = "pixels",
        render_mode: str | None = None,
        device: str = "auto",
        threads: int | None = None,
        decoder: str = "auto",
        max_episode_steps: int | None = None,
        ends: str = DEFAULT_ENDS,
        latents: str = DEFAULT_LATENTS,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        simulator: Simulator | None = None,
        server: str | Sequence[str] | None = None,
        token: str | None = None,
        tls: bool | str | os.PathLike = False,
        timeout: float = 30.0,
        tune_malloc: bool = False,
    ):
        self.closed = True  # until the simulator is open: nothing for close() to do
        if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        self.autoreset_mode = autoreset_mode_of(autoreset_mode)
        check_options(obs_type, render_mode, max_episode_steps, ends)
        self.ends = ends
        self.simulator: Simulator | None = open_simulator(
            game=game, model=model, num_rows=int(num_envs), obs_type=obs_type,
            render_mode=render_mode, device=device, threads=threads, simulator=simulator,
            remote={"server": server, "token": token, "tls": tls, "timeout": timeout,
                    "tune_malloc": tune_malloc},
            latents=latents, decoder=decoder,
        )  # fmt: skip
        self.closed = False
        spec = self.simulator.spec
        self.num_envs, self.game, self.obs_type = int(num_envs), game, obs_type
        self.render_mode, self.max_episode_steps = render_mode, max_episode_steps
        self.metadata = {
            "render_modes": list(RENDER_MODES),
            "render_fps": RENDER_FPS,
            "autoreset_mode": self.autoreset_mode,
            # the real game's settings the model learned from (frame skip, resize, ...):
            # a policy trained here meets the real game under them
            "real_game": dict(spec.get("env", {})),
        }
        self.single_observation_space = observation_space(spec, obs_type)
        self.single_action_space = spaces.Discrete(len(spec["actions"]))
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.action_meanings = [str(a) for a in spec["actions"]]
        space = self.single_observation_space
        self._obs = np.zeros((self.num_envs, *space.shape), space.dtype)  # the last observations
        self._elapsed = np.zeros(self.num_envs, np.int64)  # steps since each sub-env's reset
        self._ended = np.zeros(self.num_envs, bool)  # its last step ended its episode
        self._unset = np.ones(self.num_envs, bool)  # never reset: no state to step yet

    def get_action_meanings(self) -> list[str]:
        """What each action index does, as ALE names it (``NOOP``, ``FIRE``, ...)."""
        return list(self.action_meanings)

    def _live(self) -> Simulator:
        if self.simulator is None:
            raise RuntimeError("this env is closed")
        return self.simulator

    def _seeds(self, seed: int | list[int | None] | None) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, int | np.integer):
            return [int(seed) + i for i in range(self.num_envs)]
        seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"a list of seeds needs one per sub-env ({self.num_envs}): {seeds}")
        return seeds

    def reset(
        self,
        *,
        seed: int | list[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every sub-env, or those in ``options["reset_mask"]``.

        Args:
            seed: None keeps each sub-env's generator; an int ``s`` seeds sub-env i with
                ``s + i``, as gymnasium's vector envs do; a list gives one seed (or None) each.
            options: ``{"reset_mask": bool array (num_envs,)}`` resets only those sub-envs.

        Returns:
            The observations of all sub-envs (num_envs, ...) and the reset sub-envs'
            infos: ``"context"``, the index of each one's start context.
        """
        simulator = self._live()
        seeds = self._seeds(seed)
        mask = np.ones(self.num_envs, bool)
        if options is not None and "reset_mask" in options:
            mask = check_reset_mask(options["reset_mask"], self.num_envs)
        if isinstance(seed, int | np.integer):
            super().reset(seed=int(seed))  # the vector env's own np_random, unused by the dreams
        infos: dict[str, Any] = {}
        rows = np.flatnonzero(mask)
        try:
            obs, contexts = simulator.reset(rows, [seeds[i] for i in rows])
        except ReplicaLost:
            self._unset[rows] = True  # some of them were reset, unseen
            raise
        self._was_reset(rows, obs, contexts, infos)
        return self._obs.copy(), infos

    def _was_reset(
        self, rows: np.ndarray, obs: np.ndarray, contexts: np.ndarray, infos: dict[str, Any]
    ) -> None:
        """Record that ``rows`` were reset to ``contexts`` showing ``obs``; add their infos."""
        if len(rows) == 0:
            return
        self._obs[rows] = obs
        self._elapsed[rows], self._ended[rows], self._unset[rows] = 0, False, False
        self._add_rows(infos, "context", rows, contexts, np.int64)

    def _add_rows(self, infos: dict, key: str, rows: np.ndarray, values: Any, dtype: Any) -> None:
        """Put ``values`` for ``rows`` under ``key`` and set its ``_key`` mask (cf. ``_add_info``).

        The dtypes are those ``_add_info`` gives Python scalars: int64 and float64.
        """
        if len(rows) == 0:
            return
        if key not in infos:
            infos[key] = np.zeros(self.num_envs, dtype)
            infos[f"_{key}"] = np.zeros(self.num_envs, bool)
        infos[key][rows] = values
        infos[f"_{key}"][rows] = True

    def _check_step(self, actions: Any) -> np.ndarray:
        if self._unset.any():
            unset = np.flatnonzero(self._unset).tolist()
            raise RuntimeError(
                f"call reset() before step() (sub-envs {unset} have no episode: they were never "
                "reset, or a step failed when a replica went away)"
            )
        if self.autoreset_mode == AutoresetMode.DISABLED and self._ended.any():
            raise RuntimeError(
                f"sub-envs {np.flatnonzero(self._ended).tolist()} ended and autoreset is "
                "disabled: reset them with reset(options={'reset_mask': mask}) first"
            )
        n = int(self.single_action_space.n)
        array = np.asarray(actions)
        if array.shape != (self.num_envs,) or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"actions must be {self.num_envs} ints in [0, {n}), got {array.dtype} {array.shape}"
            )
        if ((array < 0) | (array >= n)).any():
            raise ValueError(f"actions must be ints in [0, {n}), got {array.tolist()}")
        return array.astype(np.int64)

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every sub-env (NEXT_STEP: reset those whose last step ended) in one batched call.

        Args:
            actions: (num_envs,) ints in ``[0, single_action_space.n)``.

        Returns:
            obs (num_envs, ...), rewards (num_envs,) float64, terminations and truncations
            (num_envs,) bool, and infos: ``"continue"`` (the continue probability) for
            stepped sub-envs, ``"context"`` for reset ones, and in SAME_STEP mode
            ``"final_obs"``/``"final_info"`` for the sub-envs whose episode ended.

        Raises:
            ReplicaLost: a replica went away (replicated servers only); reset before stepping.
        """
        simulator, actions = self._live(), self._check_step(actions)
        try:
            return self._step(simulator, actions)
        except ReplicaLost:
            self._unset[:] = True  # the other replicas' sub-envs stepped, unseen: restart all
            raise

    def _step(
        self, simulator: Simulator, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """The step of checked ``actions``: one simulator call (and a reset in SAME_STEP)."""
        rewards = np.zeros(self.num_envs, np.float64)
        terminated = np.zeros(self.num_envs, bool)
        truncated = np.zeros(self.num_envs, bool)
        infos: dict[str, Any] = {}
        resetting = np.flatnonzero(self._ended)  # NEXT_STEP only: DISABLED refused them
        rows = np.flatnonzero(~self._ended)
        stepped = simulator.step(rows, actions[rows], resetting)
        self._obs[rows] = stepped.obs
        self._elapsed[rows] += 1
        rewards[rows] = stepped.reward
        cont = np.asarray(stepped.cont, np.float64)
        terminated[rows] = terminations(stepped, self.ends)
        if self.max_episode_steps is not None:
            truncated[rows] = self._elapsed[rows] >= self.max_episode_steps
        ended = terminated | truncated
        self._was_reset(resetting, stepped.reset_obs, stepped.contexts, infos)
        if self.autoreset_mode == AutoresetMode.SAME_STEP and ended.any():
            self._final(infos, np.flatnonzero(ended), rows, cont)
            ended_rows = np.flatnonzero(ended)
            obs, contexts = simulator.reset(ended_rows, [None] * len(ended_rows))
            self._was_reset(ended_rows, obs, contexts, infos)
            ended[:] = False
        else:
            self._add_rows(infos, "continue", rows, cont, np.float64)
        self._ended = ended
        return self._obs.copy(), rewards, terminated, truncated, infos

    def _final(self, infos: dict, ended: np.ndarray, rows: np.ndarray, cont: np.ndarray) -> None:
        """SAME_STEP: the ended sub-envs' last obs and info, laid out as SyncVectorEnv does."""
        final_obs = np.full(self.num_envs, None, object)
        for i in ended:
            final_obs[i] = self._obs[i].copy()
        final_info: dict[str, Any] = {}
        in_ended = np.isin(rows, ended)
        self._add_rows(final_info, "continue", rows[in_ended], cont[in_ended], np.float64)
        mask = np.zeros(self.num_envs, bool)
        mask[ended] = True
        infos.update(final_obs=final_obs, _final_obs=mask, final_info=final_info)
        infos["_final_info"] = mask.copy()
        # an ended sub-env's own info is its reset info, as SyncVectorEnv gives it
        self._add_rows(infos, "continue", rows[~in_ended], cont[~in_ended], np.float64)

    def render(self) -> tuple[np.ndarray, ...] | None:
        """Each sub-env's current frame (H, W, 3) uint8, as a tuple like SyncVectorEnv's."""
        if self.render_mode is None:
            logger.warn("render() needs render_mode='rgb_array' at construction")
            return None
        return tuple(self._live().frames(np.arange(self.num_envs)))

    def close_extras(self, **kwargs: Any) -> None:
        """Release the simulator."""
        if self.simulator is not None:
            self.simulator.close()
            self.simulator = None
