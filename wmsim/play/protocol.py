"""The page's messages over the WebSocket: each checked before it reaches a game.

The page sends one small JSON object per user input (``type`` names it):

- ``{"type": "action", "action": 2, "id": 17}``: the held keys now play action 2;
  ``id`` (optional) comes back in the frame message of the step that took it;
- ``{"type": "reset", "seed": 7}`` (``null``: a seed drawn by the server);
- ``{"type": "pause", "paused": true}``; ``{"type": "step"}`` (one step while paused);
- ``{"type": "fps", "fps": 30}``; ``{"type": "beside", "on": true}``; ``{"type": "gif"}``.

The server sends ``hello`` (the game, its actions and key table), ``frame`` (one
step: the frame as base64 RGB, the action, reward, score, end probability, and
the real game's), ``state`` (paused, fps, beside), ``error`` (a message the page
shows) and the GIF as one binary message. A message that breaks these rules is
answered with an ``error`` and changes nothing; more than :data:`BURST` messages
at once, or over :data:`RATE` a second for long, are dropped.
"""

from __future__ import annotations

import json
import time
from typing import Any

from wmsim.play.session import SEEDS

MAX_MESSAGE_BYTES = 4096
"""Larger messages close that one socket (aiohttp's limit); a valid one is under 100 bytes."""

RATE = 60.0
"""Messages per second a page may send for long: a key change is one, and hands make ten or so."""

BURST = 120
"""Messages a page may send at once before the rate applies."""

MIN_FPS, MAX_FPS = 1.0, 60.0
"""Steps per second the page may ask for (Atari's own rate at frame skip 1 is 60)."""

_FIELDS = {
    "action": {"action", "id"},
    "reset": {"seed"},
    "pause": {"paused"},
    "step": set(),
    "fps": {"fps"},
    "beside": {"on"},
    "gif": set(),
}


class ProtocolError(ValueError):
    """A message from the page that breaks the protocol; its text is sent back to the page."""


def _int(value: Any, name: str, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < high:
        raise ProtocolError(f"{name} must be an integer in [0, {high}), got {value!r}"[:200])
    return value


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"{name} must be true or false, got {value!r}"[:200])
    return value


def parse_command(text: str, num_actions: int) -> dict[str, Any]:
    """One message from the page, checked -> a dict with ``type`` and its fields, typed.

    Raises:
        ProtocolError: no JSON object, an unknown type, unknown or missing fields, or
            values out of range (an action outside the game's, a negative seed, ...).
    """
    try:
        command = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ProtocolError("a message is a JSON object, got no JSON") from None
    if not isinstance(command, dict) or not isinstance(command.get("type"), str):
        raise ProtocolError('a message is a JSON object with a "type"')
    kind = command["type"]
    if kind not in _FIELDS:
        raise ProtocolError(f"unknown message type {kind[:40]!r}; known: {', '.join(_FIELDS)}")
    unknown = set(command) - _FIELDS[kind] - {"type"}
    if unknown:
        raise ProtocolError(f"a {kind} message has no field {sorted(unknown)[0][:40]!r}")
    if kind == "action":
        command["action"] = _int(command.get("action"), "action", num_actions)
        if command.get("id") is not None:
            command["id"] = _int(command["id"], "id", 2**53)
    elif kind == "reset" and command.get("seed") is not None:
        command["seed"] = _int(command["seed"], "seed", SEEDS)
    elif kind == "pause":
        command["paused"] = _bool(command.get("paused"), "paused")
    elif kind == "beside":
        command["on"] = _bool(command.get("on"), "on")
    elif kind == "fps":
        fps = command.get("fps")
        if (
            isinstance(fps, bool)
            or not isinstance(fps, int | float)
            or not (MIN_FPS <= fps <= MAX_FPS)
        ):
            raise ProtocolError(f"fps must be a number in [{MIN_FPS:g}, {MAX_FPS:g}], got {fps!r}")
        command["fps"] = float(fps)
    return command


class RateLimit:
    """A token bucket: ``take()`` is False for a message over :data:`BURST` at :data:`RATE`."""

    def __init__(self, rate: float = RATE, burst: int = BURST, clock=time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.last = float(burst), clock()
        self.dropped = 0

    def take(self) -> bool:
        """Whether one more message may pass now; counts the ones that may not."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.dropped += 1
        return False
