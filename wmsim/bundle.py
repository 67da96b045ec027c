"""The model bundle: what ``wmsim export`` writes and the server and clients read.

A bundle is a directory ``NAME.wmsim/`` holding:

- ``spec.json``: the game, its actions, the observation, latent, noise and state
  tensors, every graph's inputs and outputs (as lists: order matters), the
  sha256 of every other file, the training summary, and the format version;
- ``observe.onnx``: real context (frames, actions, is_first) -> state, latent;
- ``step.onnx``: state, action, noise -> next state, reward, continue, latent
  (how the noise is drawn depends on the format: :data:`SAMPLING`);
- ``decode.onnx``: latent -> frame (uint8), separate so latent-only clients skip it;
- ``start_contexts.npz``: real contexts that dreams start from;
- ``config.json``: the resolved training config.

A bundle is untrusted input (it may come from anyone), so opening one checks,
before anything is loaded: the directory holds exactly ``spec.json`` and the
files it lists, as regular files (no symlinks, nothing extra); ``spec.json`` is
small and shallow; no graph keeps a tensor in an external file (onnxruntime would
read any path it names); the start contexts are few enough and small enough
unpacked, and read without pickle (``allow_pickle=False``). This module imports
numpy only, so the serving and client packages use it without torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wmsim.errors import UserError

FORMAT_VERSION = 2
"""The format ``wmsim export`` writes; :data:`SAMPLING` lists the formats this wmsim reads."""
SPEC = "spec.json"
GRAPHS = ("observe", "step", "decode")
START_CONTEXTS = "start_contexts.npz"
CONFIG = "config.json"
BATCH = "batch"
"""The name of the dynamic batch axis in every graph."""
FILES = (*(f"{g}.onnx" for g in GRAPHS), START_CONTEXTS, CONFIG)
"""The files a bundle holds beside spec.json: exactly these."""

MAX_SPEC_BYTES = 1 << 20
"""spec.json's size limit (an exported one is about 10 KB)."""
MAX_SPEC_DEPTH = 16
"""How deeply spec.json may nest objects and arrays (an exported one: 6)."""
MAX_START_CONTEXTS = 4096
"""Start contexts a bundle may hold (``wmsim export --contexts``; each is observed at start-up)."""
MAX_START_CONTEXT_BYTES = 512 << 20
"""The start contexts' size unpacked (4,096 contexts of 8 RGB 64x64 frames: 403 MB)."""

SAMPLING = {1: "gumbel-max", 2: "inverse-cdf"}
"""Per format, how the step graph turns its uniform noise into latents (``spec["noise"]``'s
``sampling`` from format 2 on). Format 1: Gumbel-max, one uniform per class of every
categorical latent. Format 2: the inverse CDF, one uniform per categorical."""
MODE_NOISE = {1: 0.5, 2: -1.0}
"""Per format, the step graph's noise that picks each latent's most likely class. Format 1:
equal Gumbel noise for every class leaves the logits' argmax. Format 2: a negative uniform
(the graph takes the argmax where u < 0)."""

STATE_IN, STATE_OUT = "state.", "next."
"""Prefixes of the state tensors' names in the graphs: observe and step output the
state as ``state.<name>`` and ``next.<name>``; step takes it as ``state.<name>``."""


class BundleError(UserError):
    """A bundle that cannot be used; the message says what is wrong and how to fix it."""


