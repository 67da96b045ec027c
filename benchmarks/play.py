"""Key press to the frame it caused in ``wmsim play``, dreamed in-process and on a ``wmsim serve``.

Starts ``wmsim play --port 0`` as a user does, once dreaming in its own process
and once with ``--server`` on a ``wmsim serve`` started here (same bundle, one
onnxruntime thread each), and plays it as the page does over its WebSocket: at
each ``--fps``, ``--presses`` key changes at random moments, each choosing a new
action with an id. The latency of one is from sending it to receiving the
frame of the step that played it, the number the page shows as "key to frame".
The game steps on a clock, so a press waits for the next tick: half a tick on
average (33 ms at 15 fps), then the step and the transfer. Drawing the 64 x 64
frame in the browser (well under a millisecond) is not included. An episode
that ends is reset and the press sent again.

    python benchmarks/play.py [--bundle PATH] [--fps 15 30] [--presses 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

RIGHT, LEFT = 2, 3  # Breakout's; any two actions of the game will do


def start(command: list[str], pattern: str) -> tuple[subprocess.Popen, str]:
    """Run ``command`` until a line of its output matches ``pattern`` -> (process, group 1)."""
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        log.write(line)
        found = re.search(pattern, line)
        if found:
            # keep draining its output so it never blocks on a full pipe
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return process, found.group(1)
    log.seek(0)
    raise RuntimeError(f"{' '.join(command[2:4])} did not start:\n{log.read()}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


async def next_frame(ws) -> dict:
    while True:
        message = await ws.receive_json(timeout=60)
        if message["type"] == "error":
            raise RuntimeError(message["message"])
        if message["type"] == "frame":
            return message


async def measure(url: str, fps: float, presses: int, rng: np.random.Generator) -> list[float]:
    """Seconds from each key change sent to the frame that played it."""
    import aiohttp

    latencies, seed = [], 0
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{url}ws") as ws:
        await ws.receive_json(timeout=60)  # hello
        await ws.send_json({"type": "fps", "fps": fps})
        await ws.send_json({"type": "reset", "seed": seed})
        await next_frame(ws)
        for press in range(1, 1 + presses):
            await asyncio.sleep(rng.uniform(1, 2) / fps)  # a random moment between ticks
            change = {"type": "action", "action": (RIGHT, LEFT)[press % 2], "id": press}
            sent = time.perf_counter()
            await ws.send_json(change)
            while True:
                frame = await next_frame(ws)
                played = frame["input"] == press
                if played:
                    latencies.append(time.perf_counter() - sent)
                if frame["ended"]:  # a new episode, and the press again if it was not played
                    seed += 1
                    await ws.send_json({"type": "reset", "seed": seed})
                    await next_frame(ws)
                    if not played:
                        sent = time.perf_counter()
                        await ws.send_json(change)
                if played:
                    break
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, help="default: the Breakout model wmsim ships")
    parser.add_argument("--fps", type=float, nargs="+", default=[15.0, 30.0])
    parser.add_argument("--presses", type=int, default=100, help="key changes per measurement")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads")
    args = parser.parse_args()
    import aiohttp
    import onnxruntime

    from wmsim.bundle import read_spec
    from wmsim.store import resolve_model

    bundle = args.bundle or resolve_model("Breakout")
    game = read_spec(bundle)["game"]
    wmsim = [sys.executable, "-m", "wmsim"]
    server, address = start([*wmsim, "serve", "--model", str(bundle), "--port", "0",
                             "--threads", str(args.threads), "--metrics-every-s", "0"],
                            r"event=serving address=([^ ]+)")  # fmt: skip
    pages = {}
    try:
        play = [*wmsim, "play", "--port", "0"]
        pages["in-process"] = start([*play, "--model", str(bundle), "--threads",
                                     str(args.threads)], r"open (http://\S+)")  # fmt: skip
        pages["wmsim serve"] = start([*play, "--server", address, "--game", game],
                                     r"open (http://\S+)")  # fmt: skip
        print(f"{platform.machine()}, {os.cpu_count()} CPUs, onnxruntime "
              f"{onnxruntime.__version__} ({args.threads} thread), aiohttp {aiohttp.__version__}, "
              f"{bundle}")  # fmt: skip
        print("key change sent -> the frame that played it received, over the page's WebSocket")
        print(f"{'dream':14s}{'fps':>5s}{'presses':>9s}{'tick ms':>9s}{'p50 ms':>9s}{'p99 ms':>9s}")
        rng = np.random.default_rng(0)
        for fps in args.fps:
            for name, (_, url) in pages.items():
                latencies = np.array(asyncio.run(measure(url, fps, args.presses, rng))) * 1000
                p50, p99 = np.percentile(latencies, [50, 99])
                print(f"{name:14s}{fps:5g}{len(latencies):9d}{1000 / fps:9.1f}{p50:9.1f}{p99:9.1f}")
    finally:
        for process, _ in pages.values():
            stop(process)
        stop(server)


if __name__ == "__main__":
    main()
