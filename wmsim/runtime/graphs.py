"""A bundle's graphs in onnxruntime, and a state arena of dream rows on them.

:class:`Graphs` holds one session per graph and calls them by name.
:class:`Runtime` adds what a simulator needs: a preallocated arena of
``capacity`` rows of state (one per dream env), the states of the bundle's
start contexts computed once (a reset is a copy), and steps over any subset
of rows, batched into one graph call. A step of every row on the CPU, what an
in-process vector env does each step, goes through :class:`BoundStep`: two
copies of the arena with the graph's inputs and outputs bound to them; a step of
some rows (a server's batch) goes through :class:`SomeRows`, scratch buffers bound
once per batch size (:mod:`wmsim.runtime.bound_step`).

Providers: ``device="auto"`` takes CUDA when onnxruntime-gpu is installed and
sees a GPU, else the CPU, quietly: probing for CUDA on a CPU machine prints
nothing. On CUDA the arena lives on the device (:mod:`wmsim.runtime.device_arena`):
a step moves actions and noise in and rewards, continues and what is observed out;
on the CPU it is host memory.

Decoders: on the CPU, ``decoder="auto"`` decodes frames with OpenVINO where it
is installed (``wmsim[cpu]`` brings it), in bfloat16 where the CPU has it, about
twice as fast as onnxruntime (:mod:`wmsim.runtime.openvino_decode`); observe and
step always run in onnxruntime, so latents, rewards and ends never depend on it.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from wmsim.errors import UserError

try:
    import onnxruntime as ort
except ImportError:  # an extra, so that CPU and GPU users each get the one that fits
    raise UserError(
        "dream envs and serving need onnxruntime: pip install 'wmsim[cpu]', or 'wmsim[gpu]' "
        "on a machine with an NVIDIA GPU (never both)"
    ) from None

from wmsim.bundle import (
    BATCH,
    GRAPHS,
    STATE_IN,
    Bundle,
    BundleError,
    TensorInfo,
    open_bundle,
)
from wmsim.runtime import device_arena, openvino_decode, row_parts
from wmsim.runtime.bound_step import BoundStep, SomeRows

DEVICES = ("auto", "cpu", "cuda")
DECODERS = ("auto", "onnxruntime", "openvino", "openvino-int8")


def check_decoder_option(decoder: str) -> None:
    """A command's ``--decoder``: one of :data:`DECODERS`, else a UserError naming them."""
    if decoder not in DECODERS:
        raise UserError(f"--decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")


CALIBRATION_CONTEXTS, CALIBRATION_STEPS = 32, 63
"""An int8 decoder's calibration latents: this many start contexts observed, then this many
steps dreamt from them (seeded actions and noise), the same in every process."""
ARENAS = ("auto", "host", "device")
SOME_ROWS_AFTER, SOME_ROWS_KEPT = 4, 8
"""A step of some rows (a server's batch) goes through a bound step (:class:`SomeRows`, 0.03
ms faster at 64 rows, 0.08 ms to make) once its number of rows has come ``SOME_ROWS_AFTER``
times, for up to ``SOME_ROWS_KEPT`` numbers, the least recently used dropped (and counted
again from 0): a server's batches mostly come in a few sizes, one per mix of its clients."""
START_CHUNK = 8
"""Start contexts observed per call. A context's start state is computed when a reset first
draws it, with the other contexts of its chunk: start-up costs nothing however many contexts a
bundle ships (1,024 took 4.4 s to observe at once), and the same fixed chunks everywhere give
the same states in every process, in-process or served."""