def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: shape (``"batch"`` for the dynamic axis) and numpy dtype name."""

    shape: tuple[int | str, ...]
    dtype: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorInfo:
        """From a spec entry ``{"shape": [...], "dtype": "..."}``."""
        return cls(tuple(data["shape"]), str(data["dtype"]))


@dataclass(frozen=True)
class Bundle:
    """An opened, verified bundle: its directory and its parsed ``spec.json``."""

    path: Path
    spec: dict[str, Any]

    @property
    def game(self) -> str:
        """The game's CamelCase name (``Breakout``)."""
        return self.spec["game"]

    @property
    def actions(self) -> list[str]:
        """The action meanings, in the order of the action indices."""
        return list(self.spec["actions"])

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """The uniform noise the step graph takes per row (no batch axis)."""
        return tuple(self.spec["noise"]["shape"])

    @property
    def mode_noise(self) -> float:
        """The noise value that makes the step graph take every latent's mode."""
        return MODE_NOISE[self.spec["format"]]

    def noise(self, rows: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Step-graph noise for ``rows`` rows: uniforms from ``rng``, or with None every mode."""
        shape = (rows, *self.noise_shape)
        if rng is None:
            return np.full(shape, self.mode_noise, np.float32)
        return rng.random(shape, dtype=np.float32)

    @property
    def context(self) -> int:
        """Real frames in each start context."""
        return int(self.spec["context"])

    @property
    def state(self) -> dict[str, TensorInfo]:
        """The state tensors per row (no batch axis), by name, in the graphs' order."""
        return {t["name"]: TensorInfo.from_json(t) for t in self.spec["state"]}

    @property
    def state_names(self) -> list[str]:
        """The state tensors' names, in the graphs' order."""
        return [t["name"] for t in self.spec["state"]]

    def graph(self, name: str) -> Path:
        """Path of the ONNX graph ``observe``, ``step`` or ``decode``."""
        return self.path / self.spec["graphs"][name]["file"]

    def read_graph(self, name: str) -> bytes:
        """The ONNX graph's bytes, checked against their sha256 as read (not just at open).

        Loading these bytes, rather than the path, also keeps onnxruntime from
        following a graph's pointers to weight files outside the bundle.

        Raises:
            BundleError: the file changed since the bundle was opened.
        """
        path = self.graph(name)
        data = _read_regular(self.path, path.name)
        if hashlib.sha256(data).hexdigest() != self.spec["files"][path.name]:
            _fail(self.path, f"{path.name} changed after it was verified")
        _check_internal(self.path, path.name, data)
        return data

    def io(self, graph: str, side: str) -> dict[str, TensorInfo]:
        """A graph's ``inputs`` or ``outputs``, by name, in the graph's order."""
        return {t["name"]: TensorInfo.from_json(t) for t in self.spec["graphs"][graph][side]}

    def start_contexts(self) -> dict[str, np.ndarray]:
        """``frames`` (N, C, H, W, 3) uint8, ``actions`` (N, C - 1) int64, ``is_first`` (N, C).

        The archive's arrays are checked from their headers before any is unpacked:
        the names, dtypes and shapes the spec implies, at most MAX_START_CONTEXTS
        contexts and MAX_START_CONTEXT_BYTES in all (a few MB of zeros may unpack to GBs).

        Raises:
            BundleError: the archive is damaged or breaks one of those rules.
        """
        path = self.path / START_CONTEXTS
        try:
            _check_context_headers(self, _npz_headers(path))
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except BundleError:
            raise
        except Exception as error:  # zipfile and numpy raise several kinds for a damaged archive
            _fail(self.path, f"{START_CONTEXTS} cannot be read ({str(error)[:200]})")


REQUIRED = {
    "format": int, "game": str, "actions": list, "context": int, "observation": dict,
    "latent": dict, "noise": dict, "state": list, "graphs": dict, "files": dict,
    "model": dict, "opset": int,
}  # fmt: skip


def expected_io(state_names: list[str]) -> dict[str, tuple[list[str], list[str]]]:
    """Graph name -> (input names, output names) that the bundle contract fixes, in order."""
    state_in = [STATE_IN + k for k in state_names]
    return {
        "observe": (["frames", "actions", "is_first"], [*state_in, "latent"]),
        "step": (
            [*state_in, "action", "noise"],
            [*(STATE_OUT + k for k in state_names), "reward", "continue", "latent"],
        ),
        "decode": (["latent"], ["frame"]),
    }


def _is_tensor(entry: Any, named: bool = False) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("shape"), list)
        and all(type(d) is int or d == BATCH for d in entry["shape"])
        and isinstance(entry.get("dtype"), str)
        and (not named or isinstance(entry.get("name"), str))
    )


