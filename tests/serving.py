"""A real ``wmsim serve`` in a child process on 127.0.0.1, port 0, for tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

STARTUP_S = 120


class ServerProcess:
    """A running ``wmsim serve``; ``address`` is ``127.0.0.1:PORT``; ``logs`` its stderr lines."""

    def __init__(self, args: list[str], env: dict | None = None):
        # computing every start state costs a server 2.5 s of start-up: the tests that compare
        # served dreams with in-process ones ask for it (--warm-starts), the rest go without
        warm = [] if "--warm-starts" in args else ["--no-warm-starts"]
        command = [sys.executable, "-m", "wmsim", "serve", "--port", "0", "--threads", "1", *warm,
                   *args]  # fmt: skip
        self.process = subprocess.Popen(
            command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        self.logs: list[str] = []
        self._port: str | None = None
        self._started = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._started.wait(STARTUP_S) or self._port is None:
            self.process.kill()
            raise RuntimeError("wmsim serve did not start:\n" + "".join(self.logs))
        self.address = f"127.0.0.1:{self._port}"

    def _read(self) -> None:
        for line in self.process.stderr:
            self.logs.append(line)
            found = re.search(r"event=serving address=[^ ]+:(\d+)", line)
            if found:
                self._port = found.group(1)
                self._started.set()
        self._started.set()  # it exited before serving

    def wait_for_log(self, pattern: str, timeout: float = 30) -> str:
        """The first log line matching ``pattern``, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.logs):
                if re.search(pattern, line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no log line matches {pattern!r}:\n{''.join(self.logs)}")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


@contextmanager
def served(*args: str | Path, env: dict | None = None):
    """``with served("--max-envs", "8") as server:`` a server, stopped (SIGTERM) on exit."""
    server = ServerProcess([str(a) for a in args], env)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.stop()


def self_signed(folder: Path, names: str) -> tuple[Path, Path]:
    """(certificate, key) in ``folder``: CN=localhost, subjectAltName ``names``."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", f"subjectAltName={names}",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)  # fmt: skip
    return cert, key


def play(envs, steps: int, seed: int):
    """reset(seed) and ``steps`` steps of random actions (seeded): every return value, in order."""
    rng = np.random.default_rng(seed)
    out = [envs.reset(seed=seed)]
    for _ in range(steps):
        out.append(envs.step(rng.integers(4, size=envs.num_envs)))
    return out


def spec(address: str, timeout: float = 5.0):
    """The GetSpecResponse of the server at ``address`` (gRPC)."""
    import grpc

    from wmsim.rpc.v1 import dream_pb2 as pb
    from wmsim.rpc.v1 import dream_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        return pb_grpc.DreamStub(channel).GetSpec(pb.GetSpecRequest(), timeout=timeout)


def free_envs(address: str, timeout: float = 5.0) -> int:
    """The free envs of the server at ``address`` (gRPC), as its GetSpec says."""
    return spec(address, timeout).free_envs


def wait_until(condition, timeout=10.0):
    """Poll ``condition`` until it holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


STEPPING_CLIENT = """
import sys, numpy as np, gymnasium, wmsim
envs = gymnasium.make_vec("wmsim/Breakout-dream-v0", num_envs=8, server=sys.argv[1])
envs.reset(seed=0)
while True:
    envs.step(np.zeros(8, int))
    print("stepping", flush=True)
"""


def kill_a_stepping_client(server: ServerProcess, where: str, max_envs: int) -> None:
    """A client process stepping 8 envs on ``where`` is killed: all ``max_envs`` are free again."""
    client = subprocess.Popen([sys.executable, "-c", STEPPING_CLIENT, where],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert client.stdout.readline().strip() == "stepping"
    assert free_envs(server.address) == max_envs - 8
    client.kill()
    client.wait()
    wait_until(lambda: free_envs(server.address) == max_envs)
    server.wait_for_log("event=session_(lost|end)")
