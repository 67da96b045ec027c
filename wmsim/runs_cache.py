"""A training run where a model bundle goes: exported once, cached by its checkpoint's sha256.

``wmsim serve --model RUN``, ``gymnasium.make("wmsim/<Game>-dream-v0", model=RUN)`` and
``wmsim dream --model RUN`` take, besides a bundle, a run directory of ``wmsim train``
or ``wmsim agent train --game`` (its world model), or the run's ``checkpoint.pt``.
:func:`wmsim.store.resolve_model` hands such a path to :func:`bundle_at`, which
exports the checkpoint the first time, as ``wmsim export --check --fidelity-steps 0``
would (float32 weights, 64 start contexts from episode starts of the run's replay;
onnxruntime checked against torch), into ``<cache>/<Game>-<sha256[:16]>.wmsim``,
and uses that bundle while the checkpoint's bytes stay the same. A copy of the run
finds the same bundle; a run that trains on gets a new one at its next checkpoint.

Exporting needs torch, imported only then: a bundle, or a run exported before,
loads without it (the server and the dream envs never import torch themselves).
Each call says what it did in one line: to the ``wmsim.runs`` logger where the
application has configured logging, else to stderr.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from wmsim.bundle import SPEC, Bundle, BundleError, open_bundle, sha256
from wmsim.errors import UserError

CHECKPOINT = "checkpoint.pt"
"""A run's checkpoint (:data:`wmsim.train.checkpoint.CHECKPOINT`, named here without torch)."""
RUN_CONFIG = "config.json"
"""A run's resolved config, written when it starts (a bundle has one too, beside spec.json)."""
CONTEXTS = 64
"""Start contexts an exported run ships (``wmsim export --contexts``' default)."""
EXPORTS = 3
"""Exports tried while the checkpoint keeps changing under them (a run still training)."""
GAME = re.compile(r"[A-Za-z0-9]+")

log = logging.getLogger("wmsim.runs")


def say(line: str) -> None:
    """Tell the user what happened: to ``wmsim.runs`` if logging is configured, else stderr."""
    if log.hasHandlers():
        log.info(line)
    else:
        print(f"wmsim: {line}", file=sys.stderr)


def checkpoint_of(path: Path) -> Path | None:
    """The checkpoint of a run directory or a ``checkpoint.pt``, None for a bundle.

    A directory with ``config.json`` but no checkpoint is a run that has not saved one
    yet; its checkpoint path is returned all the same, and loading it says so.

    Raises:
        UserError: ``path`` is neither a bundle, a run nor a run's checkpoint.
    """
    if path.is_dir() and os.path.lexists(path / SPEC):
        return None  # a bundle, to be checked when it is opened
    if path.is_dir() and any(os.path.lexists(path / f) for f in (CHECKPOINT, RUN_CONFIG)):
        return path / CHECKPOINT
    if path.is_file() and path.name == CHECKPOINT:
        return path
    what = "a directory without spec.json or checkpoint.pt" if path.is_dir() else "a file"
    raise UserError(
        f"{path} is neither a model bundle nor a training run ({what}): give a NAME.wmsim "
        f"directory written by `wmsim export`, or a run directory of `wmsim train` (or its "
        f"{CHECKPOINT}), which is exported on first use"
    )


