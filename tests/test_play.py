"""`wmsim play`: the key table, the page's protocol over a real server, and the page in Chromium.

The server runs on 127.0.0.1, port 0, with real dream envs of the shipped model; a
wrapper records what reaches each env. The browser test drives Debian's headless
Chromium over the DevTools protocol and skips where no `chromium` is installed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest

aiohttp = pytest.importorskip("aiohttp")

import wmsim  # noqa: E402,F401  registers the dream ids
from wmsim.play.app import COOKIE, GAMES, PlayArgs, create_app, dream_maker, start_site  # noqa: E402
from wmsim.play.keys import key_labels, key_table  # noqa: E402
from wmsim.play.protocol import BURST, ProtocolError, RateLimit, parse_command  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BREAKOUT = ["NOOP", "FIRE", "RIGHT", "LEFT"]
NOOP, FIRE, RIGHT, LEFT = range(4)
FULL = ["NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT",
        "DOWNLEFT", "UPFIRE", "RIGHTFIRE", "LEFTFIRE", "DOWNFIRE", "UPRIGHTFIRE", "UPLEFTFIRE",
        "DOWNRIGHTFIRE", "DOWNLEFTFIRE"]  # fmt: skip
UP, DOWN, LEFT_KEY, RIGHT_KEY, SPACE = 1, 2, 4, 8, 16


# -- keys and messages -------------------------------------------------------------------------


def test_keys_play_the_games_own_actions():
    table = key_table(BREAKOUT)
    assert table[0] == NOOP and table[SPACE] == FIRE
    assert table[RIGHT_KEY] == RIGHT and table[LEFT_KEY] == LEFT
    assert table[RIGHT_KEY | SPACE] == RIGHT  # no RIGHTFIRE in Breakout: movement first
    assert table[LEFT_KEY | RIGHT_KEY] == NOOP and table[UP] == NOOP  # opposites cancel
    assert key_labels(BREAKOUT) == ["no key", "Space", "→", "←"]
    full = key_table(FULL)
    held = (UP | RIGHT_KEY | SPACE, DOWN | LEFT_KEY, UP | DOWN | SPACE)
    assert [FULL[full[mask]] for mask in held] == ["UPRIGHTFIRE", "DOWNLEFT", "FIRE"]
    assert key_labels(FULL)[FULL.index("DOWNRIGHTFIRE")] == "↓ + → + Space"


def test_bad_messages_are_refused_with_a_reason():
    assert parse_command('{"type": "action", "action": 3, "id": 9}', 4) == {
        "type": "action", "action": 3, "id": 9}  # fmt: skip
    assert parse_command('{"type": "fps", "fps": 30}', 4)["fps"] == 30.0
    for text, reason in [
        ("{", "no JSON"), ("[1]", "JSON object"), ('{"type": "jump"}', "unknown message type"),
        ('{"type": "action", "action": 4}', r"\[0, 4\)"),
        ('{"type": "action", "action": true}', "integer"),
        ('{"type": "action", "action": 1.0}', "integer"),
        ('{"type": "step", "x": 1}', "no field 'x'"), ('{"type": "reset", "seed": -1}', "seed"),
        ('{"type": "fps", "fps": 0}', "fps"), ('{"type": "pause", "paused": 1}', "true or false"),
        ("[" * 100_000 + "]" * 100_000, "no JSON"),
    ]:  # fmt: skip
        with pytest.raises(ProtocolError, match=reason):
            parse_command(text, 4)


def test_the_rate_limit_passes_a_burst_then_the_rate():
    now = [0.0]
    limit = RateLimit(rate=10, burst=5, clock=lambda: now[0])
    assert [limit.take() for _ in range(7)] == [True] * 5 + [False] * 2
    now[0] += 0.25  # 2.5 messages' worth
    assert [limit.take() for _ in range(3)] == [True, True, False]
    assert limit.dropped == 3


# -- the server, over its WebSocket -----------------------------------------------------------


class Recorded(gymnasium.Wrapper):
    """A dream env that logs every reset seed and action reaching it, and its close."""

    def __init__(self, env: gymnasium.Env):
        super().__init__(env)
        self.calls: list = []
        self.closed = False

    def reset(self, *, seed=None, options=None):
        self.calls.append(("reset", seed))
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self.calls.append(int(action))
        return super().step(action)

    def close(self):
        self.closed = True
        super().close()


@pytest.fixture(scope="module")
def dream_server():
    """One `wmsim serve` for the module: a served env opens in milliseconds, where an
    in-process one first observes every start context of the bundle (seconds)."""
    from serving import served

    with served("--max-envs", "16") as server:
        yield server.address


@pytest.fixture
def recorded(dream_server):
    """(a factory of recorded dream envs, the list of envs it made).

    Episodes end where the model finds an end likely, as ``wmsim play`` ends them: sampled
    ends stop a few games of the shipped model within a step or two, at random.
    """
    made: list[Recorded] = []

    def open_dream() -> Recorded:
        env = gymnasium.make("wmsim/Breakout-dream-v0", server=dream_server, ends="likely")
        made.append(Recorded(env))
        return made[-1]

    return open_dream, made


@contextlib.asynccontextmanager
async def play_server(open_dream, **options):
    """A play server on 127.0.0.1, port 0 -> (base URL, the app)."""
    app = create_app(open_dream, source="on the tests' wmsim serve", **options)
    runner, port = await start_site(app, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        await runner.cleanup()


async def receive(ws, kind: str, timeout: float = 60):
    """The next message of ``kind`` (``"binary"`` for bytes); fails on an unexpected error."""
    while True:
        message = await ws.receive(timeout)
        if message.type == aiohttp.WSMsgType.BINARY and kind == "binary":
            return message.data
        assert message.type == aiohttp.WSMsgType.TEXT, f"the socket ended: {message}"
        data = json.loads(message.data)
        if data["type"] == kind:
            return data
        assert data["type"] != "error", data["message"]


async def open_game(session, url: str, paused: bool = True):
    ws = await session.ws_connect(f"{url}/ws")
    hello = await receive(ws, "hello")
    if paused:
        await ws.send_json({"type": "pause", "paused": True})
        await receive(ws, "state")
    return ws, hello


async def play_paused(ws, seed: int, actions: list[int]) -> list[str]:
    """Reset with ``seed``, then one step per action -> every frame (base64)."""
    await ws.send_json({"type": "reset", "seed": seed})
    frames = [(await receive(ws, "frame"))["frame"]]
    for action in actions:
        await ws.send_json({"type": "action", "action": action})
        await ws.send_json({"type": "step"})
        stepped = await receive(ws, "frame")
        assert stepped["action"] == action
        frames.append(stepped["frame"])
    return frames


def test_a_seed_replays_its_frames_and_actions_reach_the_env_in_order(recorded):
    open_dream, made = recorded
    actions = [RIGHT, RIGHT, FIRE, LEFT, NOOP, LEFT]

    async def scenario():
        async with play_server(open_dream) as (url, _), aiohttp.ClientSession() as session:
            ws, hello = await open_game(session, url)
            assert hello["actions"] == BREAKOUT and hello["keys"] == key_table(BREAKOUT)
            first = await play_paused(ws, 3, actions)
            again = await play_paused(ws, 3, actions)
            other = await play_paused(ws, 4, actions)
            await ws.close()
            return first, again, other

    first, again, other = asyncio.run(scenario())
    assert first == again and first != other
    assert made[0].calls == [entry for seed in (3, 3, 4) for entry in [("reset", seed), *actions]]
    frame = np.frombuffer(base64.b64decode(first[0]), np.uint8)
    assert frame.shape == (64 * 64 * 3,) and frame.any()


def test_the_clock_plays_every_chosen_action_once_in_order_then_the_held_one(recorded):
    open_dream, made = recorded

    async def scenario():
        async with play_server(open_dream, fps=60) as (url, _), aiohttp.ClientSession() as s:
            ws, _ = await open_game(s, url, paused=False)
            # seed 2: the shipped dream goes on for 34 steps of these actions after up to 39 NOOPs
            # (an ended episode stops the clock, and no frame would come)
            await ws.send_json({"type": "reset", "seed": 2})
            await receive(ws, "frame")
            for i, action in enumerate([RIGHT, LEFT, FIRE, LEFT], start=1):
                await ws.send_json({"type": "action", "action": action, "id": i})
            inputs = []
            for _ in range(300):  # 5 s at 60 fps
                if 4 in inputs:
                    break
                frame = await receive(ws, "frame")
                assert frame["ended"] is None, "the dream ended before the actions were played"
                if frame["input"] is not None:
                    inputs.append(frame["input"])
                    assert frame["action"] == [RIGHT, LEFT, FIRE, LEFT][frame["input"] - 1]
            for _ in range(3):  # the held action goes on
                assert (await receive(ws, "frame"))["action"] == LEFT
            await ws.close()
            return inputs

    assert asyncio.run(scenario()) == [1, 2, 3, 4]
    played = made[0].calls[made[0].calls.index(("reset", 2)) + 1 :]
    runs = [a for i, a in enumerate(played) if i == 0 or played[i - 1] != a]
    assert runs[-4:] == [RIGHT, LEFT, FIRE, LEFT] and set(runs[:-4]) <= {NOOP}


def test_bad_input_is_answered_and_the_server_keeps_serving(recorded):
    open_dream, made = recorded

    async def scenario():
        async with play_server(open_dream) as (url, app), aiohttp.ClientSession() as session:
            ws, _ = await open_game(session, url)
            for bad in ['{"type": "action", "action": 9}', "not json", '{"type": "step"}']:
                await ws.send_str(bad)
                assert (await receive(ws, "error"))["message"]
            await ws.send_bytes(b"\x00")
            assert "JSON text" in (await receive(ws, "error"))["message"]
            for _ in range(BURST + 50):  # a flood of key events
                await ws.send_json({"type": "action", "action": RIGHT})
            assert "too many messages" in (await receive(ws, "error"))["message"]
            await asyncio.sleep(1.0)  # the bucket refills
            frames = await play_paused(ws, 5, [RIGHT])
            big = await session.ws_connect(f"{url}/ws")  # over the size limit: that socket ends
            await receive(big, "hello")
            await big.send_str(json.dumps({"type": "gif", "pad": "x" * 10_000}))
            while (await big.receive(30)).type not in (aiohttp.WSMsgType.CLOSE,
                                                       aiohttp.WSMsgType.CLOSED):  # fmt: skip
                pass
            assert await play_paused(ws, 5, [RIGHT]) == frames  # the first page plays on
            await ws.close()
            for _ in range(100):
                if not app[GAMES]:
                    break
                await asyncio.sleep(0.05)
            return len(app[GAMES])

    assert asyncio.run(scenario()) == 0
    assert all(env.closed for env in made)
    flooded = made[0].calls
    assert flooded == [("reset", 5), RIGHT, ("reset", 5), RIGHT]


def test_pages_play_independent_dreams_and_a_closed_page_frees_its_env(recorded):
    open_dream, made = recorded

    async def scenario():
        async with play_server(open_dream) as (url, app), aiohttp.ClientSession() as session:
            (one, _), (two, _) = [await open_game(session, url) for _ in range(2)]
            alone = await play_paused(one, 8, [RIGHT, RIGHT])
            await play_paused(two, 9, [LEFT])
            assert len(app[GAMES]) == 2
            await two.close()
            for _ in range(100):
                if len(app[GAMES]) == 1:
                    break
                await asyncio.sleep(0.05)
            beside_closed = await play_paused(one, 8, [RIGHT, RIGHT])
            await one.close()
            return alone, beside_closed, len(app[GAMES])

    alone, beside_closed, open_games = asyncio.run(scenario())
    assert alone == beside_closed and open_games in (0, 1)
    assert made[0].calls == [("reset", 8), RIGHT, RIGHT] * 2
    assert made[1].calls == [("reset", 9), LEFT] and made[1].closed


def test_beside_the_real_game_both_take_the_keys_and_the_gif_shows_both(recorded):
    from PIL import Image

    open_dream, made = recorded

    async def scenario():
        async with play_server(open_dream) as (url, _), aiohttp.ClientSession() as session:
            ws, _ = await open_game(session, url)
            await play_paused(ws, 2, [RIGHT])
            await ws.send_json({"type": "beside", "on": True})
            assert (await receive(ws, "state"))["beside"]
            started = await receive(ws, "frame")
            real = [started["real"]]
            for action in (FIRE, RIGHT, RIGHT):
                await ws.send_json({"type": "action", "action": action})
                await ws.send_json({"type": "step"})
                real.append((await receive(ws, "frame"))["real"])
            await ws.send_json({"type": "gif"})
            gif = await receive(ws, "binary")
            await ws.close()
            return started, real, gif

    started, real, gif = asyncio.run(scenario())
    assert started["step"] == 0 and started["seed"] == 2  # a new episode of both, same seed
    frames = [np.frombuffer(base64.b64decode(r["frame"]), np.uint8) for r in real]
    assert all(f.shape == (64 * 64 * 3,) and f.any() for f in frames)
    assert made[0].calls[-4:] == [("reset", 2), FIRE, RIGHT, RIGHT]
    image = Image.open(io.BytesIO(gif))
    assert gif[:6] == b"GIF89a" and image.n_frames == 4
    assert image.size == (2 * 256 + 8, 24 + 256)  # real and dream side by side, labelled


def test_the_token_guards_page_and_socket_and_only_loopback_names_are_answered(recorded):
    open_dream, _ = recorded

    async def scenario():
        async with play_server(open_dream, token="s3cret") as (url, _):
            jar = aiohttp.CookieJar(unsafe=True)  # keeps cookies of an IP address
            async with aiohttp.ClientSession(cookie_jar=jar) as session:
                assert (await session.get(f"{url}/")).status == 401
                assert (await session.get(f"{url}/?token=wrong")).status == 401
                with pytest.raises(aiohttp.WSServerHandshakeError, match="401"):
                    await session.ws_connect(f"{url}/ws")
                page = await session.get(f"{url}/?token=s3cret")
                assert page.status == 200 and page.cookies[COOKIE].value == "s3cret"
                assert (await session.get(f"{url}/static/play.js")).status == 200  # the cookie
                ws, hello = await open_game(session, url)
                assert hello["game"] == "Breakout"
                await ws.close()
        async with play_server(open_dream) as (url, _), aiohttp.ClientSession() as session:
            assert (await session.get(f"{url}/", headers={"Host": "evil.test"})).status == 403
            with pytest.raises(aiohttp.WSServerHandshakeError, match="403"):
                await session.ws_connect(f"{url}/ws", origin="http://evil.test")
            assert (await session.get(f"{url}/")).status == 200

    asyncio.run(scenario())


def test_a_served_dream_plays_the_frames_of_an_in_process_one(dream_server):
    actions = [RIGHT, FIRE, LEFT, LEFT]

    async def frames_of(open_dream):
        async with play_server(open_dream) as (url, _), aiohttp.ClientSession() as session:
            ws, _ = await open_game(session, url)
            frames = await play_paused(ws, 6, actions)
            await ws.close()
            return frames

    local = asyncio.run(frames_of(dream_maker(PlayArgs(threads=1))[0]))
    open_remote, source = dream_maker(PlayArgs(server=dream_server))
    assert source == f"on the wmsim serve at {dream_server}"
    assert asyncio.run(frames_of(open_remote)) == local


# -- the command ------------------------------------------------------------------------------


def run_wmsim(*args: str, code: str = "", env: dict | None = None):
    script = f"{code}\nimport sys\nfrom wmsim.cli import main\nsys.exit(main({list(args)!r}))"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})}, cwd=ROOT)  # fmt: skip


def test_a_port_in_use_is_one_clear_error():
    import socket

    from wmsim.errors import UserError

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    app = create_app(lambda: None, source="nowhere")
    try:
        with pytest.raises(UserError, match="pick another --port"):
            asyncio.run(start_site(app, "127.0.0.1", taken.getsockname()[1]))
    finally:
        taken.close()


def test_the_command_explains_a_missing_aiohttp_and_an_unsafe_host_in_one_line():
    missing = run_wmsim("play", code="import sys; sys.modules['aiohttp'] = None")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        'wmsim: error: `wmsim play` needs aiohttp: pip install -e ".[play]"']  # fmt: skip
    exposed = run_wmsim("play", "--host", "0.0.0.0", env={"WMSIM_TOKEN": ""})
    assert exposed.returncode == 2 and len(exposed.stderr.strip().splitlines()) == 1
    assert "--token-file" in exposed.stderr
    both = run_wmsim("play", "--model", "Breakout", "--server", "127.0.0.1:1")
    assert both.returncode == 2 and "not both" in both.stderr


# -- the page in a real browser ---------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
KEYS = {"ArrowRight": ("ArrowRight", 39), "ArrowLeft": ("ArrowLeft", 37), " ": ("Space", 32),
        "p": ("KeyP", 80), "n": ("KeyN", 78), "r": ("KeyR", 82), "b": ("KeyB", 66)}  # fmt: skip
STEP = 'Number(document.getElementById("step").textContent)'
OVER = '/episode over/.test(document.getElementById("status").textContent)'
CANVAS_HASH = """(() => { let h = 2166136261;
  for (const v of document.getElementById(%r).getContext("2d").getImageData(0, 0, 64, 64).data)
    h = Math.imul(h ^ v, 16777619) >>> 0;
  return h; })()"""


class DevTools:
    """A page in Chromium, driven over the DevTools protocol (commands only; events are skipped)."""

    def __init__(self, ws):
        self.ws, self.next_id = ws, 0

    async def send(self, method: str, **params):
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            reply = json.loads((await self.ws.receive(60)).data)
            if reply.get("id") == self.next_id:
                assert "error" not in reply, reply
                return reply["result"]

    async def eval(self, expression: str):
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30):
        for _ in range(int(timeout / 0.05)):
            value = await self.eval(expression)
            if value:
                return value
            await asyncio.sleep(0.05)
        shown = await self.eval('document.getElementById("status").textContent')
        raise AssertionError(f"never true: {expression}; the page says {shown!r}")

    async def key(self, key: str, kind: str = "press"):
        code, virtual = KEYS[key]
        for event in {"press": ("keyDown", "keyUp"), "down": ("keyDown",), "up": ("keyUp",)}[kind]:
            await self.send("Input.dispatchKeyEvent", type=event, key=key, code=code,
                            windowsVirtualKeyCode=virtual)  # fmt: skip


async def play_keys(page: DevTools, keys: list[str | None]) -> list[int]:
    """Reset with seed 11 and step once per key held (None: no key) -> the canvas after each."""
    await page.eval('document.getElementById("seed").value = "11"')
    await page.key("r")
    await page.wait_for('document.getElementById("step").textContent === "0"')
    await page.wait_for('document.getElementById("seed-shown").textContent === "11"')
    hashes = [await page.eval(CANVAS_HASH % "dream")]
    for i, key in enumerate(keys, start=1):
        if key is not None:
            await page.key(key, "down")
        await page.key("n")
        await page.wait_for(f'document.getElementById("step").textContent === "{i}"')
        hashes.append(await page.eval(CANVAS_HASH % "dream"))
        if key is not None:
            await page.key(key, "up")
    return hashes


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium or chromium-browser on this machine")
def test_the_page_in_chromium_plays_the_keys_pressed(tmp_path, recorded):
    open_dream, made = recorded
    keys = ["ArrowRight", "ArrowLeft", " ", None, "ArrowRight"]

    async def scenario():
        async with play_server(open_dream) as (url, app), aiohttp.ClientSession() as session:
            profile = tmp_path / "profile"
            browser = subprocess.Popen(
                [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--remote-debugging-port=0", f"--user-data-dir={profile}",
                 "--window-size=880,1040", "about:blank"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                active = profile / "DevToolsActivePort"  # Chromium writes its port here
                for _ in range(600):
                    if active.is_file() and active.read_text().count("\n") >= 1:
                        break
                    await asyncio.sleep(0.1)
                port = active.read_text().split()[0]
                async with session.get(f"http://127.0.0.1:{port}/json/list") as listed:
                    target = next(t for t in await listed.json() if t["type"] == "page")
                async with session.ws_connect(target["webSocketDebuggerUrl"],
                                              max_msg_size=0) as ws:  # fmt: skip
                    return await drive(DevTools(ws), url, app)
            finally:
                browser.kill()
                browser.wait()

    async def drive(page: DevTools, url: str, app):
        await page.send("Emulation.setDeviceMetricsOverride", width=880, height=1010,
                        deviceScaleFactor=1, mobile=False)  # fmt: skip
        await page.send("Page.navigate", url=f"{url}/")
        await page.wait_for('document.getElementById("game").textContent === "Breakout"')
        await page.wait_for('document.querySelectorAll("#keys tr").length === 4')
        mapping = await page.eval('document.getElementById("keys").innerText')
        await page.wait_for(f"{STEP} > 0")
        before = await page.eval(CANVAS_HASH % "dream")
        await page.key("ArrowRight", "down")  # the clock runs: hold right for a while
        await page.wait_for(f"{STEP} > 12 || {OVER}")
        await page.key("ArrowRight", "up")
        running = await page.eval(CANVAS_HASH % "dream")
        await page.key("p")
        await page.wait_for('!document.getElementById("step-once").disabled')
        start = len(made[0].calls)
        first = await play_keys(page, keys)
        second = await play_keys(page, keys)
        played = made[0].calls[start:]
        await page.key("b")
        await page.wait_for('!document.getElementById("real-figure").hidden')
        await page.wait_for('document.getElementById("step").textContent === "0"')
        await page.key("ArrowRight", "down")
        await page.key("n")
        await page.wait_for('document.getElementById("step").textContent === "1"')
        await page.key("ArrowRight", "up")
        real = await page.eval(CANVAS_HASH % "real")
        blank = await page.eval(
            '(() => { const c = document.createElement("canvas"); c.width = c.height = 64;'
            " const d = c.getContext('2d'); d.fillStyle = '#000'; d.fillRect(0, 0, 64, 64);"
            " let h = 2166136261; for (const v of d.getImageData(0, 0, 64, 64).data)"
            " h = Math.imul(h ^ v, 16777619) >>> 0; return h; })()"
        )  # fmt: skip
        sizes = await page.eval(
            '["dream", "real"].map(id => document.getElementById(id).getBoundingClientRect())'
            ".map(r => [r.width, r.height])"
        )
        await page.eval('const f = document.getElementById("fps"); f.value = "60";'
                        ' f.dispatchEvent(new Event("input"))')  # fmt: skip
        # play a while for the picture, from a start whose dream lasts with the shipped model
        await page.eval('document.getElementById("seed").value = "2"')
        await page.key("r")
        await page.wait_for('document.getElementById("seed-shown").textContent === "2"')
        await page.key("ArrowRight", "down")
        await page.key("p")
        await page.wait_for(f"{STEP} >= 15 || {OVER}")
        await page.key("ArrowRight", "up")
        await page.key("ArrowLeft", "down")
        await page.wait_for(f"{STEP} >= 45 || {OVER}")
        await page.key("ArrowLeft", "up")
        await page.key("p")
        await page.wait_for('!document.getElementById("step-once").disabled')
        fps = [game.controls.fps for game in app[GAMES]]
        shot = await page.send("Page.captureScreenshot", format="png")
        return mapping, before, running, first, second, played, real, blank, sizes, fps, shot

    mapping, before, running, first, second, played, real, blank, sizes, fps, shot = asyncio.run(
        scenario()
    )
    assert "RIGHT\t→" in mapping and "FIRE\tSpace" in mapping
    assert before != running  # the dream moved on the page's clock
    assert RIGHT in made[0].calls[: made[0].calls.index(("reset", 11))]  # the held key was played
    actions = [RIGHT, LEFT, FIRE, NOOP, RIGHT]
    assert played == [("reset", 11), *actions, ("reset", 11), *actions]
    assert first == second and len(set(first)) > 1  # a seed replays the same frames
    assert real != blank and sizes == [[384, 384], [384, 384]]
    assert fps == [60.0]  # the page's rate reached its game's clock
    png = base64.b64decode(shot["data"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "play.png").write_bytes(png)
    if os.environ.get("WMSIM_PLAY_SCREENSHOT"):  # refresh docs/play.md's picture on purpose only
        Path(os.environ["WMSIM_PLAY_SCREENSHOT"]).write_bytes(png)
