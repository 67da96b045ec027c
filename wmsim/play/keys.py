"""Keys to actions: which of a game's actions the held keys play, built from its action meanings.

A game's minimal action set names each action by ALE's grammar: ``NOOP``, or a
vertical direction (``UP``, ``DOWN``), a horizontal one (``RIGHT``, ``LEFT``)
and ``FIRE``, in that order (``UPRIGHTFIRE``). The page holds five keys (the
arrows and space for FIRE) as a bit mask; :func:`key_table` gives every mask
its action, so the page only looks the mask up. A mask plays the action whose
parts are exactly the held parts when the game has it, else the action with
the most held parts and no others (a movement before FIRE on a tie); opposite
arrows held together cancel. Breakout has no ``RIGHTFIRE``, so right and space
together move right.
"""

from __future__ import annotations

import re

KEYS = {"UP": 1, "DOWN": 2, "LEFT": 4, "RIGHT": 8, "FIRE": 16}
"""The bit of each action part in a key mask; the page sets a part's bit while its key is held."""

KEY_LABELS = {"UP": "↑", "DOWN": "↓", "LEFT": "←", "RIGHT": "→", "FIRE": "Space"}
"""The key that holds each part, as the page lists it."""

_GRAMMAR = re.compile(r"(UP|DOWN)?(RIGHT|LEFT)?(FIRE)?")


def action_parts(meaning: str) -> int | None:
    """The key mask of an action meaning (``"UPFIRE"`` -> UP | FIRE, ``"NOOP"`` -> 0).

    None for a name outside ALE's grammar: no keys play it.
    """
    if meaning == "NOOP":
        return 0
    found = _GRAMMAR.fullmatch(meaning)
    if found is None or not meaning:
        return None
    return sum(KEYS[part] for part in found.groups() if part is not None)


def _cancel_opposites(mask: int) -> int:
    for a, b in (("UP", "DOWN"), ("LEFT", "RIGHT")):
        both = KEYS[a] | KEYS[b]
        if mask & both == both:
            mask &= ~both
    return mask


def key_table(meanings: list[str]) -> list[int]:
    """(32,) the action index each key mask plays, for a game with these action meanings.

    Raises:
        ValueError: the game has no ``NOOP``, which an empty mask must play.
    """
    if "NOOP" not in meanings:
        raise ValueError(f"the actions {meanings} have no NOOP for when no key is held")
    parts = [action_parts(meaning) for meaning in meanings]
    table = []
    for mask in range(2 ** len(KEYS)):
        held = _cancel_opposites(mask)
        playable = [
            (bin(p).count("1"), not p & KEYS["FIRE"], -index, index)
            for index, p in enumerate(parts)
            if p is not None and p & ~held == 0
        ]
        table.append(max(playable)[-1])  # most parts, then movement over FIRE, then lowest index
    return table


def key_labels(meanings: list[str]) -> list[str]:
    """Per action, the keys that play it as the page shows them (``"→ + Space"``; ``""``: none)."""
    table = key_table(meanings)
    labels = []
    for index, meaning in enumerate(meanings):
        mask = action_parts(meaning)
        if mask is None or table[mask] != index:
            labels.append("")
            continue
        keys = [label for part, label in KEY_LABELS.items() if mask & KEYS[part]]
        labels.append(" + ".join(keys) if keys else "no key")
    return labels
