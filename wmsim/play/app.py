"""``wmsim play``: play a model's dream in the browser, alone or beside the real game.

A small aiohttp server: ``/`` is the page (HTML, JS and CSS from ``static/``, no
CDN, no build step) and ``/ws`` a WebSocket per page, each playing its own
dream env (see :mod:`wmsim.play.connection`). The dream is the same env every
other tool drives, ``gymnasium.make("wmsim/<Game>-dream-v0", ...)``, in this
process or on a ``wmsim serve`` (``--server``).

Safe by default: it binds 127.0.0.1 and then answers only requests addressed
to a loopback name (a web page cannot reach it through DNS rebinding) and
WebSockets opened by its own page. Bound to any other address it requires a
token (``--token-file`` or ``$WMSIM_TOKEN``), given once as ``?token=`` in the
URL it prints and kept in a same-site cookie, checked in constant time on every
request, the WebSocket upgrade included.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gymnasium
from aiohttp import web
from yarl import URL

from wmsim.errors import UserError
from wmsim.play.connection import play_socket
from wmsim.play.protocol import MAX_FPS, MAX_MESSAGE_BYTES, MIN_FPS

STATIC = Path(__file__).parent / "static"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
COOKIE = "wmsim_play_token"
GAMES = web.AppKey("games", set)
"""The live games, one per open WebSocket."""

HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the page's URL may hold the token
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class PlayArgs:
    """Play a model's dream in the browser (keys, reset, seed, pause, step, GIF)."""

    model: str | None = None
    """Bundle path or model-store name (default: the game's model, as dream envs resolve it)."""
    game: str = "Breakout"
    """The game: picks the default model, or names the game --server dreams."""
    server: str | None = None
    """``host:port`` of a ``wmsim serve`` to dream on (its token: $WMSIM_TOKEN)."""
    host: str = "127.0.0.1"
    """Address to bind; any but a loopback one needs --token-file or $WMSIM_TOKEN."""
    port: int = 8080
    """Port to bind; 0 picks a free one (the printed URL has it)."""
    fps: float = 15.0
    """Steps per second the page starts at (it can change them); 15 is Atari at frame skip 4."""
    token_file: Path | None = None
    """Require this token (the file's first line) to open the page; else $WMSIM_TOKEN if set."""
    ends: Literal["sampled", "likely"] = "likely"
    """How dream episodes end (the envs' ``ends=``): ``likely`` (the envs' default too), where the
    model finds an end more likely than not, so the little end probability a model puts on every
    step does not cut a person's game short; or ``sampled``, drawn each step."""
    latents: Literal["sampled", "mode"] = "mode"
    """How the dream takes its latents, as the dream envs' ``latents=``: the most likely class
    by default (the envs' default too: the dream follows the actions), or ``sampled``, the
    papers' imagination."""
    device: str = "auto"
    """Where onnxruntime runs an in-process model: auto, cpu or cuda."""
    threads: int | None = None
    """onnxruntime threads of an in-process model (default: one per core)."""


def read_token(token_file: Path | None) -> str | None:
    """The first line of ``token_file``, else ``$WMSIM_TOKEN``, else None.

    Raises:
        UserError: the file cannot be read or is empty.
    """
    if token_file is None:
        return os.environ.get("WMSIM_TOKEN") or None
    try:
        lines = token_file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read --token-file {token_file}: {error}") from None
    if not lines or not lines[0].strip():
        raise UserError(f"--token-file {token_file} is empty; write the token in it")
    return lines[0].strip()


