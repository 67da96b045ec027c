"""Appending to a replay: a lock for the collection run, and one writer per stream.

A collection run holds the replay's :class:`ReplayLock`: it checks the
directory, clears what killed writers left behind, and hands out new stream
ids. Each stream then gets its own :class:`ReplayWriter`, possibly in another
process: writers of one replay only share the chunk numbering, which
:func:`publish` takes under a file lock.
"""

from __future__ import annotations

import fcntl
import os
import queue
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from wmsim.errors import UserError
from wmsim.files import atomic_write_json, fsync_dir
from wmsim.replay.format import (
    CHUNK_NAME,
    CHUNKS,
    MANIFEST,
    chunk_name,
    manifest_fields,
    read_manifest,
)

LOCK = ".writer.lock"
SEQ_LOCK = ".seq.lock"


def _check_same_env(directory: Path, existing: dict[str, Any], wanted: dict[str, Any]) -> None:
    if existing["env"] != wanted["env"] or existing["fields"] != wanted["fields"]:
        changes = ", ".join(
            f"{k}: {existing['env'].get(k)!r} there, {v!r} asked"
            for k, v in wanted["env"].items()
            if existing["env"].get(k) != v
        )
        raise UserError(
            f"{directory} holds data collected with other settings ({changes or 'fields differ'}); "
            "collect into another directory, or ask for the same settings"
        )


def _complete_chunks(chunks: Path) -> list[tuple[int, int, int]]:
    """(seq, stream, position) of every complete chunk."""
    found = []
    for entry in chunks.iterdir():
        if entry.name.startswith("."):
            continue
        match = CHUNK_NAME.match(entry.name)
        if match is None:
            raise UserError(f"{entry} does not belong in a replay; move it out of {chunks}")
        found.append(tuple(int(g) for g in match.groups()))
    return found


def _holds_no_data(directory: Path) -> bool:
    """True if ``directory`` holds nothing but what a replay run that died at start leaves."""
    for entry in directory.iterdir():
        if entry.name == LOCK:
            continue
        if entry.name == CHUNKS and entry.is_dir():
            if any(not e.name.startswith(".") for e in entry.iterdir()):
                return False
            continue
        return False
    return True


