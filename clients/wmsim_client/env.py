"""DreamEnv: one dream of a learned Atari simulator as a ``gymnasium.Env``.

The env keeps the episode (step count, truncation) and the simulator keeps the
dream: its row's state and random generator (see :mod:`wmsim.runtime.dreams`).
``reset(seed=s)`` seeds that generator with the generator gymnasium would make
for ``s`` (and seeds ``np_random`` alike, as gymnasium expects, though the dream
does not draw from it), so a seed reproduces a trajectory, in-process or served.
The episode terminates when the simulator's uniform draw is at least the
model's continue probability; it is truncated only by a step limit, never by
the model. :class:`wmsim_client.vector.DreamVectorEnv` drives N rows the same
way, so one vector env of N dreams the same as N single envs seeded s, s + 1, ...

The helpers below (option checks, spaces, actions, opening a simulator) are
shared with the vector env. Nothing here imports onnxruntime, grpc or torch:
they are imported when a local or remote simulator is built.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from wmsim.errors import UserError
from wmsim.rpc.same_host import SCHEME as SAME_HOST
from wmsim.store import resolve_model
from wmsim_client.simulator import (
    DEFAULT_LATENTS,
    OBS_TYPES,
    LocalSimulator,
    Simulator,
    check_latents,
)

RENDER_MODES = ("rgb_array",)
RENDER_FPS = 15
"""Agent steps per second: Atari's 60 frames per second with the bundles' frame skip of 4."""


ENDS = ("sampled", "likely")
"""How a dream episode ends: drawn with the continue head's probability each step, or where
the head finds an end more likely than not (STORM's and DRAMA's imagination)."""
DEFAULT_ENDS = "likely"
"""How a dream env's episodes end unless told otherwise. The shipped Breakout model's continue
head puts 0.7% of end probability on ordinary steps (``wmsim bundle eval``): drawn at every
step, that ends about half of all dreams within 100 steps where no life was lost."""


def terminations(stepped: Any, ends: str) -> np.ndarray:
    """(n,) bool: which stepped rows end their episode, under ``ends`` (see :data:`ENDS`).

    Both are computed from what every simulator returns (the row's own seeded
    draw and the continue probability), so a remote env ends where an in-process one does.
    """
    if ends == "likely":
        return np.asarray(stepped.cont) < 0.5
    return np.asarray(stepped.terminated, bool)


def check_options(
    obs_type: str, render_mode: str | None, max_episode_steps: int | None, ends: str = DEFAULT_ENDS
) -> None:
    """Reject bad constructor options before any model is loaded.

    Raises:
        ValueError: naming the option, the value given and the values allowed.
    """
    if obs_type not in OBS_TYPES:
        raise ValueError(f"obs_type must be one of {', '.join(OBS_TYPES)}, got {obs_type!r}")
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(
            f"render_mode must be None or one of {', '.join(RENDER_MODES)}, got {render_mode!r} "
            "(for a window, wrap the env in gymnasium.wrappers.HumanRendering)"
        )
    if max_episode_steps is not None and (
        isinstance(max_episode_steps, bool)
        or not isinstance(max_episode_steps, int | np.integer)
        or max_episode_steps < 1
    ):
        raise ValueError(
            f"max_episode_steps must be None or a positive int, got {max_episode_steps!r}"
        )
    if ends not in ENDS:
        raise ValueError(f"ends must be one of {', '.join(ENDS)}, got {ends!r}")


def open_simulator(  # noqa: D417 (the envs document the shared options)
    *,
    game: str,
    model: str | os.PathLike | None,
    num_rows: int,
    obs_type: str,
    render_mode: str | None,
    device: str,
    threads: int | None,
    simulator: Simulator | None,
    remote: dict[str, Any] | None = None,
    latents: str = DEFAULT_LATENTS,
    decoder: str = "auto",
) -> Simulator:
    """The given simulator after checking it fits, else a remote or a local one of ``game``.

    Args:
        game, model, num_rows, obs_type, render_mode, device, threads, simulator, latents,
            decoder: as the envs take them (``num_rows`` is their number of envs).
        remote: ``server`` (``host:port``, a list of them for replicas, None for a
            LocalSimulator), ``token``, ``tls``, ``timeout`` and ``tune_malloc``, as
            :class:`wmsim_client.remote.RemoteSimulator` takes them.

    Raises:
        ValueError: the given simulator has another row count or observation type, or a
            server was given together with a model or a decoder.
        wmsim.errors.UserError: there is no bundle for ``game``, or the model is of another game.
    """
    check_latents(latents)
    if simulator is not None:
        # a simulator that does not say how it takes latents is taken to dream as the default
        latents_given = getattr(simulator, "latents", DEFAULT_LATENTS)
        given = (simulator.num_rows, simulator.obs_type, latents_given)
        if given != (num_rows, obs_type, latents):
            raise ValueError(
                f"the simulator has {given[0]} rows of {given[1]} observations with {given[2]} "
                f"latents; this env needs {num_rows} of {obs_type} with {latents}"
            )
        if simulator.spec["game"] != game:
            raise UserError(f"the simulator dreams {simulator.spec['game']}, not {game}")
        return simulator
    remote = remote or {}
    if remote.get("server") is not None:
        if model is not None:
            raise ValueError("give model= or server=, not both: a server dreams with its own model")
        if decoder != "auto":
            raise ValueError(
                f"decoder={decoder!r} applies to dreams in this process; a server decodes "
                "with its own decoder (wmsim serve --decoder)"
            )
        server = remote.pop("server")
        if isinstance(server, str) and server.startswith(SAME_HOST):
            from wmsim_client.same_host import SameHostSimulator

            if remote.get("tls"):
                raise ValueError(f"tls does not apply to a same-host server ({server})")
            built = SameHostSimulator(server, num_rows, obs_type=obs_type, latents=latents,
                                      timeout=remote.get("timeout", 30.0),
                                      tune_malloc=remote.get("tune_malloc", False))  # fmt: skip
        else:
            if isinstance(server, str):
                from wmsim_client.remote import RemoteSimulator as Remote
            else:  # replicas: rows split over them, each session pinned to its replica
                from wmsim_client.replicas import ReplicatedSimulator as Remote
            built = Remote(server, num_rows, obs_type=obs_type, latents=latents, **remote)
        source = f"the server at {built.address} serves"
    else:
        path = resolve_model(game, model)
        render = render_mode == "rgb_array"
        built = LocalSimulator(path, num_rows, obs_type=obs_type, device=device, threads=threads,
                               render=render, latents=latents, decoder=decoder)  # fmt: skip
        source = f"{path} is"
    if built.spec["game"] != game:  # e.g. WMSIM_MODEL names one game's model for all
        built.close()
        raise UserError(
            f"{source} a model of {built.spec['game']}, not {game}; make "
            f"'wmsim/{built.spec['game']}-dream-v0' or use a model of {game}"
        )
    return built


def observation_space(spec: dict[str, Any], obs_type: str) -> spaces.Box:
    """One observation's space: the frame (pixels) or the model's latent, from the bundle spec."""
    if obs_type == "pixels":
        frame = spec["observation"]
        return spaces.Box(0, 255, tuple(frame["shape"]), np.dtype(frame["dtype"]))
    latent = spec["latent"]
    low = -np.inf if latent.get("low") is None else latent["low"]
    high = np.inf if latent.get("high") is None else latent["high"]
    return spaces.Box(low, high, tuple(latent["shape"]), np.dtype(latent["dtype"]))


def action_index(action: Any, num_actions: int) -> int:
    """One action as a Python int after checking it is an integer in [0, num_actions).

    Raises:
        ValueError: the action is no integer, or out of range.
    """
    array = np.asarray(action)
    if array.shape != () or isinstance(action, bool) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"an action is an int in [0, {num_actions}), got {action!r}")
    if not 0 <= int(array) < num_actions:
        raise ValueError(f"an action is an int in [0, {num_actions}), got {int(array)}")
    return int(array)


class DreamEnv(gymnasium.Env[np.ndarray, np.int64]):
    """One dreamed Atari game: observations, rewards and episode ends from a world model.

    Args:
        game: the game, CamelCase as in ``wmsim.games.ATARI_100K``.
        model: a bundle path, a name in the model store, or a training run (exported once
            into a cache); None takes ``WMSIM_MODEL``, the store, then the bundle shipped
            with wmsim (see :func:`wmsim.store.resolve_model`).
        obs_type: ``"pixels"`` for (H, W, 3) uint8 frames, ``"latent"`` for the model's latents.
        render_mode: None or ``"rgb_array"`` (the current frame, also for latent observations).
        device: where onnxruntime runs the model: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        threads: onnxruntime intra-op threads (default: one per core).
        decoder: what decodes frames in this process: ``"auto"`` (default: OpenVINO on the
            CPU where it is installed, its first convolutions in int8 where the CPU has it;
            onnxruntime elsewhere), ``"onnxruntime"`` (the exported graph exactly, as on a
            GPU), ``"openvino"`` (bf16 or f32, no int8) or ``"openvino-int8"``. Latents,
            rewards and ends are the same whichever decodes (docs/speed.md).
        max_episode_steps: truncate episodes after this many steps. Usually None: the
            registered ids get gymnasium's TimeLimit instead.
        ends: ``"likely"`` (default): an episode ends where the continue head's probability
            falls below 0.5, as STORM and DRAMA end their imagined episodes; ``"sampled"``:
            with that probability each step, which ends dreams at random wherever the head
            puts a little end probability (see :data:`DEFAULT_ENDS`).
        latents: ``"mode"`` (default): each step's latents take their most likely class, so
            the dream follows the actions; ``"sampled"``: drawn from the model's prediction,
            as the papers imagine (see :data:`wmsim_client.simulator.DEFAULT_LATENTS`).
        simulator: a ready simulator of one row to drive; ``model``, ``device``, ``threads``,
            ``decoder`` and the server options are then unused.
        server: ``host:port`` of a ``wmsim serve`` to dream on instead of in this process
            (same seeds, same dreams); ``model``, ``device`` and ``threads`` are then unused,
            and ``decoder`` must stay ``"auto"``: the server decodes.
            A list of them is a set of replicas serving the same model (a name in it stands
            for every address it resolves to): the env's session opens on the first, and a
            reset after that replica is lost reopens it on another
            (see :mod:`wmsim_client.replicas`). ``local:PATH`` is a server on this machine
            started with ``--socket PATH``: the same contract over a Unix socket, the frames
            in shared memory (see :mod:`wmsim_client.same_host`).
        token: the server's bearer token (default: ``$WMSIM_TOKEN``).
        tls: False, True (TLS, system roots) or a PEM root certificate path.
        timeout: seconds any one server call may take.
        tune_malloc: tune this process's malloc for the server's large messages (see
            :mod:`wmsim.rpc.memory`); off by default, as it changes the whole process.
    """

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": RENDER_FPS}

    def __init__(
        self,
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
        simulator: Simulator | None = None,
        server: str | Sequence[str] | None = None,
        token: str | None = None,
        tls: bool | str | os.PathLike = False,
        timeout: float = 30.0,
        tune_malloc: bool = False,
    ):
        check_options(obs_type, render_mode, max_episode_steps, ends)
        self.ends = ends
        self.simulator: Simulator | None = open_simulator(
            game=game, model=model, num_rows=1, obs_type=obs_type, render_mode=render_mode,
            device=device, threads=threads, simulator=simulator,
            remote={"server": server, "token": token, "tls": tls, "timeout": timeout,
                    "tune_malloc": tune_malloc},
            latents=latents, decoder=decoder,
        )  # fmt: skip
        spec = self.simulator.spec
        # the real game's settings the model learned from (frame skip, resize, ...)
        self.metadata = {**self.metadata, "real_game": dict(spec.get("env", {}))}
        self.game, self.obs_type, self.render_mode = game, obs_type, render_mode
        self.max_episode_steps = max_episode_steps
        self.observation_space = observation_space(spec, obs_type)
        self.action_space = spaces.Discrete(len(spec["actions"]))
        self.action_meanings = [str(a) for a in spec["actions"]]
        self._row = np.zeros(1, np.int64)
        self._elapsed: int | None = None  # steps since the last reset; None before the first

    def get_action_meanings(self) -> list[str]:
        """What each action index does, as ALE names it (``NOOP``, ``FIRE``, ...)."""
        return list(self.action_meanings)

    def _live(self) -> Simulator:
        if self.simulator is None:
            raise RuntimeError("this env is closed")
        return self.simulator

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode at a start context drawn by the dream row; info holds its index."""
        super().reset(seed=seed)
        obs, contexts = self._live().reset(self._row, [seed])
        self._elapsed = 0
        return obs[0], {"context": int(contexts[0])}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Dream one step; info holds the model's continue probability."""
        simulator = self._live()
        if self._elapsed is None:
            raise RuntimeError("call reset() before step()")
        index = action_index(action, int(self.action_space.n))
        stepped = simulator.step(self._row, np.array([index], np.int64), self._row[:0])
        self._elapsed += 1
        limit = self.max_episode_steps
        truncated = limit is not None and self._elapsed >= limit
        cont = float(stepped.cont[0])
        terminated = bool(terminations(stepped, self.ends)[0])
        return (stepped.obs[0], float(stepped.reward[0]), terminated, truncated,
                {"continue": cont})  # fmt: skip

    def render(self) -> np.ndarray | None:
        """The current frame (H, W, 3) uint8 in ``"rgb_array"`` mode, else None."""
        if self.render_mode is None:
            gymnasium.logger.warn("render() needs render_mode='rgb_array' at construction")
            return None
        return self._live().frames(self._row)[0]

    def close(self) -> None:
        """Release the simulator; closing again does nothing."""
        if self.simulator is not None:
            self.simulator.close()
            self.simulator = None
