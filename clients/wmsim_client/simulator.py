"""The simulator a dream env drives: rows of dream state behind one interface.

A :class:`Simulator` holds ``num_rows`` dream rows (one per env). It resets
rows to start contexts and steps any subset of them in one call; all
randomness comes in as arguments, so the env that owns the random generator
decides what a seed reproduces. :class:`LocalSimulator` runs the bundle
in-process with onnxruntime; a remote one speaks to ``wmsim serve``.

Observations are frames (``obs_type="pixels"``, (H, W, 3) uint8) or the
model's latents (``obs_type="latent"``, no decoding). A reset shows the start
context's last real frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

OBS_TYPES = ("pixels", "latent")


class Simulator(Protocol):
    """Dream rows; see the module docstring."""

    spec: dict[str, Any]
    """The bundle's spec.json."""
    num_rows: int
    num_contexts: int
    """Start contexts a reset may choose from."""
    obs_type: str

    def reset(self, rows: np.ndarray, contexts: np.ndarray) -> np.ndarray:
        """Put ``rows`` at the end of start contexts ``contexts``; return their observations."""

    def step(
        self, rows: np.ndarray, actions: np.ndarray, noise: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step ``rows`` -> (observations, reward (n,) float32, continue probability (n,))."""

    def frames(self, rows: np.ndarray) -> np.ndarray:
        """The current frames of ``rows`` (n, H, W, 3) uint8, for rendering."""

    def close(self) -> None:
        """Release the rows."""


class LocalSimulator:
    """A bundle run in this process by :class:`wmsim_server.runtime.Runtime`.

    Args:
        bundle: the bundle's path.
        num_rows: dream rows (envs).
        obs_type: pixels or latent.
        device: auto, cpu or cuda.
        threads: onnxruntime intra-op threads (default: one per core).
        render: keep the decode graph even for latent observations, to render frames.
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
    ):
        from wmsim_server.runtime import Runtime

        if obs_type not in OBS_TYPES:
            raise ValueError(f"obs_type must be one of {', '.join(OBS_TYPES)}, got {obs_type!r}")
        decode = obs_type == "pixels" or render
        self.runtime = Runtime(bundle, num_rows, device=device, threads=threads, decode=decode)
        self.spec, self.num_rows, self.obs_type = self.runtime.bundle.spec, num_rows, obs_type
        self.num_contexts = self.runtime.num_contexts
        self._shown = np.zeros((num_rows, *self.spec["observation"]["shape"]), np.uint8)
        self._real = np.zeros(num_rows, bool)  # the row shows a real start frame, not a dream

    def reset(self, rows: np.ndarray, contexts: np.ndarray) -> np.ndarray:
        """Put ``rows`` at the end of start contexts ``contexts``; return their observations."""
        self._check_open()
        latent = self.runtime.reset(rows, contexts)
        self._shown[rows] = self.runtime.start_frames[contexts]
        self._real[rows] = True
        return self._shown[rows].copy() if self.obs_type == "pixels" else latent.copy()

    def step(
        self, rows: np.ndarray, actions: np.ndarray, noise: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step ``rows`` -> (observations, reward (n,) float32, continue probability (n,))."""
        self._check_open()
        reward, cont, latent = self.runtime.step(rows, actions, noise)
        self._real[rows] = False
        if self.obs_type == "latent":
            return latent.copy(), reward, cont
        frames = self.runtime.graphs.decode(latent)
        self._shown[rows] = frames
        return frames, reward, cont

    def frames(self, rows: np.ndarray) -> np.ndarray:
        """The current frames of ``rows`` (n, H, W, 3) uint8: real at a reset, then decoded."""
        self._check_open()
        rows = np.asarray(rows, np.int64)
        if self.obs_type == "pixels" or self._real[rows].all():
            return self._shown[rows].copy()
        dreamed = self.runtime.frames(rows)
        return np.where(self._real[rows, None, None, None], self._shown[rows], dreamed)

    def _check_open(self) -> None:
        if self.runtime is None:
            raise RuntimeError("this simulator is closed")

    def close(self) -> None:
        """Release the runtime; closing twice is allowed."""
        self.runtime = None
