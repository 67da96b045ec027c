"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """Flush a directory entry, so a rename inside it survives a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give a new file; mkstemp's files are owner-only
_DIR_MODE = 0o777 & ~_umask()  # and mkdir a new directory; mkdtemp's are owner-only


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)  # NaN and inf are not JSON
    atomic_write_bytes(path, (text + "\n").encode())


def staging_dir(beside: Path) -> Path:
    """A new empty directory next to ``beside``, to fill and then :func:`replace_dir` into place."""
    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{beside.name}.", suffix=".tmp", dir=beside.parent))
    tmp.chmod(_DIR_MODE)
    return tmp


def replace_dir(new: Path, path: Path) -> None:
    """Move the directory ``new`` to ``path``, replacing what is there.

    The old directory is renamed aside first, so at every moment ``path`` is the
    old directory complete, briefly absent, or the new one complete; never a mix.
    """
    path = Path(path)
    aside = path.with_name(f".{path.name}.{os.getpid()}.old")
    if path.exists():
        os.replace(path, aside)
    os.replace(new, path)
    fsync_dir(path.parent)
    shutil.rmtree(aside, ignore_errors=True)
