"""A run directory's lifecycle, shared by every training loop.

A run directory holds ``config.json`` (the resolved config), ``checkpoint.pt``
(written atomically), ``metrics.jsonl`` and ``tb/`` (TensorBoard), and
whatever else its loop keeps there. :class:`RunDirectory` is the one place
that decides whether a command starts a run or resumes one, refuses a resume
with other settings, writes the config, and, while the loop runs, owns the
log and the progress bar and turns Ctrl-C or SIGTERM (a scheduler's stop)
into a checkpoint before the interrupt goes on. ``wmsim`` then says how to
resume (``cli._interrupted``).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from wmsim.configs import from_dict, to_dict
from wmsim.errors import UserError
from wmsim.files import atomic_write_json
from wmsim.train.checkpoint import CHECKPOINT, checkpoint_kind, load_checkpoint, save_checkpoint
from wmsim.train.logs import RunLog

SCHEDULE = ("eval_every", "checkpoint_every", "log_every", "eval_episodes", "eval_max_frames")
"""Training settings that only schedule side work; a resumed run may change them."""


class RunDirectory:
    """Where a run lives: start or resume it, save its checkpoints, run its loop.

    Args:
        path: the directory (``--out``); made when a new run starts.
        kind: the loop's kind (see ``checkpoint.KINDS``), the tag of its
            checkpoints; a resume refuses a run of another kind.
        resume: continue the run there (``--resume``) rather than start one.
        writer: this process writes the directory. Of the processes of a
            distributed run only rank 0 does; the others read the checkpoint
            they resume from and write nothing.

    Raises:
        UserError: ``path`` is a file, holds a run and ``resume`` is not set,
            or holds none and it is.
    """

    def __init__(self, path: Path, kind: str, *, resume: bool, writer: bool = True):
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise UserError(f"{path} is a file; --out must be a directory")
        has_checkpoint = (path / CHECKPOINT).exists()
        if has_checkpoint and not resume:
            raise UserError(
                f"{path} already holds a run; pass --resume to continue it, or another --out"
            )
        if resume and not has_checkpoint:
            raise UserError(f"{path} holds no run to resume; drop --resume to start one")
        self.path, self.kind, self.resume, self.writer = path, kind, resume, writer

    def open(
        self, config: dict[str, Any], keys: tuple[str, ...], device: torch.device
    ) -> dict[str, Any] | None:
        """Start the run with ``config``, or return the checkpoint it resumes from.

        A new run makes the directory and writes ``config.json``. A resumed run
        must be of this kind, with the same ``keys`` of ``config`` (see
        :func:`check_same_run`).
        """
        if not self.resume:
            if self.writer:
                self.path.mkdir(parents=True, exist_ok=True)
                atomic_write_json(self.path / "config.json", config)
            return None
        saved = load_checkpoint(self.path, device)
        if checkpoint_kind(saved) != self.kind:
            raise UserError(f"{self.path} holds a run of another kind; train into another --out")
        check_same_run(self.path, saved["config"], config, keys)
        return saved

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` as the run's checkpoint, tagged with the run's kind (by the writer)."""
        if self.writer:
            save_checkpoint(self.path, {"kind": self.kind, **state})

    @contextmanager
    def running(
        self, step: int, total: int, checkpoint: Callable[[], None], *, progress: bool = True
    ) -> Iterator[tuple[RunLog, tqdm]]:
        """The loop's log and progress bar, from ``step`` of ``total``; closed when it ends.

        Inside, SIGTERM raises KeyboardInterrupt as Ctrl-C does; on either,
        ``checkpoint()`` saves the run before the interrupt goes on. A process
        that is not the writer gets a log that keeps nothing and no bar.
        """
        log = RunLog(self.path, step) if self.writer else NoLog()
        bar = tqdm(total=total, initial=step, disable=not (progress and self.writer), unit="step")
        restore_sigterm = sigterm_interrupts()
        try:
            yield log, bar
        except KeyboardInterrupt:
            checkpoint()
            raise
        finally:
            restore_sigterm()
            bar.close()
            log.close()


class NoLog:
    """A :class:`RunLog` that keeps nothing: the log of a process that writes no files."""

    def log(self, step: int, kind: str, metrics: dict[str, Any]) -> None:
        """Drop ``metrics``."""

    def close(self) -> None:
        """Nothing to close."""


def check_same_run(
    run: Path,
    saved: dict[str, Any],
    asked: dict[str, Any],
    keys: tuple[str, ...] = ("preset", "game", "seed", "train"),
) -> None:
    """Refuse to resume a run with other settings, naming each difference.

    The saved settings are compared as they load: a field added to a config
    class after the run was made takes its default, as it does on resume.
    Settings named in :data:`SCHEDULE` may differ.
    """
    old = _flatten({k: to_dict(from_dict(saved.get(k))) for k in keys})
    new = _flatten({k: asked[k] for k in keys})
    differ = [
        f"{key.partition('.')[2] or key}: {old.get(key)!r} there, {new.get(key)!r} asked"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key) and key.rpartition(".")[2] not in SCHEDULE
    ]
    if differ:
        raise UserError(
            f"{run} holds a run with other settings ({'; '.join(differ)}); resume it with the "
            "same command, or train into another --out"
        )


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(config, dict):
        return {prefix: config}
    out = {}
    for key, value in config.items():
        out.update(_flatten(value, f"{prefix}{key}."))
    return {k.rstrip("."): v for k, v in out.items()}


def sigterm_interrupts() -> Callable[[], None]:
    """Make SIGTERM (a scheduler's stop) raise KeyboardInterrupt as Ctrl-C does; returns the undo.

    Signal handlers belong to the main thread; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, _interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextmanager
def deferred_interrupts() -> Iterator[Callable[[], bool]]:
    """Within, Ctrl-C and SIGTERM raise no KeyboardInterrupt; the yielded function says if one came.

    A loop polls it between steps and stops there. The processes of a distributed
    run must stop at the same step: one interrupted inside a collective would
    leave the others waiting for it. Outside the main thread nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    received = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}  # fmt: skip
    try:
        yield lambda: bool(received)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
