"""One page's WebSocket: the game clock, the page's inputs, and the env freed when it closes.

Each socket plays its own dream: its env is made when the socket opens and
closed in a ``finally`` when it closes, however it closes. The clock steps the
game at the page's rate, each tick ``1 / fps`` after the last step began; a step that runs
late moves the next tick to its end rather than stepping twice in a row, and a key change
is played early, at least half a tick after the last step (:data:`EARLIEST`). A step
takes the oldest action the page chose since the last step, so a key tapped
between two ticks is still played, in order; with none queued it takes the
held one (NOOP when no key is held). While paused, ``step`` plays the held
action once. Env calls run on a worker thread, one at a time per socket, so
the event loop keeps serving every other page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np
from aiohttp import WSMsgType, web

from wmsim.play.keys import key_labels, key_table
from wmsim.play.protocol import MAX_FPS, MIN_FPS, ProtocolError, RateLimit, parse_command
from wmsim.play.session import PlaySession

log = logging.getLogger(__name__)

MAX_QUEUED = 16
"""Actions queued between two steps at most; beyond it the newest replaces the last queued."""


@dataclass
class Controls:
    """The page's inputs to one game, read and written on the event loop only."""

    fps: float
    paused: bool = False
    held: tuple[int, int | None] = (0, None)
    """(action, id of the message that chose it): what the held keys play."""
    queued: deque[tuple[int, int | None]] = field(default_factory=deque)
    """Actions chosen since the last step, oldest first."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the page pauses, changes the rate or starts an episode: the clock rereads them."""

    def choose(self, action: int, input_id: int | None) -> None:
        """The held keys now play ``action``."""
        self.held = (action, input_id)
        if len(self.queued) < MAX_QUEUED:
            self.queued.append(self.held)
        else:  # a flood: keep the order so far and the newest choice
            self.queued[-1] = self.held

    def next_action(self) -> tuple[int, int | None]:
        """(action, message id) of the next step: the oldest queued, else the held action.

        A message's id comes back only with the step that played its action first.
        """
        if self.queued:
            return self.queued.popleft()
        action, _ = self.held
        return action, None


