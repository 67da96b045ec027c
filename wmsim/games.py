"""Atari game names: the Atari 100k set, and every other ROM that ale-py ships.

Games are named in CamelCase as in the Atari 100k tables (``Breakout``,
``MsPacman``, ``UpNDown``); ale-py names its ROMs in snake_case
(``breakout``, ``ms_pacman``, ``up_n_down``). This module converts between the
two and turns a misspelt name into an error that suggests the right one.
"""

from __future__ import annotations

import difflib
import functools

from wmsim.errors import UserError

ATARI_100K: tuple[str, ...] = (
    "Alien", "Amidar", "Assault", "Asterix", "BankHeist", "BattleZone", "Boxing",
    "Breakout", "ChopperCommand", "CrazyClimber", "DemonAttack", "Freeway", "Frostbite",
    "Gopher", "Hero", "Jamesbond", "Kangaroo", "Krull", "KungFuMaster", "MsPacman",
    "Pong", "PrivateEye", "Qbert", "RoadRunner", "Seaquest", "UpNDown",
)  # fmt: skip
"""The 26 games of the Atari 100k benchmark (Kaiser et al., ICLR 2020)."""


def game_name(rom: str) -> str:
    """Return the CamelCase name for an ale-py ROM id (``up_n_down`` -> ``UpNDown``)."""
    return "".join(part.capitalize() for part in rom.split("_"))


@functools.cache
def _roms() -> dict[str, str]:
    """CamelCase name -> ale-py ROM id, for every ROM ale-py ships."""
    from ale_py import roms  # imported here: `import wmsim` must stay light

    return {game_name(rom): rom for rom in roms.get_all_rom_ids()}


def rom_id(game: str) -> str:
    """Return ale-py's ROM id for a canonical game name (``MsPacman`` -> ``ms_pacman``)."""
    return _roms()[game]


def all_games() -> tuple[str, ...]:
    """Every game ale-py ships a ROM for, in CamelCase, sorted."""
    return tuple(sorted(_roms()))


def _key(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def resolve_game(name: str) -> str:
    """Return the canonical CamelCase name for ``name``, accepting any case or snake_case.

    Raises:
        UserError: ``name`` is no game ale-py ships; the message suggests near matches.
    """
    games = all_games()
    by_key = {_key(g): g for g in games}
    if _key(name) in by_key:
        return by_key[_key(name)]
    close = difflib.get_close_matches(_key(name), list(by_key), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(by_key[k] for k in close)}? " if close else ""
    raise UserError(
        f"unknown game {name!r}; {hint}"
        f"the Atari 100k games are {', '.join(ATARI_100K)} "
        f"(ale-py ships {len(games)} ROMs in all)"
    )
