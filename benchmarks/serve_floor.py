"""The floor of a served step on this machine: a bare same-host exchange against in-process dreams.

What `wmsim serve` over the same-host socket could reach at best, without its protocol: a
server process holds a ``Dreams`` arena of ``--capacity`` rows (as ``wmsim serve
--max-envs``) and steps rows 0 .. ``--batch``-1 of it each time the client sends their
actions on a Unix socket; it puts their observations in shared memory and answers with
the rewards. No protobuf, no request checks, no batcher, no env code on either side: the
model's step of some rows of an arena, two wake-ups and a copy of the observations.

In turns with it, for ``--rounds`` rounds: the in-process ``DreamVectorEnv`` of ``--batch``
envs (what the remote targets compare with), and the same env's ``Dreams.step`` and
observations alone, so the env's own code can be counted on the served side too.

Prints, per observation type, the medians of the rounds (ms per vector step) and the
ratio in-process / bare exchange, without and with the env's own code added to the
exchange: where that ratio is below a remote target, no protocol reaches the target on
this machine.

    python benchmarks/serve_floor.py [--bundle PATH] [--batch 64] [--capacity 1024]
                                     [--steps 500] [--rounds 6] [--obs pixels latent]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import socket
import tempfile
import time
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

TARGETS = {"pixels": 0.9, "latent": 0.8}
"""Issue 19's remote targets: served over in-process, at batch 64 on a 2-core CPU."""


def exactly(connection: socket.socket, n: int) -> bytes:
    """``n`` bytes from ``connection``; b"" once it is closed."""
    data = b""
    while len(data) < n:
        chunk = connection.recv(n - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


def server(path: str, memory: str, bundle: str, capacity: int, batch: int, obs_type: str) -> None:
    """The bare server: step rows 0..batch-1 for each message of actions, until it closes."""
    from wmsim.runtime.dreams import Dreams

    shared = shared_memory.SharedMemory(memory)
    dreams = Dreams(bundle, capacity, decode=obs_type == "pixels")
    dreams.runtime.observe_contexts(np.arange(dreams.runtime.num_contexts))
    rows = np.arange(batch)
    dreams.reset(rows, list(range(batch)))
    spec = dreams.spec["observation" if obs_type == "pixels" else "latent"]
    out = np.ndarray((batch, *spec["shape"]), spec["dtype"], buffer=shared.buf)
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.connect(path)
    try:
        while message := exactly(connection, 8 * batch):
            reward, cont, terminated = dreams.step(rows, np.frombuffer(message, np.int64))
            out[...] = dreams.observations(rows, obs_type)
            connection.sendall(reward.tobytes() + cont.tobytes() + terminated.tobytes())
    finally:
        del out
        shared.close()
        connection.close()


def timed(step, steps: int, rng: np.random.Generator, actions: int, batch: int) -> float:
    """Median ms of ``step(actions)`` over ``steps`` calls, after a warm-up."""
    for _ in range(10):
        step(rng.integers(actions, size=batch))
    times = []
    for _ in range(steps):
        chosen = rng.integers(actions, size=batch)
        start = time.perf_counter()
        step(chosen)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000


def measure(args, obs_type: str) -> dict[str, list[float]]:
    """Each round's median ms per vector step: bare exchange, in-process env, its Dreams alone."""
    from wmsim_client.vector import DreamVectorEnv

    env = DreamVectorEnv(args.batch, model=args.bundle, obs_type=obs_type)
    dreams = env.simulator.dreams
    dreams.runtime.observe_contexts(np.arange(dreams.runtime.num_contexts))
    env.reset(seed=0)
    shape = env.single_observation_space.shape
    nbytes = int(np.prod(shape)) * env.single_observation_space.dtype.itemsize * args.batch
    shared = shared_memory.SharedMemory(create=True, size=nbytes)
    folder = tempfile.TemporaryDirectory(dir="/tmp")  # a socket path must stay short
    path = str(Path(folder.name) / "floor.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    child = multiprocessing.get_context("spawn").Process(
        target=server,
        args=(path, shared.name, str(args.bundle), args.capacity, args.batch, obs_type),
    )
    child.start()
    listener.settimeout(300)
    connection, _ = listener.accept()
    seen = np.ndarray((args.batch, *shape), env.single_observation_space.dtype, buffer=shared.buf)
    answer = 9 * args.batch  # reward and continue (float32), terminated (bool)
    rows = np.arange(args.batch)

    def exchange(actions: np.ndarray) -> None:
        connection.sendall(actions.astype(np.int64).tobytes())
        reply = exactly(connection, answer)
        np.frombuffer(reply, np.float32, count=args.batch)
        seen.copy()  # the observations are the caller's, as a client's are

    def bare_dreams(actions: np.ndarray) -> None:
        dreams.step(rows, actions)
        dreams.observations(rows, obs_type)

    rng, actions = np.random.default_rng(0), env.single_action_space.n
    setups = {"exchange": exchange, "in-process env": env.step, "its Dreams alone": bare_dreams}
    rounds: dict[str, list[float]] = {name: [] for name in setups}
    steps = args.steps if obs_type == "latent" else max(1, args.steps // 5)  # ~10x slower
    try:
        for _ in range(args.rounds):
            for name, step in setups.items():
                rounds[name].append(timed(step, steps, rng, actions, args.batch))
    finally:
        connection.close()
        child.join(60)
        listener.close()
        seen = None  # the last view of the shared memory, which must go before it closes
        shared.close()
        shared.unlink()
        folder.cleanup()
        env.close()
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, help="default: the Breakout model wmsim ships")
    parser.add_argument("--batch", type=int, default=64, help="envs")
    parser.add_argument("--capacity", type=int, default=1024, help="rows in the server's arena")
    parser.add_argument("--steps", type=int, default=500, help="latent steps a round (pixels: /5)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--obs", nargs="+", default=["pixels", "latent"])
    args = parser.parse_args()
    if args.capacity < args.batch:
        parser.error("--capacity must be at least --batch")
    from wmsim.store import resolve_model

    args.bundle = args.bundle or resolve_model("Breakout")
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, batch {args.batch} of a "
          f"{args.capacity}-row arena, {args.rounds} rounds in turns, {args.bundle}")  # fmt: skip
    print(f"{'obs':8s}{'exchange ms':>12s}{'in-process':>12s}{'Dreams':>9s}{'env code':>10s}"
          f"{'ratio':>8s}{'with env':>10s}")  # fmt: skip
    for obs_type in args.obs:
        rounds = measure(args, obs_type)
        bare, local, alone = (float(np.median(v)) for v in rounds.values())
        env_code = max(local - alone, 0.0)
        ratio, with_env = local / bare, local / (bare + env_code)
        print(f"{obs_type:8s}{bare:12.3f}{local:12.3f}{alone:9.3f}{env_code:10.3f}{ratio:8.2f}"
              f"{with_env:10.2f}")  # fmt: skip
        verdict = "under" if with_env < TARGETS[obs_type] else "at or over"
        print(
            f"floor on this machine: {obs_type} at best {with_env:.2f} of in-process served "
            f"({verdict} the target of {TARGETS[obs_type]})"
        )


if __name__ == "__main__":
    main()