def _check_tensors(path: Path, spec: dict[str, Any]) -> None:
    """Every tensor entry is well formed, and the graphs' names are the contract's."""
    for key in ("observation", "latent", "noise"):
        if not _is_tensor(spec[key]):
            _fail(path, f"{SPEC}[{key!r}] is not a {{shape, dtype}} entry")
    if not all(_is_tensor(t, named=True) for t in spec["state"]):
        _fail(path, f"{SPEC}['state'] holds an entry that is not a {{name, shape, dtype}}")
    if spec["context"] < 1:
        _fail(path, f"{SPEC} says the start contexts hold {spec['context']} frames")
    names = [t["name"] for t in spec["state"]]
    for graph, sides in expected_io(names).items():
        for side, expected in zip(("inputs", "outputs"), sides, strict=True):
            entries = spec["graphs"][graph][side]
            if not isinstance(entries, list) or not all(_is_tensor(t, True) for t in entries):
                _fail(path, f"{SPEC} describes the {graph} graph's {side} badly")
            if [t["name"] for t in entries] != expected:
                _fail(path, f"{SPEC} gives the {graph} graph {side} {[t['name'] for t in entries]}"
                            f", not {expected}")  # fmt: skip
    step_inputs = {t["name"]: t for t in spec["graphs"]["step"]["inputs"]}
    if step_inputs["noise"]["shape"] != [BATCH, *spec["noise"]["shape"]]:
        _fail(path, f"{SPEC}: the noise is not what the step graph takes")
    sampling = spec["noise"].get("sampling", SAMPLING[1])  # format 1 did not name it
    if sampling != SAMPLING[spec["format"]]:
        _fail(path, f"{SPEC} says its noise is drawn by {sampling!r}, but format "
                    f"{spec['format']} draws it by {SAMPLING[spec['format']]!r}")  # fmt: skip
    for t in spec["state"]:
        given = step_inputs[STATE_IN + t["name"]]
        if given["dtype"] != t["dtype"] or given["shape"] != [BATCH, *t["shape"]]:
            _fail(path, f"{SPEC}: state {t['name']!r} is not what the step graph takes")


def _fail(path: Path, problem: str, fix: str = "export it again with `wmsim export`") -> None:
    raise BundleError(f"{path} is not a usable model bundle: {problem}; {fix}")


def _check_spec(path: Path, spec: Any) -> None:
    """The spec's keys and types, its format version, and that it names every file it needs."""
    if not isinstance(spec, dict):
        _fail(path, f"{SPEC} holds {type(spec).__name__}, not an object")
    if type(spec.get("format")) is not int or spec["format"] not in SAMPLING:
        _fail(
            path,
            f"it is bundle format {spec.get('format')!r} and this wmsim reads formats "
            f"{', '.join(map(str, SAMPLING))}",
            f"export it again from its run with this wmsim (`wmsim export --run RUN --out "
            f"{path.name}` writes format {FORMAT_VERSION}), or install the wmsim that wrote it",
        )
    for key, kind in REQUIRED.items():
        if not isinstance(spec.get(key), kind) or isinstance(spec.get(key), bool):
            _fail(path, f"{SPEC} lacks {key!r} (a JSON {kind.__name__})")
    for graph in GRAPHS:
        entry = spec["graphs"].get(graph)
        if not isinstance(entry, dict) or not {"file", "inputs", "outputs"} <= set(entry):
            _fail(path, f"{SPEC} does not describe the {graph} graph")
    _check_tensors(path, spec)
    needed = [spec["graphs"][g]["file"] for g in GRAPHS] + [START_CONTEXTS, CONFIG]
    missing = [name for name in needed if name not in spec["files"]]
    if missing:
        _fail(path, f"{SPEC} has no hash for {', '.join(missing)}")


_ONNX = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node", 11: "attribute"},
    "tensor": {},
}
"""onnx.proto's messages that can hold a tensor: message -> {field number: message}."""
_EXTERNAL_DATA, _DATA_LOCATION, _EXTERNAL = 13, 14, 1
"""TensorProto's ``external_data`` and ``data_location`` fields, and its EXTERNAL value."""
_MAX_GRAPH_NESTING = 64


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("a varint runs past its message")
        byte = data[i]
        value, shift, i = value | (byte & 0x7F) << shift, shift + 7, i + 1
        if byte < 0x80:
            return value, i