def bundle_at(path: Path, cache: Path, *, report: Callable[[str], None] = say) -> Path:
    """The bundle to load for ``path``: a bundle itself, or a run's cached export.

    Args:
        path: a bundle directory, a run directory, or a run's ``checkpoint.pt``.
        cache: the directory of exported runs (``wmsim.store.home() / "cache" / "runs"``).
        report: told, in one line, whether the run was exported or its export reused.

    Raises:
        UserError: neither a bundle nor a run, or a run that cannot be exported (no
            checkpoint or a damaged one, its replay gone, no torch, a full disk), naming the fix.
    """
    checkpoint = checkpoint_of(path)
    if checkpoint is None:
        return path
    if not checkpoint.is_file():
        raise UserError(
            f"{path} is a training run without a checkpoint yet; wait for its first one "
            "(`wmsim train` saves every --checkpoint-every steps), or give a bundle"
        )
    try:
        for _ in range(EXPORTS):
            digest = sha256(checkpoint)
            with _locked(cache / f".{digest[:16]}.lock"):
                bundle = _cached(cache, digest[:16])
                if bundle is not None:
                    report(f"{path} (step {bundle.spec['training'].get('steps')}) was exported "
                           f"to {bundle.path} before; using that")  # fmt: skip
                    return bundle.path
                bundle = _export(checkpoint, cache, digest[:16])
                if sha256(checkpoint) == digest:  # what was loaded is what the name says
                    report(f"exported {path} (step {bundle.spec['training'].get('steps')}) to "
                           f"{bundle.path}; using that")  # fmt: skip
                    return bundle.path
                shutil.rmtree(bundle.path, ignore_errors=True)
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        raise UserError(
            f"cannot export {path} into {cache}: {error.strerror or error}{where}; free some "
            "space or fix the permissions, or set WMSIM_HOME to a writable directory elsewhere"
        ) from None
    raise UserError(
        f"{checkpoint} changed during each of {EXPORTS} exports (the run is still training); "
        f"give it once the run stops, or a copy of its {CHECKPOINT} in a directory of its own"
    )


def _cached(cache: Path, key: str) -> Bundle | None:
    """The usable export named by ``key``, if any; a damaged one is removed."""
    for found in sorted(cache.glob(f"*-{key}.wmsim")):
        try:
            return open_bundle(found)
        except BundleError:  # another wmsim's format, or damaged on disk: export again
            shutil.rmtree(found, ignore_errors=True)
    return None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``: two processes never export one checkpoint at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def _need_torch(run: Path) -> None:
    """Raise a UserError naming what to install when the exporter's packages are missing."""
    try:
        import torch  # noqa: F401

        import wmsim.export.writer  # noqa: F401  (onnx and onnxscript too)
    except ImportError as error:
        raise UserError(
            f"{run} is a training run, and exporting it needs {error.name}, which is not "
            "installed: `pip install torch==2.13.0 && pip install -e .` (wmsim's training "
            f"dependencies), or export it where they are with `wmsim export --run {run} --out "
            "NAME.wmsim --check` and give that bundle"
        ) from None


def _export(checkpoint: Path, cache: Path, key: str) -> Bundle:
    """Export the run of ``checkpoint`` to ``<cache>/<Game>-<key>.wmsim``, checked; return it.

    torch's global random generator is left as it was (the export draws example noise
    from it), so a seeded program runs alike whether or not this call exported.
    """
    run = checkpoint.parent
    _need_torch(run)
    import torch

    from wmsim.export.writer import AGENT_REPLAY, ExportArgs, export_run
    from wmsim.train.checkpoint import checkpoint_kind, load_checkpoint

    try:
        saved = load_checkpoint(run)
    except UserError as error:
        if "\n" not in str(error):
            raise
        # torch's unpickler explains over many lines, and suggests weights_only=False,
        # which would run any code a foreign file holds: one line, without that advice
        raise UserError(
            f"{checkpoint} is damaged, or no checkpoint of `wmsim train`: torch cannot read it "
            "as one; give the run's own checkpoint.pt, or train the run again"
        ) from error
    config = saved["config"]
    if checkpoint_kind(saved) == "env":
        raise UserError(
            f"{run} is an agent trained in a dream env (`wmsim agent train --env`): it holds a "
            "policy and no world model; give a run of `wmsim train` or `wmsim agent train --game`"
        )
    game = str(config.get("game"))
    out = cache / f"{game if GAME.fullmatch(game) else 'model'}-{key}.wmsim"
    with torch.random.fork_rng(devices=[]):
        data = Path(config.get("data") or run / AGENT_REPLAY)
        if not data.is_dir():
            raise UserError(
                f"{run} trained on the replay {data}, which is not there, and its start contexts "
                "come from it: run this from the directory the run was trained in, or export it "
                f"with `wmsim export --run {run} --data REPLAY --out NAME.wmsim --check`"
            )
        return export_run(ExportArgs(run=run, out=out, check=True, fidelity_steps=0,
                                     contexts=CONTEXTS, weights="float32"))  # fmt: skip
