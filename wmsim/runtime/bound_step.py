"""The step of every row of a host arena, on buffers bound once (CPU)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from wmsim.bundle import STATE_IN, STATE_OUT
from wmsim.runtime import row_parts

if TYPE_CHECKING:
    from wmsim.runtime.graphs import Graphs


class BoundStep:
    """The step of every row of an arena, its inputs and outputs bound to fixed buffers (CPU).

    A vector env in this process steps all its rows every step. Then the step need not build
    a feed, allocate its outputs and join the parts of a split step (:mod:`row_parts`): the
    arena is kept twice, each step reads one copy and writes the other (onnxruntime's
    I/O binding), and each part of the rows is bound to its slices once. At batch 64 on a
    2-core CPU the step took 0.405 ms against 0.457 ms unbound (0.645 against 0.666 on one
    thread), with the same outputs bit for bit.

    Args:
        graphs: the graphs whose step to bind.
        arenas: the two copies of the state arena, by state name.
        latents: the two copies of the latent arena, each (rows, ...).
    """

    def __init__(
        self,
        graphs: Graphs,
        arenas: tuple[dict[str, np.ndarray], dict[str, np.ndarray]],
        latents: tuple[np.ndarray, np.ndarray],
    ):
        if graphs.device != "cpu":
            raise ValueError("a bound step runs on the CPU; on CUDA the arena is on the device")
        session, rows = graphs.sessions["step"], len(latents[0])
        self.action = np.zeros(rows, np.int64)
        self.noise = np.zeros((rows, *graphs.bundle.noise_shape), np.float32)
        self.reward, self.cont = np.zeros(rows, np.float32), np.zeros(rows, np.float32)
        self._session = session
        count = row_parts.parts(rows, graphs.step_parts)
        self._bindings: list[list[ort.IOBinding]] = []  # per copy read: one binding a part
        for read in (0, 1):
            written = 1 - read
            parts = []
            for start, stop in row_parts.bounds(rows, count):
                binding = session.io_binding()
                outputs = {"reward": self.reward, "continue": self.cont, "latent": latents[written]}
                for name in graphs.state_names:
                    binding.bind_cpu_input(STATE_IN + name, arenas[read][name][start:stop])
                    outputs[STATE_OUT + name] = arenas[written][name]
                binding.bind_cpu_input("action", self.action[start:stop])
                binding.bind_cpu_input("noise", self.noise[start:stop])
                for name, array in outputs.items():
                    part = array[start:stop]
                    binding.bind_output(name, "cpu", 0, part.dtype, part.shape, part.ctypes.data)
                parts.append(binding)
            self._bindings.append(parts)

    def run(self, read: int, actions: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, ...]:
        """Step every row from copy ``read`` into the other -> reward, continue (n,), copies."""
        self.action[...] = actions
        self.noise[...] = noise
        bindings = self._bindings[read]
        if len(bindings) == 1:
            self._session.run_with_iobinding(bindings[0])
        else:
            run = self._session.run_with_iobinding
            row_parts.workers().run([functools.partial(run, binding) for binding in bindings])
        return self.reward.copy(), self.cont.copy()  # the buffers are the next step's
