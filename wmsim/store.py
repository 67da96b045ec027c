"""Which bundle a dream env uses: argument, environment variable, user store, embedded default.

In order:

1. ``model=``: the name of a bundle in the user store, a bundle path, or a training
   run (a ``wmsim train`` directory or its ``checkpoint.pt``), exported once into
   ``$WMSIM_HOME/cache/runs`` and used from there (see :mod:`wmsim.runs_cache`);
2. ``WMSIM_MODEL``: the same, from the environment;
3. the user store, ``$WMSIM_HOME/models/<Game>.wmsim`` (``WMSIM_HOME`` defaults to
   ``$XDG_CACHE_HOME/wmsim``, else ``~/.cache/wmsim``); ``wmsim models add`` puts
   bundles there and ``wmsim models list`` shows them;
4. the default bundle shipped inside the package, ``wmsim/bundles/<Game>.wmsim``.

This module imports nothing beyond the standard library; a path imports
:mod:`wmsim.runs_cache` (numpy), and a run to export, torch.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from wmsim.errors import UserError
from wmsim.files import replace_dir, staging_dir

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
MAX_NAME = 100
"""A stored model's name is at most this long (file names stop at 255 bytes)."""

EMBEDDED = Path(__file__).resolve().parent / "bundles"
"""Bundles shipped inside the package."""


def home() -> Path:
    """wmsim's own directory: ``WMSIM_HOME``, else the user's cache directory."""
    if os.environ.get("WMSIM_HOME"):
        return Path(os.environ["WMSIM_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "wmsim"


def store() -> Path:
    """The user's model store."""
    return home() / "models"


def runs_cache() -> Path:
    """Where training runs given as models are exported to: ``<home>/cache/runs``."""
    return home() / "cache" / "runs"


def _named(name: str) -> Path:
    """A name in the store or among the embedded bundles (with or without ``.wmsim``), else a path.

    Names come first: a folder ``./Breakout`` does not hide the stored ``Breakout``.
    A path is a bundle, or a training run, which is exported (once) into :func:`runs_cache`.
    """
    if NAME.fullmatch(name):
        stem = name.removesuffix(".wmsim")
        for folder in (store(), EMBEDDED):
            if (folder / f"{stem}.wmsim").is_dir():
                return folder / f"{stem}.wmsim"
    path = Path(name).expanduser()
    if path.exists():
        from wmsim.runs_cache import bundle_at

        return bundle_at(path, runs_cache())
    raise UserError(
        f"no model bundle {name!r}: it is neither a directory nor a name in {store()} "
        "(`wmsim models list` shows them); give a bundle NAME.wmsim, or a run directory of "
        "`wmsim train` (or its checkpoint.pt)"
    )


def resolve_model(game: str, model: str | os.PathLike | None = None) -> Path:
    """The bundle a dream env of ``game`` should load (see the module docstring).

    Raises:
        UserError: no bundle for ``game`` anywhere (the message names the commands that make
            one), a path that is neither a bundle nor a run, or a run that cannot be exported.
    """
    if model is not None:
        return _named(os.fspath(model))
    if os.environ.get("WMSIM_MODEL"):
        return _named(os.environ["WMSIM_MODEL"])
    for folder in (store(), EMBEDDED):
        if (folder / f"{game}.wmsim").is_dir():
            return folder / f"{game}.wmsim"
    raise UserError(
        f"there is no model of {game}: wmsim ships one for Breakout only. Make one with "
        f"`wmsim collect --game {game} --steps 100000 --out data/{game}`, "
        f"`wmsim train --data data/{game} --steps 5000 --preset tiny-s5 --out runs/{game}`, "
        f"`wmsim export --run runs/{game} --out {game}.wmsim` and "
        f"`wmsim models add {game}.wmsim`, or pass model=PATH (a bundle, or the run itself)"
    )


def list_models() -> list[tuple[str, Path]]:
    """(where, path) of every bundle in the user store, then the embedded ones."""
    found = []
    for where, folder in (("store", store()), ("embedded", EMBEDDED)):
        if folder.is_dir():
            found += [(where, p) for p in sorted(folder.glob("*.wmsim")) if p.is_dir()]
    return found


def check_name(name: str) -> str:
    """A store name, without ``.wmsim``, after checking it can name a bundle and load again.

    Raises:
        UserError: empty, too long, odd characters, or ``.wmsim`` twice.
    """
    stem = name.removesuffix(".wmsim")
    if not NAME.fullmatch(name) or not stem or len(stem) > MAX_NAME or stem.endswith(".wmsim"):
        raise UserError(
            f"a model name is 1 to {MAX_NAME} letters, digits, '_', '.' and '-', starting with a "
            f"letter or digit, with at most one '.wmsim' at the end; got {name[:120]!r}"
        )
    return stem


def add_model(bundle: Path, name: str, *, force: bool = False) -> Path:
    """Copy ``bundle``'s files into the store as ``<name>.wmsim``.

    Only the files a bundle holds are copied, after the source checks (so no link
    is followed and nothing else comes along), and the copy is checked again
    before it is renamed into place.

    Raises:
        UserError: a bad name, a stored model of that name without ``force``, a
            damaged bundle, or a copy that fails (a full disk), naming the fix.
    """
    from wmsim.bundle import FILES, SPEC, open_bundle

    target = store() / f"{check_name(name)}.wmsim"
    if target.exists() and not force:
        raise UserError(f"the store already holds {target.stem!r} ({target}); pass --force to "
                        "replace it, or choose another --name")  # fmt: skip
    source = open_bundle(bundle)
    tmp = None
    try:
        tmp = staging_dir(target)
        for file in (SPEC, *FILES):
            shutil.copyfile(source.path / file, tmp / file, follow_symlinks=False)
        open_bundle(tmp)  # what landed is what was checked
        replace_dir(tmp, target)
    except OSError as error:
        raise UserError(
            f"cannot copy {bundle} into {store()}: {error.strerror or error}; free some space "
            "there, or set WMSIM_HOME to a directory on another disk"
        ) from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