def _fields(data: bytes, start: int, end: int):
    """(field number, wire type, value or (start, end) of a length-delimited field) in data."""
    i = start
    while i < end:
        key, i = _varint(data, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            value, i = (i, i + size), i + size
        elif wire in (1, 5):
            value, i = None, i + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"wire type {wire} is not used by ONNX")
        if i > end:
            raise ValueError("a field runs past its message")
        yield field, wire, value


def external_tensors(data: bytes) -> int:
    """How many tensors of a serialized ONNX model keep their data in external files.

    Walks the protobuf wire format along the messages that can hold a tensor (graphs,
    nodes' attributes, subgraphs, functions, training info), so it needs no onnx
    package and reads no tensor's data.

    Raises:
        ValueError: the bytes are not a well-formed protobuf message, or nest too deep.
    """
    found, stack = 0, [("model", 0, len(data), 0)]
    while stack:
        kind, start, end, depth = stack.pop()
        if depth > _MAX_GRAPH_NESTING:
            raise ValueError(f"messages nest deeper than {_MAX_GRAPH_NESTING}")
        children, external = _ONNX[kind], False
        for field, wire, value in _fields(data, start, end):
            if kind == "tensor":
                external |= field == _EXTERNAL_DATA or (
                    field == _DATA_LOCATION and value == _EXTERNAL
                )
            elif field in children and wire == 2:
                stack.append((children[field], *value, depth + 1))
        found += external
    return found


def _check_internal(path: Path, name: str, data: bytes) -> None:
    """A graph keeps every tensor inside its own bytes."""
    try:
        external = external_tensors(data)
    except ValueError as error:
        _fail(path, f"{name} is not an ONNX model ({error})")
    if external:
        _fail(path, f"{name} keeps {external} tensor(s) in external files, which a bundle "
                    "may not (onnxruntime would read whatever path they name)")  # fmt: skip