class ReplayLock:
    """The right to add streams to a replay directory, held for one collection run.

    Creates the replay if ``directory`` is missing or empty, or checks that it
    holds a replay of the same settings. The lock is exclusive while streams
    are handed out; :meth:`share` then lets the run's worker processes hold it
    too, so no other run can start until the last of them has exited.

    Raises:
        UserError: ``directory`` is a file, holds something other than a
            replay, holds a replay of other settings, cannot be written, or is in use.
    """

    def __init__(self, directory: Path, manifest: dict[str, Any]):
        self.directory = directory = Path(directory)
        try:
            if directory.exists() and not directory.is_dir():
                raise UserError(f"{directory} is a file; --out must be a directory")
            if directory.is_dir() and not (directory / MANIFEST).exists():
                if not _holds_no_data(directory):
                    read_manifest(directory)  # raises: it is something else
            directory.mkdir(parents=True, exist_ok=True)
            self._file = acquire(directory, exclusive=True)
            try:
                self._prepare(manifest)
            except BaseException:
                self._file.close()
                raise
        except OSError as error:
            raise UserError(f"cannot write a replay to {directory}: {error.strerror}") from error

    def _prepare(self, manifest: dict[str, Any]) -> None:
        """Under the lock: write or check the manifest, clear what killed writers left."""
        if (self.directory / MANIFEST).exists():
            _check_same_env(self.directory, read_manifest(self.directory), manifest)
        elif _holds_no_data(self.directory):
            atomic_write_json(self.directory / MANIFEST, manifest)
        else:
            read_manifest(self.directory)  # raises: it is something else
        chunks = self.directory / CHUNKS
        if chunks.exists() and not chunks.is_dir():
            raise UserError(f"{chunks} is a file; a replay keeps its chunks in that directory")
        chunks.mkdir(exist_ok=True)
        for entry in chunks.glob(".tmp-*"):
            shutil.rmtree(entry, ignore_errors=True)  # left by a writer that was killed
        existing = _complete_chunks(chunks)
        self._next_stream = 1 + max((stream for _, stream, _ in existing), default=-1)

    def new_streams(self, count: int) -> list[int]:
        """Ids for ``count`` new streams, never used in this replay before."""
        first, self._next_stream = self._next_stream, self._next_stream + count
        return list(range(first, first + count))

    def share(self) -> None:
        """Let worker processes take the lock beside this one (see :func:`acquire`)."""
        fcntl.flock(self._file, fcntl.LOCK_SH)

    def release(self) -> None:
        """Give the directory back."""
        self._file.close()

    def __enter__(self) -> ReplayLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(directory: Path, *, exclusive: bool) -> Any:
    """Take the replay's writer lock without waiting; return the open lock file.

    Raises:
        UserError: another collection run holds it.
    """
    lock = open(Path(directory) / LOCK, "a")  # noqa: SIM115 (held until closed)
    try:
        fcntl.flock(lock, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise UserError(
            f"another process is writing to {directory}; wait for it, or use another directory"
        ) from None
    return lock


def publish(chunks: Path, temporary: Path, stream: int, position: int) -> None:
    """Give a fully written temporary chunk its final name, numbered after every other chunk.

    The number is taken and the rename done under one file lock, so chunk
    numbers follow the order in which chunks appear, whichever process writes them.
    """
    with open(chunks / SEQ_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        seq = 1 + max((seq for seq, _, _ in _complete_chunks(chunks)), default=-1)
        os.rename(temporary, chunks / chunk_name(seq, stream, position))
        fsync_dir(chunks)


def write_chunk(chunks: Path, stream: int, position: int, arrays: dict[str, np.ndarray]) -> None:
    """Write one chunk under a hidden name, sync it to disk, then publish it.

    Until it is published, readers do not see the chunk; after, every file is
    complete on disk. A writer killed in between leaves only the hidden
    directory, which the next :class:`ReplayLock` removes.
    """
    temporary = chunks / f".tmp-{uuid.uuid4().hex}"
    temporary.mkdir()
    for field, array in arrays.items():
        with open(temporary / f"{field}.npy", "wb") as f:
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())
    fsync_dir(temporary)
    publish(chunks, temporary, stream, position)


class _ChunkThread:
    """Writes completed chunks in the background, so emulation never waits for the disk.

    At most ``depth`` chunks wait in line; beyond that, :meth:`put` blocks. An
    error (a full disk, say) is raised again in the caller's next call.
    """

    def __init__(self, chunks: Path, depth: int = 2):
        self.chunks = chunks
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="replay-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            try:
                if self.error is None:
                    write_chunk(self.chunks, *item)
            except BaseException as error:  # handed to the caller's thread
                self.error = error
            finally:
                self.queue.task_done()
        self.queue.task_done()

    def check(self) -> None:
        """Raise the writer thread's error: a disk's as one line (UserError) with the fix."""
        if isinstance(self.error, OSError):  # a full disk, a quota, a file-size limit
            raise UserError(
                f"cannot write a replay chunk in {self.chunks.parent} ({self.error}). Every "
                "chunk written before is safe: mend that (a full disk or a size limit: free some "
                "space, or write to another --out) and run the same command again; it goes on "
                "from what is saved"
            ) from self.error
        if self.error is not None:
            raise RuntimeError(f"writing a replay chunk failed: {self.error!r}") from self.error

    def put(self, stream: int, position: int, arrays: dict[str, np.ndarray]) -> None:
        self.check()
        self.queue.put((stream, position, arrays))

    def drain(self) -> None:
        """Wait until every chunk put so far is on disk."""
        self.queue.join()
        self.check()

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join()


class ReplayWriter:
    """Appends the steps of one stream to a replay, a chunk at a time.

    Rows are buffered in memory; each full chunk is written by a background
    thread (see :func:`write_chunk`). :meth:`flush` writes the partial chunk and
    waits until every row added is on disk. A writer killed without a flush
    loses its open chunk and any chunk still being written, never a published one.

    Args:
        directory: the replay directory (see :class:`ReplayLock`).
        stream: this stream's id, from :meth:`ReplayLock.new_streams`.
        chunk_length: rows per chunk.
    """

    def __init__(self, directory: Path, stream: int, *, chunk_length: int = 1024):
        self.directory = Path(directory)
        self.stream = stream
        self.chunk_length = chunk_length
        self.fields = manifest_fields(read_manifest(self.directory))
        self._buffers = {
            name: np.zeros((chunk_length, *shape), dtype)
            for name, (dtype, shape) in self.fields.items()
        }
        self._fill = 0  # rows buffered
        self._position = 0  # rows handed to the chunk thread
        self._thread = _ChunkThread(self.directory / CHUNKS)
        self._closed = False

    @property
    def rows(self) -> int:
        """Rows added so far."""
        return self._position + self._fill

    def add(self, row: dict[str, Any]) -> None:
        """Append one step; ``row`` maps every field to its value."""
        for name, buffer in self._buffers.items():
            buffer[self._fill] = row[name]
        self._fill += 1
        if self._fill == self.chunk_length:
            self._hand_on()

    def flush(self) -> None:
        """Write the partial chunk and wait until all rows added so far are on disk."""
        if self._fill:
            self._hand_on()
        self._thread.drain()

    def close(self) -> None:
        """Flush and stop; the writer must not be used afterwards."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        finally:
            self._thread.stop()

    def __enter__(self) -> ReplayWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _hand_on(self) -> None:
        arrays = {name: buffer[: self._fill].copy() for name, buffer in self._buffers.items()}
        self._thread.put(self.stream, self._position, arrays)
        self._position += self._fill
        self._fill = 0
