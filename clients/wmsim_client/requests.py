"""What a simulator on a server sends and reads: StepRequests and StepResponses.

Shared by :class:`wmsim_client.remote.RemoteSimulator` (gRPC) and
:class:`wmsim_client.same_host.SameHostSimulator` (a Unix socket); each brings
its own ``_exchange`` (one request, one answer) and ``_array`` (a response's tensor
as an array the caller owns).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from wmsim.rpc import tensors
from wmsim.rpc.v1 import dream_pb2 as pb
from wmsim_client.simulator import Stepped

STEPPED = ("obs", "reward", "continue_prob", "terminated", "reset_obs", "contexts")
"""The StepResponse fields that make a Stepped, in its order."""


class ServedRows(ABC):
    """The Simulator calls as StepRequests; see the module docstring."""

    def reset(self, rows: np.ndarray, seeds: Sequence[int | None]) -> tuple[np.ndarray, np.ndarray]:
        """Reset ``rows``, seeding those whose seed is not None -> (observations, contexts)."""
        resets = [reset_of(row, seed) for row, seed in zip(rows, seeds, strict=True)]
        response = self._exchange(pb.StepRequest(resets=resets))
        return self._array(response, "reset_obs"), self._array(response, "contexts")

    def step(self, rows: np.ndarray, actions: np.ndarray, resets: np.ndarray) -> Stepped:
        """Step ``rows`` with ``actions`` and reset the other rows ``resets``, in one round trip."""
        request = pb.StepRequest(
            resets=[pb.Reset(env=int(r)) for r in resets],
            step_envs=np.asarray(rows).tolist(),
            actions=tensors.encode(np.asarray(actions, np.int64)),
        )
        response = self._exchange(request)
        return Stepped(*(self._array(response, name) for name in STEPPED))

    def frames(self, rows: np.ndarray) -> np.ndarray:
        """The current frames of ``rows`` (n, H, W, 3) uint8."""
        response = self._exchange(pb.StepRequest(frame_envs=np.asarray(rows).tolist()))
        return self._array(response, "frames")

    @abstractmethod
    def _exchange(self, request: pb.StepRequest) -> pb.StepResponse:
        """Send ``request``, return its answer (raising what the transport's errors mean)."""

    def _array(self, response: pb.StepResponse, name: str) -> np.ndarray:
        """Field ``name`` of ``response`` as an array, writable, owned by the caller."""
        return tensors.decode(getattr(response, name), name).copy()


def reset_of(row: int, seed: int | None) -> pb.Reset:
    """A Reset of env ``row`` with ``seed`` (None: its generator goes on)."""
    if seed is None:
        return pb.Reset(env=int(row))
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**64:
        raise ValueError(f"a seed is None or an int in [0, 2**64), got {seed!r}")
    return pb.Reset(env=int(row), seed=int(seed))
