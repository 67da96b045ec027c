"""Reading a replay: memory-mapped frames, windows of consecutive steps, sampling.

Frames stay on disk and are paged in by the OS as windows are read, so a
100k-step Atari replay (1.2 GB of frames) needs no more RAM than a batch. At
most ``max_open`` frame files are mapped at a time (least recently used are
closed first), so a replay of any number of chunks stays within the open-file
limit. The small per-step fields are loaded into memory: they index the replay.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wmsim.errors import UserError
from wmsim.replay.format import CHUNK_NAME, CHUNKS, manifest_fields, read_manifest

if TYPE_CHECKING:
    from wmsim.replay.samplers import Sampler


@dataclass(frozen=True)
class Chunk:
    """One complete chunk: rows [position, position + length) of a stream."""

    seq: int
    stream: int
    position: int
    offset: int
    """Global index of the chunk's first row."""
    length: int
    path: Path
    fields: dict[str, np.ndarray]
    """The small fields (all but ``obs``), name -> (length,) array in memory."""


def _check_frames(path: Path, dtype: np.dtype, shape: tuple, length: int) -> None:
    """Check the header and size of a frame file without mapping it."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            found_shape, _, found_dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            found_shape, _, found_dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"obs.npy has .npy format {version}")
        data_start = f.tell()
    if found_dtype != dtype or tuple(found_shape) != (length, *shape):
        raise ValueError(f"obs is {found_dtype}{found_shape}, expected {dtype}{(length, *shape)}")
    if path.stat().st_size < data_start + length * int(np.prod(shape)) * dtype.itemsize:
        raise ValueError("obs.npy is truncated")


def _load_chunk(path: Path, fields: dict[str, tuple[np.dtype, tuple]]) -> dict[str, np.ndarray]:
    arrays = {}
    try:
        for name, (dtype, shape) in fields.items():
            if name == "obs":
                continue
            array = np.load(path / f"{name}.npy")
            if array.dtype != dtype or array.shape[1:] != shape:
                raise ValueError(
                    f"{name} is {array.dtype}{array.shape[1:]}, expected {dtype}{shape}"
                )
            arrays[name] = array
        if len({len(a) for a in arrays.values()}) != 1:
            raise ValueError("fields of unequal length")
        length = len(next(iter(arrays.values())))
        _check_frames(path / "obs.npy", *fields["obs"], length)
    except (OSError, ValueError, EOFError) as error:
        raise UserError(
            f"replay chunk {path} is damaged ({error}); move it out of the replay"
        ) from error
    return arrays


class Replay:
    """Read-only view of a replay directory; :meth:`refresh` picks up chunks written since.

    Steps have a global index: chunks in the order they were written, rows in
    order within a chunk. A *window* is ``length`` consecutive steps of one
    stream; windows may cross episode boundaries, which ``is_first`` marks.

    Args:
        directory: the replay directory.
        max_open: frame files kept mapped at once.

    Raises:
        UserError: the directory is missing, is no replay, or holds a damaged chunk.
    """

    def __init__(self, directory: Path, *, max_open: int = 256):
        self.directory = Path(directory)
        self.manifest: dict[str, Any] = read_manifest(self.directory)
        self.fields = manifest_fields(self.manifest)
        self.chunks: list[Chunk] = []
        self.max_open = max_open
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()  # chunk index -> frames
        self._loaded: set[str] = set()
        self._starts_cache: dict[int, np.ndarray] = {}
        self._index()
        self.refresh()

    @property
    def env(self) -> dict[str, Any]:
        """The game and preprocessing settings the data was collected with."""
        return self.manifest["env"]

    @property
    def action_meanings(self) -> list[str]:
        """Names of the actions, by index."""
        return self.manifest["action_meanings"]

    @property
    def num_steps(self) -> int:
        """Steps (rows) in all complete chunks."""
        return sum(c.length for c in self.chunks)

    def frames(self, index: int) -> np.ndarray:
        """The frames (length, H, W, 3) of chunk ``index``, memory-mapped."""
        if index in self._open:
            self._open.move_to_end(index)
            return self._open[index]
        if len(self._open) >= self.max_open:
            self._open.popitem(last=False)  # unmapped once no window refers to it
        frames = np.load(self.chunks[index].path / "obs.npy", mmap_mode="r")
        self._open[index] = frames
        return frames

    def refresh(self) -> int:
        """Load chunks completed since the last refresh; return how many."""
        root = self.directory / CHUNKS
        names = (
            sorted(p.name for p in root.iterdir() if CHUNK_NAME.match(p.name))
            if root.is_dir()
            else []
        )
        names = [name for name in names if name not in self._loaded]
        for name in names:
            seq, stream, position = (int(g) for g in CHUNK_NAME.match(name).groups())
            fields = _load_chunk(root / name, self.fields)
            length = len(fields["is_first"])
            self.chunks.append(
                Chunk(seq, stream, position, self.num_steps, length, root / name, fields)
            )
            self._loaded.add(name)
        if names:
            self._index()
        return len(names)

    def _index(self) -> None:
        """Group chunks into segments: maximal runs of one stream with no gap between them."""
        self._offsets = np.array([c.offset for c in self.chunks], np.int64)
        self._segment_of = [0] * len(self.chunks)
        self._segments: list[list[int]] = []
        by_stream: dict[int, list[int]] = {}
        for i, c in enumerate(self.chunks):
            by_stream.setdefault(c.stream, []).append(i)
        for stream, ids in by_stream.items():
            ids.sort(key=lambda i: self.chunks[i].position)
            end = None
            for i in ids:
                c = self.chunks[i]
                if end is not None and c.position < end:
                    raise UserError(
                        f"{self.directory} holds overlapping chunks of stream {stream} "
                        f"(at step {c.position}); two runs wrote it at once, keep one"
                    )
                if c.position != end:
                    self._segments.append([])
                self._segment_of[i] = len(self._segments) - 1
                self._segments[-1].append(i)
                end = c.position + c.length
        self._starts_cache.clear()

    def runs(self, names: tuple[str, ...]) -> list[dict[str, np.ndarray]]:
        """Each contiguous run of a stream, as field name -> its rows concatenated.

        Only the small fields (all but ``obs``).
        """
        return [
            {name: np.concatenate([self.chunks[i].fields[name] for i in s]) for name in names}
            for s in self._segments
        ]

    def segment_rows(self) -> list[np.ndarray]:
        """Global indices of the rows of each contiguous run of a stream, in order."""
        return [
            np.concatenate(
                [np.arange(c.offset, c.offset + c.length) for c in map(self.chunks.__getitem__, s)]
            )
            for s in self._segments
        ]

    def window_starts(self, length: int) -> np.ndarray:
        """Global indices of every step that starts a full window of ``length`` steps."""
        if length not in self._starts_cache:
            starts = [rows[: max(0, len(rows) - length + 1)] for rows in self.segment_rows()]
            self._starts_cache[length] = np.concatenate([np.zeros(0, np.int64), *starts])
        return self._starts_cache[length]

    def gather(
        self, starts: np.ndarray, length: int, fields: tuple[str, ...] | None = None
    ) -> dict[str, np.ndarray]:
        """Read the windows of ``length`` steps that begin at global indices ``starts``.

        ``fields`` limits what is read (all by default; leave out ``obs`` to read no frames).

        Returns:
            field name -> (B, T, ...) array, B = len(starts), T = length.

        Raises:
            ValueError: a start is outside the replay or too close to the end of its stream.
        """
        starts = np.asarray(starts, np.int64)
        out = {
            name: np.empty((len(starts), length, *shape), dtype)
            for name, (dtype, shape) in self.fields.items()
            if fields is None or name in fields
        }
        if len(starts) and (starts.min() < 0 or starts.max() >= self.num_steps):
            raise ValueError(f"window starts must lie in [0, {self.num_steps})")
        chunk_ids = np.searchsorted(self._offsets, starts, side="right") - 1
        for b, (start, i) in enumerate(zip(starts, chunk_ids, strict=True)):
            segment = self._segments[self._segment_of[i]]
            k = segment.index(i)
            row, filled = int(start - self.chunks[i].offset), 0
            while filled < length:
                if k >= len(segment):
                    raise ValueError(f"window at step {start} runs past the end of its stream")
                chunk = self.chunks[segment[k]]
                take = min(length - filled, chunk.length - row)
                for name in out:
                    array = self.frames(segment[k]) if name == "obs" else chunk.fields[name]
                    out[name][b, filled : filled + take] = array[row : row + take]
                filled, row, k = filled + take, 0, k + 1
        return out

    def sample(
        self, batch: int, length: int, rng: np.random.Generator, sampler: Sampler | None = None
    ) -> dict[str, np.ndarray]:
        """Sample ``batch`` windows of ``length`` steps for world-model training.

        Args:
            batch: number of windows, B.
            length: steps per window, T.
            rng: the randomness.
            sampler: how start steps are chosen; uniform when None.

        Returns:
            field name -> (B, T, ...) array.
        """
        from wmsim.replay.samplers import UniformSampler

        candidates = self.window_starts(length)
        if len(candidates) == 0:
            raise ValueError(
                f"the replay has no window of {length} consecutive steps yet "
                f"({self.num_steps} steps in all); collect more or sample shorter windows"
            )
        sampler = sampler or UniformSampler()
        return self.gather(sampler.train_starts(candidates, batch, rng), length)
