"""Smoke test of an installed wmsim wheel, run from outside the repository.

Run by ``.ci/wheel`` in a fresh venv holding only ``wmsim[cpu]``: the lean
install must step a dream env, reach a real ``wmsim serve`` and get the same
dream from it, and answer a command that needs an extra with one line that
names it. With ``--atari`` (after ``wmsim[cpu,atari]``) it runs ``wmsim dream``.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import gymnasium
import numpy as np

import wmsim


def check_outside_the_tree() -> None:
    """The wmsim imported is the installed wheel, not a checkout."""
    where = Path(wmsim.__file__).resolve()
    assert "site-packages" in where.parts, f"wmsim imported from {where}, not the installed wheel"
    print(f"wmsim {wmsim.__version__} from {where.parent}")


def step(env: gymnasium.Env, seed: int, steps: int) -> list[np.ndarray]:
    """The frames of ``steps`` seeded steps of ``env``, cycling through the actions."""
    obs, _ = env.reset(seed=seed)
    frames = [obs]
    for t in range(steps):
        obs, reward, terminated, truncated, _ = env.step(t % env.action_space.n)
        frames.append(obs)
        if terminated or truncated:
            frames.append(env.reset()[0])
    return frames


def start_server() -> tuple[subprocess.Popen, str]:
    """A `wmsim serve` on a free port of 127.0.0.1, and its address once it serves."""
    command = ["wmsim", "serve", "--port", "0", "--threads", "1", "--host", "127.0.0.1"]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    for line in server.stderr:
        found = re.search(r"event=serving address=([^ ]+)", line)
        if found:
            return server, found.group(1)
    raise SystemExit(f"wmsim serve exited with {server.wait()} before serving")


def lean() -> None:
    """The base install: no heavy modules; local == remote; a clear error for an extra."""
    for heavy in ("torch", "onnx", "ale_py", "cv2"):
        assert importlib.util.find_spec(heavy) is None, f"{heavy} is installed by the base wheel"
    local = step(gymnasium.make("wmsim/Breakout-dream-v0"), seed=3, steps=32)
    print(f"in-process dream env: {len(local)} frames of {local[0].shape} {local[0].dtype}")
    server, address = start_server()
    try:
        remote = step(gymnasium.make("wmsim/Breakout-dream-v0", server=address), seed=3, steps=32)
    finally:
        server.terminate()
        server.wait(30)
    assert all(np.array_equal(a, b) for a, b in zip(local, remote, strict=True))
    print(f"remote dream env at {address}: the same {len(remote)} frames as in-process")
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run(
            ["wmsim", "dream", "--out", f"{out}/dream.gif"], capture_output=True, text=True
        )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "wmsim[atari]" in lines[0], result.stderr
    print(f"wmsim dream without the atari extra: {lines[0]}")


def atari() -> None:
    """With the atari extra: `wmsim dream` writes its GIF."""
    with tempfile.TemporaryDirectory() as out:
        gif = Path(out) / "dream.gif"
        subprocess.run(["wmsim", "dream", "--out", str(gif), "--steps", "16"], check=True)
        assert gif.stat().st_size > 0
        print(f"wmsim dream wrote {gif.stat().st_size} bytes")


if __name__ == "__main__":
    check_outside_the_tree()
    atari() if sys.argv[1:] == ["--atari"] else lean()
    print("smoke test passed")