def _guard(token: str | None, loopback_only: bool):
    """Middleware: the Host check, the token check, and the page's cookie."""

    @web.middleware
    async def guard(request: web.Request, handler) -> web.StreamResponse:
        try:
            host = URL(f"http://{request.host}").host
        except ValueError:
            host = None
        if loopback_only and host not in LOOPBACK:
            raise web.HTTPForbidden(text="this server answers only at 127.0.0.1 or localhost\n")
        if request.path == "/ws":
            origin = request.headers.get("Origin")
            if origin is not None and origin != f"{request.scheme}://{request.host}":
                raise web.HTTPForbidden(text="the WebSocket is for this server's own page\n")
        given = request.query.get("token") or request.cookies.get(COOKIE) or ""
        if token is not None and not hmac.compare_digest(given.encode(), token.encode()):
            raise web.HTTPUnauthorized(
                text="missing or wrong token: open the URL `wmsim play` printed (?token=...)\n"
            )
        response = await handler(request)
        if token is not None and request.query.get("token"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
        return response

    return guard


def create_app(
    open_dream: Callable[[], gymnasium.Env],
    *,
    source: str,
    fps: float = 15.0,
    token: str | None = None,
    loopback_only: bool = True,
) -> web.Application:
    """The play server as an aiohttp application.

    Args:
        open_dream: makes one pixel dream env; called once per WebSocket, on a worker thread.
        source: where the dream runs, shown on the page.
        fps: steps per second a page starts at.
        token: required on every request when given.
        loopback_only: answer only requests addressed to 127.0.0.1, localhost or ::1.
    """

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=(STATIC / "index.html").read_bytes(), content_type="text/html",
                            headers=HEADERS)  # fmt: skip

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, heartbeat=30)
        await ws.prepare(request)
        await play_socket(ws, open_dream, source=source, fps=fps, games=request.app[GAMES])
        return ws

    async def close_pages(app: web.Application) -> None:
        for game in list(app[GAMES]):
            await game.ws.close(code=1001, message=b"the server is shutting down")

    app = web.Application(middlewares=[_guard(token, loopback_only)])
    app[GAMES] = set()
    app.router.add_get("/", page)
    app.router.add_get("/ws", websocket)
    app.router.add_static("/static", STATIC)
    app.on_shutdown.append(close_pages)
    return app


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (0: a free port) -> (its runner, the bound port).

    Raises:
        UserError: the address cannot be bound.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise UserError(
            f"cannot bind {host}:{port} ({error.strerror}): pick another --port (0 takes a "
            "free one) or --host"
        ) from None
    runner = web.AppRunner(app, access_log=None, handle_signals=False)  # URLs may hold the token
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner, sock.getsockname()[1]


def dream_maker(args: PlayArgs) -> tuple[Callable[[], gymnasium.Env], str]:
    """How to make the page's dream envs -> (a function making one, where they run)."""
    import wmsim  # noqa: F401  registers the dream ids
    from wmsim.bundle import read_spec
    from wmsim.store import resolve_model

    options = {"ends": args.ends, "latents": args.latents}
    if args.server is not None:
        if args.model is not None:
            raise UserError("give --model or --server, not both: a server dreams its own model")
        game, options["server"] = args.game, args.server
        source = f"on the wmsim serve at {args.server}"
    else:
        path = resolve_model(args.game, args.model)
        game = read_spec(path)["game"] if args.model is not None else args.game
        options.update(model=str(path), device=args.device, threads=args.threads)
        source = f"in this process by {path}"
    return functools.partial(gymnasium.make, f"wmsim/{game}-dream-v0", **options), source


async def serve_play(args: PlayArgs) -> int:
    """Serve the page until SIGTERM or SIGINT, printing its URL; return 0."""
    if not MIN_FPS <= args.fps <= MAX_FPS:
        raise UserError(f"--fps must be in [{MIN_FPS:g}, {MAX_FPS:g}], got {args.fps:g}")
    token = read_token(args.token_file)
    loopback = args.host in LOOPBACK
    if token is None and not loopback:
        raise UserError(
            f"--host {args.host} exposes the page to the network: give a token with "
            "--token-file FILE or $WMSIM_TOKEN, or keep --host 127.0.0.1"
        )
    open_dream, source = dream_maker(args)
    loop = asyncio.get_running_loop()
    try:  # fail here, not in the first page: the model loads, the server answers
        probe = await loop.run_in_executor(None, open_dream)
    except (ConnectionError, PermissionError, TimeoutError) as error:
        raise UserError(f"cannot dream on --server {args.server}: {error}") from None
    game, meanings = probe.unwrapped.game, probe.unwrapped.get_action_meanings()
    # an in-process env takes seconds to open: the first page plays the probe
    spare = [probe] if args.server is None else []
    if not spare:
        probe.close()

    def first_the_probe() -> gymnasium.Env:
        return spare.pop() if spare else open_dream()  # list.pop is atomic across threads

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = create_app(
        first_the_probe, source=source, fps=args.fps, token=token, loopback_only=loopback
    )
    try:
        runner, port = await start_site(app, args.host, args.port)
        shown = socket.gethostname() if args.host in ("0.0.0.0", "::") else args.host
        shown = f"[{shown}]" if ":" in shown else shown
        url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
        if token and not loopback:
            print("wmsim play: warning: the token crosses the network in clear text; prefer an "
                  "SSH tunnel to a 127.0.0.1 server", file=sys.stderr)  # fmt: skip
        print(f"wmsim play: {game} ({' '.join(meanings)}), dreamed {source}", flush=True)
        print(f"open {url}  (Ctrl-C stops)", flush=True)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
    finally:
        for env in spare:  # no page came
            env.close()
    return 0


def play(args: PlayArgs) -> int:
    """Run ``wmsim play`` in this process."""
    return asyncio.run(serve_play(args))
