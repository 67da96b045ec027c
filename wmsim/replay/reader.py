"""Reading a replay: memory-mapped chunks, windows of consecutive steps, sampling.

Frames stay on disk and are paged in by the OS as windows are read, so a
100k-step Atari replay (1.2 GB of frames) needs no more RAM than a batch. The
small per-step fields are loaded into memory: they index the replay.
"""

from __future__ import annotations

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
    arrays: dict[str, np.ndarray]
    """Field name -> (length, ...) array; ``obs`` is memory-mapped."""


def _load_chunk(path: Path, fields: dict[str, tuple[np.dtype, tuple]]) -> dict[str, np.ndarray]:
    arrays = {}
    try:
        for name, (dtype, shape) in fields.items():
            array = np.load(path / f"{name}.npy", mmap_mode="r" if name == "obs" else None)
            if array.dtype != dtype or array.shape[1:] != shape:
                raise ValueError(
                    f"{name} is {array.dtype}{array.shape[1:]}, expected {dtype}{shape}"
                )
            arrays[name] = array
    except (OSError, ValueError) as error:
        raise UserError(
            f"replay chunk {path} is damaged ({error}); move it out of the replay"
        ) from error
    if len({len(a) for a in arrays.values()}) != 1:
        raise UserError(f"replay chunk {path} is damaged (fields of unequal length)")
    return arrays


class Replay:
    """Read-only view of a replay directory; :meth:`refresh` picks up chunks written since.

    Steps have a global index: chunks in the order they were written, rows in
    order within a chunk. A *window* is ``length`` consecutive steps of one
    stream; windows may cross episode boundaries, which ``is_first`` marks.

    Raises:
        UserError: the directory is missing, is no replay, or holds a damaged chunk.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.manifest: dict[str, Any] = read_manifest(self.directory)
        self.fields = manifest_fields(self.manifest)
        self.chunks: list[Chunk] = []
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

    def refresh(self) -> int:
        """Load chunks completed since the last refresh; return how many."""
        root = self.directory / CHUNKS
        names = (
            sorted(
                p.name
                for p in root.iterdir()
                if CHUNK_NAME.match(p.name) and p.name not in self._loaded
            )
            if root.is_dir()
            else []
        )
        for name in names:
            seq, stream, position = (int(g) for g in CHUNK_NAME.match(name).groups())
            arrays = _load_chunk(root / name, self.fields)
            length = len(arrays["obs"])
            self.chunks.append(Chunk(seq, stream, position, self.num_steps, length, arrays))
            self._loaded.add(name)
        if names:
            self._index()
        return len(names)

    def _index(self) -> None:
        """Find, for every chunk, the contiguous run of its stream it belongs to."""
        self._offsets = np.array([c.offset for c in self.chunks], np.int64)
        # segment: maximal run of chunks of one stream with no gap between them
        self._segment_of: list[int] = [0] * len(self.chunks)
        self._segment_start: list[int] = [0] * len(self.chunks)  # chunk's row within its segment
        self._segments: list[list[int]] = []
        by_stream: dict[int, list[int]] = {}
        for i, c in enumerate(self.chunks):
            by_stream.setdefault(c.stream, []).append(i)
        for ids in by_stream.values():
            ids.sort(key=lambda i: self.chunks[i].position)
            for i in ids:
                c = self.chunks[i]
                last = self._segments[-1][-1] if self._segments else None
                contiguous = (
                    last is not None
                    and self.chunks[last].stream == c.stream
                    and self.chunks[last].position + self.chunks[last].length == c.position
                )
                if not contiguous:
                    self._segments.append([])
                segment = self._segments[-1]
                self._segment_start[i] = sum(self.chunks[j].length for j in segment)
                self._segment_of[i] = len(self._segments) - 1
                segment.append(i)
        self._segment_length = [sum(self.chunks[j].length for j in s) for s in self._segments]
        self._starts_cache.clear()

    def runs(self, names: tuple[str, ...]) -> list[dict[str, np.ndarray]]:
        """Each contiguous run of a stream, as field name -> its rows concatenated.

        Meant for the small fields; ``obs`` would be read into memory whole.
        """
        return [
            {name: np.concatenate([self.chunks[i].arrays[name] for i in s]) for name in names}
            for s in self._segments
        ]

    def window_starts(self, length: int) -> np.ndarray:
        """Global indices of every step that starts a full window of ``length`` steps."""
        if length not in self._starts_cache:
            ranges = []
            for i, c in enumerate(self.chunks):
                room = self._segment_length[self._segment_of[i]] - self._segment_start[i]
                count = min(c.length, room - length + 1)
                if count > 0:
                    ranges.append(np.arange(c.offset, c.offset + count))
            starts = np.concatenate(ranges) if ranges else np.zeros(0, np.int64)
            self._starts_cache[length] = starts
        return self._starts_cache[length]

    def gather(self, starts: np.ndarray, length: int) -> dict[str, np.ndarray]:
        """Read the windows of ``length`` steps that begin at global indices ``starts``.

        Returns:
            field name -> (B, T, ...) array, B = len(starts), T = length.
        """
        starts = np.asarray(starts, np.int64)
        out = {
            name: np.empty((len(starts), length, *shape), dtype)
            for name, (dtype, shape) in self.fields.items()
        }
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
                for name, array in chunk.arrays.items():
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

        sampler = sampler or UniformSampler()
        return self.gather(sampler.train_starts(self, batch, length, rng), length)
