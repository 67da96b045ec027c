"""The state arena resident on the graphs' device, stepped where it lives.

On CUDA an arena in host memory costs two copies a step: every stepped row's
state goes to the device and back (6 KB a row for the default model: 25 MB each
way at 4,096 rows). Here the arena lives on the device as onnxruntime values,
twice: each change reads one copy and writes the other, as
:class:`wmsim.runtime.bound_step.BoundStep` does on the CPU. Only actions, noise,
rewards, continues and what is observed (latents, frames) cross to the host:

- a step of every row binds the step graph's state inputs to one copy and its
  outputs to the other;
- a step of some rows (a server's batch) gathers them (the ``take`` graph), steps
  them, and scatters the new state into the other copy (``put``: ScatterND over the
  whole copy, a device-memory copy);
- a reset or a clear puts the start states or zeros, sent from the host (a few rows);
- frames decode from the latents on the device; only the frames come back.

``take`` and ``put`` are two small graphs made for the bundle's state with ``onnx``
(the ``gpu`` extra brings it). The same code runs on the CPU, its values in host
memory, where the tests check it against the host arena bit for bit; wmsim uses it
on CUDA (:class:`wmsim.runtime.graphs.Runtime`, ``arena="auto"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import onnxruntime as ort

from wmsim.bundle import STATE_IN, STATE_OUT, TensorInfo

LATENT = "latent"
"""The latents' name among the arena's tensors; state tensors are named ``state.<name>``."""

OPSET, IR_VERSION = 17, 8
"""What the row graphs are written for: onnxruntime 1.18 (the oldest wmsim takes) reads both."""


def row_graphs(tensors: Mapping[str, TensorInfo]) -> tuple[bytes, bytes]:
    """The ``take`` and ``put`` graphs for an arena of ``tensors`` (name -> dtype, row shape).

    take: ``arena.<name>`` (N, ...) and ``rows`` (n,) int64 -> ``rows.<name>`` (n, ...).
    put: ``arena.<name>`` (N, ...), ``rows`` (n,) and ``values.<name>`` (n, ...) ->
    ``out.<name>`` (N, ...), the arena with those rows replaced (rows must not repeat).
    """
    from onnx import TensorProto, helper  # the gpu extra; the host arena does without

    def value(name: str, info: TensorInfo, rows: str) -> object:
        element = helper.np_dtype_to_tensor_dtype(np.dtype(info.dtype))
        return helper.make_tensor_value_info(name, element, [rows, *info.shape])

    rows = helper.make_tensor_value_info("rows", TensorProto.INT64, ["n"])
    arena = [value(f"arena.{k}", t, "N") for k, t in tensors.items()]
    gathers = [helper.make_node("Gather", [f"arena.{k}", "rows"], [f"rows.{k}"], axis=0)
               for k in tensors]  # fmt: skip
    take = helper.make_graph(
        gathers, "take", [*arena, rows], [value(f"rows.{k}", t, "n") for k, t in tensors.items()]
    )
    axis = helper.make_tensor("axis", TensorProto.INT64, [1], [1])
    index = helper.make_node("Unsqueeze", ["rows", "axis"], ["index"])  # (n, 1): whole rows
    put = helper.make_graph(
        [index, *(helper.make_node("ScatterND", [f"arena.{k}", "index", f"values.{k}"],
                                   [f"out.{k}"]) for k in tensors)],
        "put", [*arena, rows, *(value(f"values.{k}", t, "n") for k, t in tensors.items())],
        [value(f"out.{k}", t, "N") for k, t in tensors.items()], initializer=[axis],
    )  # fmt: skip

    def model(graph) -> bytes:
        opset = [helper.make_opsetid("", OPSET)]
        made = helper.make_model(graph, opset_imports=opset, ir_version=IR_VERSION)
        return made.SerializeToString()

    return model(take), model(put)


class DeviceArena:
    """``capacity`` rows of a bundle's state and latents on ``device``; see the module docstring.

    Args:
        sessions: the bundle's onnxruntime sessions by graph name (``step``, ``decode`` if any).
        state: the bundle's state tensors by name (dtype, shape of one row).
        latent: the latent of one row.
        capacity: rows.
        device: ``cuda`` or ``cpu``, where the sessions run.
        session: makes a session on ``device`` from ONNX bytes (for the row graphs).
    """

    def __init__(
        self,
        sessions: Mapping[str, ort.InferenceSession],
        state: Mapping[str, TensorInfo],
        latent: TensorInfo,
        capacity: int,
        *,
        device: str,
        session: Callable[[bytes], ort.InferenceSession],
    ):
        self.sessions, self.capacity, self.device = sessions, capacity, device
        self.state_names = list(state)
        self.tensors = {**{STATE_IN + k: t for k, t in state.items()}, LATENT: latent}
        take, put = row_graphs(self.tensors)
        self._take, self._put = session(take), session(put)
        self._take_latent = session(row_graphs({LATENT: latent})[0])
        self._copies = tuple(
            {k: self._on_device(np.zeros((capacity, *t.shape), t.dtype))
             for k, t in self.tensors.items()}
            for _ in range(2)
        )  # fmt: skip
        self._current = 0  # the copy that holds the arena; the other is written next

    def _on_device(self, array: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0)

    @property
    def arena(self) -> dict[str, ort.OrtValue]:
        """The arena's tensors on the device, by name (``state.<name>`` and ``latent``)."""
        return self._copies[self._current]

    def _all(self, rows: np.ndarray) -> bool:
        return len(rows) == self.capacity and bool((rows == np.arange(self.capacity)).all())

    def put(self, rows: np.ndarray, values: Mapping[str, np.ndarray | ort.OrtValue]) -> None:
        """Replace ``rows`` (n,) of every tensor with ``values`` (n, ...), host or device."""
        binding, written = self._put.io_binding(), self._copies[1 - self._current]
        binding.bind_cpu_input("rows", np.ascontiguousarray(rows, np.int64))
        for name, array in self.arena.items():
            binding.bind_ortvalue_input(f"arena.{name}", array)
            value = values[name]
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(f"values.{name}", value)
            else:
                dtype = np.dtype(self.tensors[name].dtype)
                binding.bind_cpu_input(f"values.{name}", np.ascontiguousarray(value, dtype))
            binding.bind_ortvalue_output(f"out.{name}", written[name])
        self._put.run_with_iobinding(binding)
        self._current = 1 - self._current

    def clear(self, rows: np.ndarray) -> None:
        """Zero ``rows`` of every tensor."""
        n = len(rows)
        self.put(rows, {k: np.zeros((n, *t.shape), t.dtype) for k, t in self.tensors.items()})

    def _taken(self, session: ort.InferenceSession, rows: np.ndarray) -> dict[str, ort.OrtValue]:
        """``rows`` of the arena's tensors that ``session`` (a take graph) reads, on the device."""
        binding = session.io_binding()
        binding.bind_cpu_input("rows", np.ascontiguousarray(rows, np.int64))
        names = [i.name.removeprefix("arena.") for i in session.get_inputs() if i.name != "rows"]
        for name in names:
            binding.bind_ortvalue_input(f"arena.{name}", self.arena[name])
            binding.bind_output(f"rows.{name}", self.device)
        session.run_with_iobinding(binding)
        return dict(zip(names, binding.get_outputs(), strict=True))

    def latent_values(self, rows: np.ndarray) -> ort.OrtValue:
        """The latents of ``rows`` (n, ...) on the device."""
        if self._all(rows):
            return self.arena[LATENT]
        return self._taken(self._take_latent, rows)[LATENT]

    def latents(self, rows: np.ndarray) -> np.ndarray:
        """The latents of ``rows`` (n, ...), copied to the host."""
        latents = self.latent_values(np.asarray(rows, np.int64)).numpy()
        # on the CPU that is a view of the arena's copy, which a later step overwrites
        return latents.copy() if self.device == "cpu" else latents

    def step(
        self, rows: np.ndarray, actions: np.ndarray, noise: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Advance ``rows`` (n,) by ``actions`` (n,) with ``noise`` -> reward, continue (n,)."""
        rows = np.asarray(rows, np.int64)
        everything = self._all(rows)
        state = self.arena if everything else self._taken(self._take, rows)
        session = self.sessions["step"]
        binding = session.io_binding()
        binding.bind_cpu_input("action", np.ascontiguousarray(actions, np.int64))
        binding.bind_cpu_input("noise", np.ascontiguousarray(noise, np.float32))
        for name in self.state_names:
            binding.bind_ortvalue_input(STATE_IN + name, state[STATE_IN + name])
        # the step's outputs -> the arena's names: next.<name> -> state.<name>, latent -> latent
        kept = {STATE_OUT + k: STATE_IN + k for k in self.state_names} | {LATENT: LATENT}
        written = self._copies[1 - self._current]
        for output, key in kept.items():
            if everything:  # straight into the other copy
                binding.bind_ortvalue_output(output, written[key])
            else:
                binding.bind_output(output, self.device)
        binding.bind_output("reward", "cpu")
        binding.bind_output("continue", "cpu")
        session.run_with_iobinding(binding)
        *new, reward, cont = binding.get_outputs()  # in the order bound
        if everything:
            self._current = 1 - self._current
        else:
            self.put(rows, dict(zip(kept.values(), new, strict=True)))
        return reward.numpy(), cont.numpy()

    def frames(self, rows: np.ndarray) -> np.ndarray:
        """Decode the latents of ``rows`` on the device -> frames (n, H, W, 3) uint8 on the host."""
        session = self.sessions["decode"]
        binding = session.io_binding()
        binding.bind_ortvalue_input("latent", self.latent_values(np.asarray(rows, np.int64)))
        binding.bind_output(session.get_outputs()[0].name, "cpu")
        session.run_with_iobinding(binding)
        return binding.get_outputs()[0].numpy()