@dataclass(eq=False)  # hashed by identity: the server keeps a set of live games
class Game:
    """One socket's game: the session, its inputs, and the lock that keeps its env calls in turn."""

    ws: web.WebSocketResponse
    session: PlaySession
    controls: Controls
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def call(self, work: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking session method on a worker thread, after any other of this game's."""
        async with self.lock:
            return await _in_thread(work, *args)

    async def tick(self) -> None:
        """The clock's step, unless the game was paused or ended while the clock waited."""
        async with self.lock:
            if self.controls.paused or not self.session.running:
                return
            frame = await _in_thread(self.session.step, *self.controls.next_action())
        await self.ws.send_json(frame)

    async def pause(self, paused: bool) -> None:
        """Pause or resume; once the page hears of a pause, the clock steps no more."""
        async with self.lock:  # a step under way ends first
            self.controls.paused = paused
            self.controls.queued.clear()  # resumed, the game plays what is held then
        await self.send_state()

    async def send_state(self) -> None:
        """Tell the page the clock's settings."""
        await self.ws.send_json({
            "type": "state", "paused": self.controls.paused, "fps": self.controls.fps,
            "beside": self.session.real is not None,
        })  # fmt: skip


async def _in_thread(work: Callable[..., Any], *args: Any) -> Any:
    """``work(*args)`` on a worker thread.

    Cancelled, it still waits for the thread to finish, so its caller keeps the game's lock
    and the env is never closed while a step runs.
    """
    running = asyncio.get_running_loop().run_in_executor(None, work, *args)
    try:
        return await asyncio.shield(running)
    finally:
        if not running.done():
            await asyncio.wait({running})


EARLIEST = 0.5
"""A key change is played at once if the last step is this many ticks old, else then: the
wait from a key press to its frame is at most half a tick (33 ms at 15 fps) instead of a
whole one, and the rate stays steady while no key changes."""


async def run_clock(game: Game) -> None:
    """Step ``game`` at its page's rate while it runs; forever (the socket cancels it)."""
    loop = asyncio.get_running_loop()
    controls = game.controls
    next_tick = last_step = loop.time()
    while True:
        controls.wake.clear()
        if controls.paused or not game.session.running:
            await controls.wake.wait()
            next_tick = loop.time()
            continue
        if controls.queued:  # a key change steps early, but never sooner than half a tick
            next_tick = min(next_tick, last_step + EARLIEST / controls.fps)
        delay = next_tick - loop.time()
        if delay > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(controls.wake.wait(), delay)
            continue
        last_step = loop.time()
        await game.tick()
        next_tick = max(last_step + 1 / controls.fps, loop.time())


async def apply(game: Game, command: dict[str, Any]) -> None:
    """Carry out one checked message from the page."""
    controls, session, kind = game.controls, game.session, command["type"]
    if kind == "action":
        controls.choose(command["action"], command.get("id"))
    elif kind == "reset":
        controls.queued.clear()
        await game.ws.send_json(await game.call(session.reset, command.get("seed")))
    elif kind == "step":
        if not controls.paused:
            raise ProtocolError("step-by-step works while paused: pause first")
        if not session.running:
            raise ProtocolError("the episode ended: reset to play again" if session.ended else
                                "reset before stepping")  # fmt: skip
        controls.queued.clear()  # while paused, a step plays what is held now
        await game.ws.send_json(await game.call(session.step, *controls.held))
    elif kind == "pause":
        await game.pause(command["paused"])
    elif kind == "fps":
        controls.fps = command["fps"]
        await game.send_state()
    elif kind == "beside":
        try:
            started = await game.call(session.set_beside, command["on"])
        except ValueError as error:
            raise ProtocolError(str(error)) from None
        await game.send_state()
        if started is not None:
            controls.queued.clear()
            await game.ws.send_json(started)
    elif kind == "gif":
        try:
            data = await game.call(session.gif, controls.fps)
        except RuntimeError as error:
            raise ProtocolError(str(error)) from None
        await game.ws.send_bytes(data)
    controls.wake.set()


def hello(session: PlaySession, source: str, fps: float) -> dict[str, Any]:
    """The first message: what the page needs to draw the game and map its keys."""
    return {
        "type": "hello", "game": session.game, "source": source,
        "actions": session.meanings, "keys": key_table(session.meanings),
        "labels": key_labels(session.meanings), "fps": fps, "min_fps": MIN_FPS,
        "max_fps": MAX_FPS,
    }  # fmt: skip


async def read_page(game: Game, num_actions: int) -> None:
    """Apply the page's messages until it closes; answer bad ones, drop a flood."""
    limit = RateLimit()
    told = -1.0  # when the page was last told of dropped messages
    loop = asyncio.get_running_loop()
    async for message in game.ws:
        if message.type != WSMsgType.TEXT:
            if message.type == WSMsgType.BINARY:
                await game.ws.send_json({"type": "error", "message": "send JSON text, not bytes"})
            continue
        if not limit.take():
            if loop.time() - told > 1.0:
                told = loop.time()
                await game.ws.send_json({
                    "type": "error",
                    "message": f"too many messages: dropped {limit.dropped} so far",
                })  # fmt: skip
            continue
        try:
            await apply(game, parse_command(message.data, num_actions))
        except ProtocolError as error:
            await game.ws.send_json({"type": "error", "message": str(error)})


async def play_socket(
    ws: web.WebSocketResponse,
    open_dream: Callable[[], gymnasium.Env],
    *,
    source: str,
    fps: float,
    games: set[Game],
) -> None:
    """Play one dream over ``ws`` until it closes, then close the dream.

    Args:
        ws: the page's prepared WebSocket.
        open_dream: makes the dream env (on a worker thread).
        source: where the dream runs, for the page.
        fps: the rate the clock starts at.
        games: the server's live games; this one is in it while it plays.
    """
    try:
        dream = await _open(open_dream)
    except Exception as error:  # the model or the server went away since the start
        log.exception("cannot open a dream")
        await ws.send_json({"type": "error", "message": f"cannot open a dream: {error}"[:300]})
        await ws.close()
        return
    seeds = np.random.default_rng()  # the seeds of resets given none; any will do
    game = Game(ws, PlaySession(dream, seeds), Controls(fps=fps))
    games.add(game)
    clock = asyncio.ensure_future(run_clock(game))
    try:
        await ws.send_json(hello(game.session, source, fps))
        reader = asyncio.ensure_future(read_page(game, len(game.session.meanings)))
        done, _ = await asyncio.wait({reader, clock}, return_when=asyncio.FIRST_COMPLETED)
        reader.cancel()
        await asyncio.wait({reader})
        failed = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]
        if failed and not ws.closed:  # e.g. the dream's server went away
            log.error("a game stopped: %r", failed[0])
            await ws.send_json({"type": "error", "message": f"the game stopped: {failed[0]}"})
    finally:
        clock.cancel()
        await asyncio.wait({clock})
        try:
            await game.call(game.session.close)
        finally:
            games.discard(game)
            await ws.close()


async def _open(open_dream: Callable[[], gymnasium.Env]) -> gymnasium.Env:
    """``open_dream()`` on a worker thread; cancelled meanwhile, the env is closed once made."""
    opening = asyncio.get_running_loop().run_in_executor(None, open_dream)
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(lambda done: done.exception() is None and done.result().close())
        raise