def _options(threads: int | None, quiet: bool) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.log_severity_level = 4 if quiet else 3  # errors only; fatal only while probing
    if threads:
        options.intra_op_num_threads = threads
    # the cores are shared with the RL library, gRPC and numpy: no busy-waiting between calls
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _session(model: bytes | str, device: str, threads: int | None) -> ort.InferenceSession:
    """An onnxruntime session on ``device`` (auto, cpu, cuda)."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    cpu = ["CPUExecutionProvider"]
    if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
        # variable batch sizes: heuristic algorithm search, not exhaustive per new shape
        cuda = [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}), *cpu]
        session = ort.InferenceSession(model, _options(threads, True), providers=cuda)
        if "CUDAExecutionProvider" in session.get_providers():
            return session
    if device == "cuda":
        raise BundleError(
            "device 'cuda' asked for, but onnxruntime has no working CUDA provider here "
            f"(available: {', '.join(ort.get_available_providers())}); install wmsim[gpu] "
            "(onnxruntime-gpu, never together with onnxruntime) on a machine with a GPU"
        )
    return ort.InferenceSession(model, _options(threads, False), providers=cpu)


_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64",
    "tensor(int32)": "int32", "tensor(uint8)": "uint8", "tensor(bool)": "bool",
    "tensor(float16)": "float16",
}  # fmt: skip


def check_graphs(bundle: Bundle, sessions: Mapping[str, ort.InferenceSession]) -> None:
    """Each session's inputs and outputs match the spec's names, dtypes and shapes, in order.

    Raises:
        BundleError: naming the graph and the tensor that differ.
    """
    for name, session in sessions.items():
        for side, actual in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
            expected = bundle.io(name, side)
            if [a.name for a in actual] != list(expected):
                raise BundleError(
                    f"{bundle.graph(name)} has {side} {[a.name for a in actual]}, but the spec "
                    f"says {list(expected)}; export the bundle again with `wmsim export`"
                )
            for a in actual:
                info = expected[a.name]
                shape = [d if isinstance(d, int) else BATCH for d in a.shape]
                if _ORT_TYPES.get(a.type) != info.dtype or shape != list(info.shape):
                    raise BundleError(
                        f"{bundle.graph(name)}: {a.name} is {a.type} {a.shape}, but the spec "
                        f"says {info.dtype} {list(info.shape)}; export the bundle again"
                    )


class Graphs:
    """The bundle's observe, step and decode graphs as onnxruntime sessions.

    Args:
        bundle: an opened bundle, or its path.
        device: auto, cpu or cuda (see the module docstring).
        threads: cores a graph call may use (default: every core this process may run on).
            Observe and decode split each node between that many threads; on the CPU a step
            splits its rows into up to that many calls at once, each on one thread
            (:mod:`wmsim.runtime.row_parts`).
        decode: load the decode graph (latent-only clients skip it).
        decoder: what runs the decode graph: ``onnxruntime``; ``openvino`` (CPU only, bf16
            where native, else f32); ``openvino-int8`` (the same with the convolutions before the
            last two in int8, calibrated on the bundle's own latents); or ``auto``: OpenVINO on
            the CPU when it is installed, with int8 where the CPU computes it, else onnxruntime.
    """

    def __init__(
        self,
        bundle: Bundle | str | Path,
        *,
        device: str = "auto",
        threads: int | None = None,
        decode: bool = True,
        decoder: str = "auto",
    ):
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
        self.bundle = bundle if isinstance(bundle, Bundle) else open_bundle(bundle)
        names = GRAPHS if decode else ("observe", "step")
        self.sessions: dict[str, ort.InferenceSession] = {}
        for name in names:
            data = self.bundle.read_graph(name)
            try:  # a step's rows are split between threads, each call on one (see row_parts)
                self.sessions[name] = _session(data, device, 1 if name == "step" else threads)
            except BundleError:
                raise
            except Exception as error:  # onnxruntime raises its own types for bad graphs
                raise BundleError(
                    f"{self.bundle.graph(name)} cannot be loaded by onnxruntime "
                    f"{ort.__version__} ({error}); export the bundle again with `wmsim export`, "
                    "or upgrade onnxruntime if the bundle is newer"
                ) from None
        check_graphs(self.bundle, self.sessions)
        self.state_names = self.bundle.state_names
        providers = self.sessions["step"].get_providers()
        self.device = "cuda" if "CUDAExecutionProvider" in providers else "cpu"
        self.step_parts = (threads or row_parts.cores()) if self.device == "cpu" else 1
        """At most this many parts of a step's rows run at once (:mod:`row_parts`)."""
        self.decoder: str | None = None
        """What decodes frames: ``onnxruntime``, or ``openvino`` and its precision
        (``bf16``, ``f32``, ``int8+bf16``, ``int8+f32``)."""
        self._decode = self._decoder(decoder, threads) if decode else None

    def _decoder(self, decoder: str, threads: int | None) -> Callable[[np.ndarray], np.ndarray]:
        """The decode call, latents -> frames, on onnxruntime or OpenVINO (see the docstring)."""
        chosen = decoder.startswith("openvino")
        if chosen and self.device != "cpu":
            raise UserError(f"decoder {decoder!r} runs on the CPU only; pass device='cpu'")
        if chosen and not openvino_decode.available():
            raise UserError(f"decoder {decoder!r} needs OpenVINO: pip install 'wmsim[cpu]'")
        auto = decoder == "auto" and self.device == "cpu" and openvino_decode.available()
        session, self.decoder = self.sessions["decode"], "onnxruntime"

        def on_onnxruntime(latent: np.ndarray) -> np.ndarray:
            return session.run(None, {"latent": latent})[0]

        if not chosen and not auto:
            return on_onnxruntime
        try:
            graph = self.bundle.read_graph("decode")
            int8 = decoder == "openvino-int8" or (auto and openvino_decode.int8_native())
            calibration = self.calibration_latents() if int8 else None
            compiled = openvino_decode.OpenVinoDecoder(
                graph, threads=threads, calibration=calibration
            )
        except Exception as error:  # OpenVINO raises its own types for graphs it cannot take
            problem = f"{self.bundle.graph('decode')} cannot be compiled by OpenVINO ({error})"
            if auto:  # onnxruntime has loaded it: frames as exported, only slower
                warnings.warn(f"{problem}; decoding with onnxruntime", stacklevel=3)
                return on_onnxruntime
            raise BundleError(
                f"{problem}; use decoder='onnxruntime', or export the bundle again"
            ) from None
        self.decoder = f"openvino {compiled.precision}"
        return compiled

    def calibration_latents(self) -> np.ndarray:
        """Latents of the bundle's own frames, to calibrate an int8 decoder on (N, ...).

        The first :data:`CALIBRATION_CONTEXTS` start contexts observed, then
        :data:`CALIBRATION_STEPS` steps dreamt from them with seeded actions and noise.
        """
        contexts = self.bundle.start_contexts()
        n = min(CALIBRATION_CONTEXTS, len(contexts["frames"]))
        state, latent = self.observe(
            contexts["frames"][:n], contexts["actions"][:n], contexts["is_first"][:n]
        )
        out, rng = [latent], np.random.default_rng(0)
        for _ in range(CALIBRATION_STEPS):
            actions = rng.integers(len(self.bundle.actions), size=n)
            state, _, _, latent = self.step(state, actions, self.bundle.noise(n, rng))
            out.append(latent)
        return np.concatenate(out).astype(np.float32)

    def observe(
        self, frames: np.ndarray, actions: np.ndarray, is_first: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Real contexts (B, C, H, W, 3), (B, C - 1), (B, C) -> (state, latent (B, ...))."""
        feed = {"frames": frames, "actions": np.asarray(actions, np.int64), "is_first": is_first}
        *state, latent = self.sessions["observe"].run(None, feed)
        return dict(zip(self.state_names, state, strict=True)), latent

    def step(
        self, state: Mapping[str, np.ndarray], action: np.ndarray, noise: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
        """One dreamed step of B rows -> (next state, reward (B,), continue (B,), latent)."""
        feed = {STATE_IN + k: state[k] for k in self.state_names}
        feed["action"] = np.asarray(action, np.int64)
        feed["noise"] = np.asarray(noise, np.float32)  # no copy when it is float32 already
        session = self.sessions["step"]
        outputs = row_parts.run_parts(
            lambda part: session.run(None, part), feed, len(feed["action"]), self.step_parts
        )
        count = len(self.state_names)
        reward, cont, latent = outputs[count:]
        return dict(zip(self.state_names, outputs[:count], strict=True)), reward, cont, latent

    def decode(self, latent: np.ndarray) -> np.ndarray:
        """Latents (B, ...) -> frames (B, H, W, 3) uint8."""
        if self._decode is None:
            raise RuntimeError(
                "these graphs were loaded with decode=False; a latent env renders frames only "
                "when made with render_mode='rgb_array'"
            )
        return self._decode(latent)


class Runtime:
    """Dream rows on a bundle's graphs: a state arena of ``capacity`` rows.

    Rows are addressed by index. :meth:`reset` puts rows at the start of given
    start contexts; :meth:`advance` (or :meth:`step`, which adds the new latents)
    moves any subset of rows by one step in one graph call. Same arguments give
    the same results: all randomness comes in as the ``noise`` argument.

    Args:
        bundle: an opened bundle, or its path.
        capacity: rows in the arena.
        device, threads, decode, decoder: as for :class:`Graphs`.
        arena: where the state lives: ``host`` (numpy), ``device`` (onnxruntime values on the
            graphs' device, :mod:`device_arena`; on the CPU for tests), or ``auto``: the device
            on CUDA, the host on the CPU.
    """

    def __init__(
        self,
        bundle: Bundle | str | Path,
        capacity: int,
        *,
        device: str = "auto",
        threads: int | None = None,
        decode: bool = True,
        decoder: str = "auto",
        arena: str = "auto",
    ):
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        if arena not in ARENAS:
            raise ValueError(f"arena must be one of {', '.join(ARENAS)}, got {arena!r}")
        self.graphs = Graphs(bundle, device=device, threads=threads, decode=decode, decoder=decoder)
        self.bundle, self.capacity = self.graphs.bundle, capacity
        spec = self.bundle.spec
        state = self.bundle.state
        self.arena = {k: np.zeros((capacity, *t.shape), t.dtype) for k, t in state.items()}
        self.latents = np.zeros((capacity, *spec["latent"]["shape"]), spec["latent"]["dtype"])
        self.contexts = self.bundle.start_contexts()
        self.start_frames = self.contexts["frames"][:, -1]  # (N, H, W, 3): what a reset shows
        n = len(self.start_frames)
        self.start_states = {k: np.zeros((n, *t.shape), t.dtype) for k, t in state.items()}
        self.start_latents = np.zeros((n, *self.latents.shape[1:]), self.latents.dtype)
        self._observed = np.zeros(-(-n // START_CHUNK), bool)  # per chunk
        self.on_device = self._device_arena(arena, threads)
        """The arena on the graphs' device, or None: the arena is :attr:`arena` (host)."""
        self._bound: BoundStep | None = None  # made by the first step of every row (CPU)
        self._copies: tuple[tuple[dict, dict], tuple[np.ndarray, np.ndarray]] | None = None
        self._some: dict[int, SomeRows] = {}  # by rows stepped, the latest used last (CPU)
        self._some_seen: Counter[int] = Counter()

    def _device_arena(self, arena: str, threads: int | None) -> device_arena.DeviceArena | None:
        if arena == "host" or (arena == "auto" and self.graphs.device != "cuda"):
            return None
        try:
            import onnx  # noqa: F401  (the row graphs are written with it)
        except ImportError:
            if arena == "device":
                raise UserError("arena='device' needs onnx: pip install 'wmsim[gpu]'") from None
            warnings.warn("onnx is not installed: the arena stays in host memory and each step "
                          "copies its state to the GPU and back; pip install 'wmsim[gpu]'",
                          stacklevel=3)  # fmt: skip
            return None
        device, latent = self.graphs.device, TensorInfo.from_json(self.bundle.spec["latent"])
        rows = device_arena.DeviceArena(
            self.graphs.sessions, self.bundle.state, latent, self.capacity,
            device=device, session=lambda graph: _session(graph, device, threads),
        )  # fmt: skip
        self.arena = self.latents = None  # type: ignore[assignment]  # on the device instead
        return rows

    @property
    def arena_place(self) -> str:
        """Where the state arena lives: ``host`` or the device's name."""
        return "host" if self.on_device is None else self.graphs.device

    @property
    def num_contexts(self) -> int:
        """Start contexts a reset may choose from."""
        return len(self.start_frames)

    def observe_contexts(self, contexts: np.ndarray) -> None:
        """Compute the start states of ``contexts`` (and of their chunks) not computed yet."""
        chunks = np.unique(np.asarray(contexts, np.int64) // START_CHUNK)
        for chunk in chunks[~self._observed[chunks]]:
            part = slice(chunk * START_CHUNK, (chunk + 1) * START_CHUNK)
            c = {k: v[part] for k, v in self.contexts.items()}
            state, latent = self.graphs.observe(c["frames"], c["actions"], c["is_first"])
            for k, array in self.start_states.items():
                array[part] = state[k]
            self.start_latents[part] = latent
            self._observed[chunk] = True

    def _all(self, rows: np.ndarray) -> bool:
        return len(rows) == self.capacity and bool((rows == np.arange(self.capacity)).all())

    def reset(self, rows: np.ndarray, contexts: np.ndarray) -> np.ndarray:
        """Put ``rows`` at the end of start contexts ``contexts``; return their latents (n, ...)."""
        rows, contexts = np.asarray(rows, np.int64), np.asarray(contexts, np.int64)
        self.observe_contexts(contexts)
        if self.on_device is not None:
            starts = {STATE_IN + k: v[contexts] for k, v in self.start_states.items()}
            self.on_device.put(rows, starts | {device_arena.LATENT: self.start_latents[contexts]})
            return self.start_latents[contexts]
        for k, array in self.arena.items():
            array[rows] = self.start_states[k][contexts]
        self.latents[rows] = self.start_latents[contexts]
        return self.latents[rows]

    def clear(self, rows: np.ndarray) -> None:
        """Zero the state and latents of ``rows``: nothing of an earlier user stays in them."""
        rows = np.asarray(rows, np.int64)
        if self.on_device is not None:
            self.on_device.clear(rows)
            return
        for array in self.arena.values():
            array[rows] = 0
        self.latents[rows] = 0

    def step(
        self, rows: np.ndarray, actions: np.ndarray, noise: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`advance`, and the new latents of ``rows``.

        Returns:
            reward (n,), continue probability (n,), latent (n, ...) of the new frames, a copy.
        """
        reward, cont = self.advance(rows, actions, noise)
        return reward, cont, self.latents_of(rows)

    def advance(
        self, rows: np.ndarray, actions: np.ndarray, noise: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Advance ``rows`` by ``actions`` (n,) with ``noise`` (n, *noise shape) in one call.

        The new latents stay in the arena (on the device, on CUDA) until asked for.

        Returns:
            reward (n,), continue probability (n,).
        """
        rows = np.asarray(rows, np.int64)
        if len(rows) == 0:
            empty = np.zeros(0, np.float32)
            return empty, empty
        if self.on_device is not None:
            return self.on_device.step(rows, actions, noise)
        everything = self._all(rows)
        if self.graphs.device == "cpu" and everything:
            return self._step_bound(actions, noise)
        some = self._some_rows(len(rows)) if self.graphs.device == "cpu" else None
        if some is not None:
            return some.run(self.arena, self.latents, rows, actions, noise)
        state = self.arena if everything else {k: v[rows] for k, v in self.arena.items()}
        state, reward, cont, latent = self.graphs.step(state, actions, noise)
        if everything:
            self.arena = state  # the outputs are fresh arrays: no copy back
            self.latents = latent
        else:
            for k, array in self.arena.items():
                array[rows] = state[k]
            self.latents[rows] = latent
        return reward, cont

    def _step_bound(self, actions: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every row's step through the :class:`BoundStep`; the arena moves to the other copy."""
        if self._bound is None:  # from now on the arena is always one of the two copies
            spare = {k: np.empty_like(v) for k, v in self.arena.items()}
            arenas, latents = (self.arena, spare), (self.latents, np.empty_like(self.latents))
            self._copies = arenas, latents
            pairs = [(arenas[r], arenas[1 - r], latents[1 - r]) for r in (0, 1)]
            self._bound = BoundStep(self.graphs, pairs)  # set r reads copy r, writes the other
        (arenas, latents), read = self._copies, int(self.arena is self._copies[0][1])
        reward, cont = self._bound.run(read, actions, noise)
        self.arena, self.latents = arenas[1 - read], latents[1 - read]
        return reward, cont

    def _some_rows(self, count: int) -> SomeRows | None:
        """The bound step of ``count`` rows once that number recurs (:data:`SOME_ROWS_AFTER`)."""
        some = self._some.pop(count, None)
        if some is None:
            self._some_seen[count] += 1
            if self._some_seen[count] < SOME_ROWS_AFTER:
                return None
            some = SomeRows(self.graphs, self.arena, self.latents, count)
            if len(self._some) >= SOME_ROWS_KEPT:
                dropped = next(iter(self._some))
                del self._some[dropped]
                self._some_seen[dropped] = 0
        self._some[count] = some
        return some

    def latents_of(self, rows: np.ndarray) -> np.ndarray:
        """The current latents of ``rows`` (n, ...), a copy on the host."""
        rows = np.asarray(rows, np.int64)
        if self.on_device is not None:
            return self.on_device.latents(rows)
        return self.latents[rows]

    def frames(self, rows: np.ndarray) -> np.ndarray:
        """Decode the current frames of ``rows`` -> (n, H, W, 3) uint8."""
        rows = np.asarray(rows, np.int64)
        if self.on_device is not None and self.graphs.decoder == "onnxruntime":
            return self.on_device.frames(rows)  # the latents stay on the device
        return self.graphs.decode(self.latents_of(rows))