def _read_regular(path: Path, name: str, limit: int | None = None) -> bytes:
    """A bundle file's bytes, refusing anything but a regular file (no link, device or FIFO)."""
    try:
        fd = os.open(path / name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as error:
        kind = "a symbolic link" if (path / name).is_symlink() else f"unreadable ({error.strerror})"
        _fail(path, f"{name} is {kind}; a bundle holds regular files only")
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            _fail(path, f"{name} is not a regular file; a bundle holds regular files only")
        if limit is not None and info.st_size > limit:
            _fail(path, f"{name} is {info.st_size} bytes, over the limit of {limit}")
        return f.read()


def _check_files(path: Path, spec: dict[str, Any]) -> None:
    """The directory holds exactly spec.json and the files its spec lists.

    Each is a regular file matching its sha256, and no graph reads external data.
    """
    listed = set(spec["files"])
    if listed != set(FILES):
        odd = sorted(listed ^ set(FILES))
        _fail(path, f"{SPEC} lists {sorted(listed)}, not exactly {sorted(FILES)} ({odd!r} differ)")
    present = {entry.name: entry for entry in os.scandir(path)}
    extra = sorted(set(present) - listed - {SPEC})
    if extra:
        _fail(path, f"it holds {', '.join(map(repr, extra[:5]))}, which {SPEC} does not list; "
                    "a bundle holds exactly the files its spec lists")  # fmt: skip
    for name, digest in spec["files"].items():
        if name not in present:
            _fail(path, f"{name} is missing")
        if present[name].is_symlink() or not present[name].is_file(follow_symlinks=False):
            _fail(path, f"{name} is not a regular file (a link, a directory or a device); "
                        "a bundle holds regular files only")  # fmt: skip
        if name.endswith(".onnx"):
            data = _read_regular(path, name)
            actual = hashlib.sha256(data).hexdigest()
        else:
            data, actual = None, sha256(path / name)
        if actual != digest:
            _fail(
                path,
                f"{name} does not match its sha256 in {SPEC} (changed or truncated since export)",
            )
        if data is not None:
            _check_internal(path, name, data)


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Array name -> (shape, dtype) of an .npz archive, read from the headers alone."""
    headers = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise ValueError(f"it holds {info.filename[:100]!r}, which is not an array")
            with archive.open(info) as f:
                version = np.lib.format.read_magic(f)
                read = {(1, 0): np.lib.format.read_array_header_1_0,
                        (2, 0): np.lib.format.read_array_header_2_0}.get(version)  # fmt: skip
                if read is None:
                    raise ValueError(f"npy format {version} is not read")
                shape, _, dtype = read(f)
            headers[info.filename.removesuffix(".npy")] = (tuple(shape), dtype)
    return headers


def _check_context_headers(bundle: Bundle, headers: dict[str, tuple]) -> None:
    """The start contexts' names, dtypes, shapes, count and size, before they are unpacked."""
    expected = {
        "frames": ((bundle.context, *bundle.spec["observation"]["shape"]), "uint8"),
        "actions": ((bundle.context - 1,), "int64"),
        "is_first": ((bundle.context,), "bool"),
    }
    count = {shape[0] if shape else 0 for shape, _ in headers.values()}
    if set(headers) != set(expected) or len(count) != 1 or count == {0}:
        _fail(bundle.path, f"{START_CONTEXTS} must hold frames, actions and is_first, N >= 1 each")
    for key, (shape, dtype) in expected.items():
        given_shape, given_dtype = headers[key]
        if given_shape[1:] != shape or given_dtype != np.dtype(dtype):
            _fail(
                bundle.path,
                f"{START_CONTEXTS}[{key!r}] is {given_dtype} {given_shape[1:]} per context, "
                f"not {dtype} {shape}",
            )
    if (n := count.pop()) > MAX_START_CONTEXTS:
        _fail(bundle.path, f"{START_CONTEXTS} holds {n} contexts, over the limit of "
                           f"{MAX_START_CONTEXTS}")  # fmt: skip
    size = sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in headers.values())
    if size > MAX_START_CONTEXT_BYTES:
        _fail(bundle.path, f"{START_CONTEXTS} unpacks to {size / 2**20:.0f} MiB, over the limit "
                           f"of {MAX_START_CONTEXT_BYTES >> 20} MiB")  # fmt: skip


def _check_start_contexts(bundle: Bundle) -> None:
    bundle.start_contexts()


def _depth(value: Any) -> int:
    """How deeply a parsed JSON value nests arrays and objects (iteratively: no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack += [(v, depth + 1) for v in (item.values() if isinstance(item, dict) else item)]
    return deepest


def read_spec(path: Path) -> Any:
    """A bundle's spec.json, parsed, or a BundleError.

    It must be a regular file of at most MAX_SPEC_BYTES, nesting at most MAX_SPEC_DEPTH deep.
    """
    raw = _read_regular(path, SPEC, MAX_SPEC_BYTES)
    try:
        spec = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        _fail(path, f"{SPEC} is not valid JSON ({str(error)[:200]})")
    except RecursionError:
        _fail(path, f"{SPEC} nests deeper than the limit of {MAX_SPEC_DEPTH}")
    if _depth(spec) > MAX_SPEC_DEPTH:
        _fail(path, f"{SPEC} nests deeper than the limit of {MAX_SPEC_DEPTH}")
    return spec


def open_bundle(path: str | Path) -> Bundle:
    """Open a bundle after checking its spec, every file's sha256 and its start contexts.

    The graphs' own signatures are checked when a runtime loads them
    (:func:`wmsim.runtime.graphs.check_graphs`; ``wmsim bundle check`` does both).

    Raises:
        BundleError: naming the first problem found and the fix.
    """
    path = Path(path)
    if not path.is_dir():
        _fail(path, "no such directory", "give the path of a NAME.wmsim directory")
    if not (path / SPEC).exists() and not (path / SPEC).is_symlink():
        _fail(path, f"it has no {SPEC}")
    spec = read_spec(path)
    _check_spec(path, spec)
    _check_files(path, spec)
    bundle = Bundle(path, spec)
    _check_start_contexts(bundle)
    return bundle
