"""Which bundle a dream env uses: argument, environment variable, user store, embedded default.

In order:

1. ``model=``: a bundle path, or the name of a bundle in the user store;
2. ``WMSIM_MODEL``: the same, from the environment;
3. the user store, ``$WMSIM_HOME/models/<Game>.wmsim`` (``WMSIM_HOME`` defaults to
   ``$XDG_CACHE_HOME/wmsim``, else ``~/.cache/wmsim``); ``wmsim models add`` puts
   bundles there and ``wmsim models list`` shows them;
4. the default bundle shipped inside the package, ``wmsim/bundles/<Game>.wmsim``.

This module imports nothing beyond the standard library.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from wmsim.errors import UserError
from wmsim.files import replace_dir, staging_dir

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

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


def _named(name: str) -> Path:
    """A name in the store or among the embedded bundles (with or without ``.wmsim``), else a path.

    Names come first: a folder ``./Breakout`` does not hide the stored ``Breakout``.
    """
    if NAME.fullmatch(name):
        stem = name.removesuffix(".wmsim")
        for folder in (store(), EMBEDDED):
            if (folder / f"{stem}.wmsim").is_dir():
                return folder / f"{stem}.wmsim"
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    raise UserError(
        f"no model bundle {name!r}: it is neither a directory nor a name in {store()} "
        "(`wmsim models list` shows them); give a NAME.wmsim path"
    )


def resolve_model(game: str, model: str | os.PathLike | None = None) -> Path:
    """The bundle a dream env of ``game`` should load (see the module docstring).

    Raises:
        UserError: no bundle for ``game`` anywhere; the message names the commands that make one.
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
        f"`wmsim models add {game}.wmsim`, or pass model=PATH"
    )


def list_models() -> list[tuple[str, Path]]:
    """(where, path) of every bundle in the user store, then the embedded ones."""
    found = []
    for where, folder in (("store", store()), ("embedded", EMBEDDED)):
        if folder.is_dir():
            found += [(where, p) for p in sorted(folder.glob("*.wmsim")) if p.is_dir()]
    return found


def add_model(bundle: Path, name: str) -> Path:
    """Copy ``bundle`` into the store as ``<name>.wmsim``, replacing one of that name whole.

    Raises:
        UserError: ``name`` is not a plain name, or the copy does not verify.
    """
    from wmsim.bundle import open_bundle

    if not NAME.fullmatch(name):
        raise UserError(f"a model name is letters, digits, '_', '.' and '-', got {name!r}")
    target = store() / f"{name.removesuffix('.wmsim')}.wmsim"
    tmp = staging_dir(target)
    try:
        shutil.copytree(bundle, tmp, dirs_exist_ok=True)
        open_bundle(tmp)  # what landed is what was checked
        replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
