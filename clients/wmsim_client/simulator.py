"""The simulator a dream env drives: rows of dreams behind one interface.

A :class:`Simulator` holds ``num_rows`` dream rows (one per env), each with its
own random generator (see :mod:`wmsim.runtime.dreams`): the env sends seeds and
actions and gets observations, rewards, continue probabilities and
terminations back, so a seed gives the same dream in-process
(:class:`LocalSimulator`) as from ``wmsim serve``
(:class:`wmsim_client.remote.RemoteSimulator`).

Observations are frames (``obs_type="pixels"``, (H, W, 3) uint8) or the
model's latents (``obs_type="latent"``, no decoding). A reset shows the start
context's last real frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

OBS_TYPES = ("pixels", "latent")
LATENTS = ("sampled", "mode")
"""How a dream takes each step's latents: drawn from the model's prediction (``sampled``,
the papers' imagination), or each latent's most likely class (``mode``). On the shipped
Breakout model, ``mode`` keeps the ball in play about as often as the real game does, where
sampling loses it in half the frames: the prediction spreads the ball's place over several
classes, and a draw often takes none of them."""


DEFAULT_LATENTS = "mode"
"""The latents a dream env takes unless told otherwise. Measured on the shipped Breakout model
(``wmsim bundle eval --policies --horizon 96``, 512 branches): with ``mode``, a paddle that
follows the ball earns 0.27 of the game's advantage in rewards over a still one across 96
steps, and the ball is drawn at its place in 72% of frames 16 steps ahead; sampled, 0.07
and 65%. The papers' sampled imagination stays one argument away."""


def check_latents(latents: str) -> None:
    """Raises ValueError unless ``latents`` is one of :data:`LATENTS`."""
    if latents not in LATENTS:
        raise ValueError(f"latents must be one of {', '.join(LATENTS)}, got {latents!r}")


class ReplicaLost(ConnectionError):
    """A replica went away, and the dream rows it held with it; the other rows are intact.

    Raised by :class:`wmsim_client.replicas.ReplicatedSimulator`; resetting the lost rows
    reopens them on the surviving replicas.
    """

    def __init__(self, message: str, *, replicas: list[str], rows: list[int]):
        super().__init__(message)
        self.replicas = replicas  # the addresses of the replicas that went away
        self.rows = rows  # the rows (sub-envs) they held


class Stepped(NamedTuple):
    """What one :meth:`Simulator.step` call returns."""

    obs: np.ndarray
    """(n, ...) observations of the stepped rows."""
    reward: np.ndarray
    """(n,) float32."""
    cont: np.ndarray
    """(n,) float32: the model's probability that the episode goes on."""
    terminated: np.ndarray
    """(n,) bool: the row's uniform draw was at least ``cont``."""
    reset_obs: np.ndarray
    """(k, ...) observations of the rows reset in the same call."""
    contexts: np.ndarray
    """(k,) int64: their start contexts."""


class Simulator(Protocol):
    """Dream rows; see the module docstring."""

    spec: dict[str, Any]
    """The bundle's spec.json."""
    num_rows: int
    num_contexts: int
    """Start contexts a reset may choose from."""
    obs_type: str
    latents: str
    """``sampled`` or ``mode`` (see :data:`LATENTS`)."""

    def reset(self, rows: np.ndarray, seeds: Sequence[int | None]) -> tuple[np.ndarray, np.ndarray]:
        """Reset ``rows``, seeding those whose seed is not None -> (observations, contexts)."""

    def step(self, rows: np.ndarray, actions: np.ndarray, resets: np.ndarray) -> Stepped:
        """Step ``rows`` with ``actions`` and reset the other rows ``resets``, in one call."""

    def frames(self, rows: np.ndarray) -> np.ndarray:
        """The current frames of ``rows`` (n, H, W, 3) uint8, for rendering."""

    def close(self) -> None:
        """Release the rows."""


class LocalSimulator:
    """Dream rows run in this process (:class:`wmsim.runtime.dreams.Dreams`).

    Args:
        bundle: the bundle's path.
        num_rows: dream rows (envs).
        obs_type: pixels or latent.
        device: auto, cpu or cuda.
        threads: onnxruntime intra-op threads (default: one per core).
        render: keep the decode graph even for latent observations, to render frames.
        latents: ``sampled`` or ``mode`` (see :data:`LATENTS`).
        decoder: what decodes frames (:class:`wmsim.runtime.graphs.Graphs`; default: OpenVINO
            on the CPU where installed, int8 where the CPU has it).
    """

    def __init__(
        self,
        bundle: str | Path,
        num_rows: int,
        *,
        obs_type: str = "pixels",
        device: str = "auto",
        threads: int | None = None,
        render: bool = False,
        latents: str = DEFAULT_LATENTS,
        decoder: str = "auto",
    ):
        from wmsim.runtime.dreams import Dreams

        if obs_type not in OBS_TYPES:
            raise ValueError(f"obs_type must be one of {', '.join(OBS_TYPES)}, got {obs_type!r}")
        check_latents(latents)
        decode = obs_type == "pixels" or render
        self.dreams: Dreams | None = Dreams(
            bundle, num_rows, device=device, threads=threads, decode=decode, decoder=decoder
        )
        self.dreams.mode[:] = latents == "mode"
        self.spec, self.num_rows, self.obs_type = self.dreams.spec, num_rows, obs_type
        self.latents = latents
        self.num_contexts = self.dreams.num_contexts

    def _live(self):
        if self.dreams is None:
            raise RuntimeError("this simulator is closed")
        return self.dreams

    def reset(self, rows: np.ndarray, seeds: Sequence[int | None]) -> tuple[np.ndarray, np.ndarray]:
        """Reset ``rows``, seeding those whose seed is not None -> (observations, contexts)."""
        dreams = self._live()
        contexts = dreams.reset(rows, seeds)
        return dreams.observations(rows, self.obs_type), contexts

    def step(self, rows: np.ndarray, actions: np.ndarray, resets: np.ndarray) -> Stepped:
        """Step ``rows`` with ``actions`` and reset the other rows ``resets``, in one call."""
        dreams = self._live()
        contexts = dreams.reset(resets)
        reward, cont, terminated = dreams.step(rows, actions)
        obs = dreams.observations(rows, self.obs_type)
        return Stepped(obs, reward, cont, terminated, dreams.observations(resets, self.obs_type),
                       contexts)  # fmt: skip

    def frames(self, rows: np.ndarray) -> np.ndarray:
        """The current frames of ``rows`` (n, H, W, 3) uint8: real at a reset, then dreamt."""
        return self._live().frames(rows)

    def close(self) -> None:
        """Release the rows; closing twice is allowed."""
        self.dreams = None
