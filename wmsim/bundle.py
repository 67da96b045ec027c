"""The model bundle: what ``wmsim export`` writes and the server and clients read.

A bundle is a directory ``NAME.wmsim/`` holding:

- ``spec.json``: the game, its actions, the observation, latent, noise and state
  tensors, every graph's inputs and outputs (as lists: order matters), the
  sha256 of every other file, the training summary, and the format version;
- ``observe.onnx``: real context (frames, actions, is_first) -> state, latent;
- ``step.onnx``: state, action, noise -> next state, reward, continue, latent;
- ``decode.onnx``: latent -> frame (uint8), separate so latent-only clients skip it;
- ``start_contexts.npz``: real contexts that dreams start from;
- ``config.json``: the resolved training config.

No pickle anywhere: the npz is read with ``allow_pickle=False``. This module
imports numpy only, so the serving and client packages use it without torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wmsim.errors import UserError

FORMAT_VERSION = 1
SPEC = "spec.json"
GRAPHS = ("observe", "step", "decode")
START_CONTEXTS = "start_contexts.npz"
CONFIG = "config.json"
BATCH = "batch"
"""The name of the dynamic batch axis in every graph."""

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
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != self.spec["files"][path.name]:
            _fail(self.path, f"{path.name} changed after it was verified")
        return data

    def io(self, graph: str, side: str) -> dict[str, TensorInfo]:
        """A graph's ``inputs`` or ``outputs``, by name, in the graph's order."""
        return {t["name"]: TensorInfo.from_json(t) for t in self.spec["graphs"][graph][side]}

    def start_contexts(self) -> dict[str, np.ndarray]:
        """``frames`` (N, C, H, W, 3) uint8, ``actions`` (N, C - 1) int64, ``is_first`` (N, C)."""
        with np.load(self.path / START_CONTEXTS, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


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
    if type(spec.get("format")) is not int or spec["format"] != FORMAT_VERSION:
        _fail(
            path,
            f"it is bundle format {spec.get('format')!r} and this wmsim reads format "
            f"{FORMAT_VERSION}",
            "export it again with this wmsim, or install the wmsim that wrote it",
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


def _check_files(path: Path, spec: dict[str, Any]) -> None:
    for name, digest in spec["files"].items():
        file = path / name
        if Path(name).name != name:
            _fail(path, f"{SPEC} names a file outside the bundle, {name!r}")
        if not file.is_file():
            _fail(path, f"{name} is missing")
        if sha256(file) != digest:
            _fail(
                path,
                f"{name} does not match its sha256 in {SPEC} (changed or truncated since export)",
            )


def _check_start_contexts(bundle: Bundle) -> None:
    try:
        contexts = bundle.start_contexts()
    except Exception as error:  # numpy raises several kinds for a damaged archive
        _fail(bundle.path, f"{START_CONTEXTS} cannot be read ({error})")
    expected = {
        "frames": ((bundle.context, *bundle.spec["observation"]["shape"]), "uint8"),
        "actions": ((bundle.context - 1,), "int64"),
        "is_first": ((bundle.context,), "bool"),
    }
    count = {len(v) if v.ndim else 0 for v in contexts.values()}
    if set(contexts) != set(expected) or len(count) != 1 or count == {0}:
        _fail(bundle.path, f"{START_CONTEXTS} must hold frames, actions and is_first, N >= 1 each")
    for key, (shape, dtype) in expected.items():
        array = contexts[key]
        if array.shape[1:] != shape or array.dtype != np.dtype(dtype):
            _fail(
                bundle.path,
                f"{START_CONTEXTS}[{key!r}] is {array.dtype} {array.shape[1:]} per context, "
                f"not {dtype} {shape}",
            )


def open_bundle(path: str | Path) -> Bundle:
    """Open a bundle after checking its spec, every file's sha256 and its start contexts.

    The graphs' own signatures are checked when a runtime loads them
    (:func:`wmsim_server.runtime.check_graphs`; ``wmsim bundle check`` does both).

    Raises:
        BundleError: naming the first problem found and the fix.
    """
    path = Path(path)
    if not path.is_dir():
        _fail(path, "no such directory", "give the path of a NAME.wmsim directory")
    if not (path / SPEC).is_file():
        _fail(path, f"it has no {SPEC}")
    try:
        spec = json.loads((path / SPEC).read_text())
    except (ValueError, UnicodeDecodeError) as error:
        _fail(path, f"{SPEC} is not valid JSON ({error})")
    _check_spec(path, spec)
    _check_files(path, spec)
    bundle = Bundle(path, spec)
    _check_start_contexts(bundle)
    return bundle
