"""Same-host clients (``--socket``, ``server="local:PATH"``) against a real ``wmsim serve``."""

from __future__ import annotations

import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from serving import free_envs, kill_a_stepping_client, play, served, wait_until
from wmsim_client.remote import ServerError
from wmsim_client.same_host import SameHostSimulator

import wmsim  # noqa: F401  registers the ids
from wmsim.rpc import same_host as wire

ID = "wmsim/Breakout-dream-v0"
MAX_ENVS = 32


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory(dir="/tmp") as name:  # a socket path has ~100 bytes at most
        yield Path(name)


@pytest.fixture(scope="module")
def server(folder):
    path = folder / "wmsim.sock"
    with served(
        "--warm-starts", "--socket", path, "--max-envs", MAX_ENVS, "--max-sessions", 16
    ) as running:
        running.socket = path
        running.local = f"local:{path}"
        yield running


@pytest.mark.parametrize("obs_type", ["pixels", "latent"])
def test_same_host_dreams_what_in_process_dreams_for_the_same_seeds(server, obs_type):
    options = {"obs_type": obs_type, "latents": "sampled", "ends": "sampled",
               "render_mode": "rgb_array"}  # fmt: skip
    near = gymnasium.make_vec(ID, num_envs=8, server=server.local, **options)
    local = gymnasium.make_vec(ID, num_envs=8, threads=1, **options)
    ends = 0
    for a, b in zip(play(near, 150, 5), play(local, 150, 5), strict=True):
        np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-5)  # observations
        if len(a) == 5:
            np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6)
            assert np.array_equal(a[2], b[2]) and np.array_equal(a[3], b[3])
            ends += int(a[2].sum())
    assert ends > 0  # through episode ends and autoresets
    np.testing.assert_array_equal(np.stack(near.render()), np.stack(local.render()))  # frames
    near.close()
    local.close()


def test_same_host_and_grpc_clients_step_at_once_and_each_dreams_its_own(server):
    """Both go to the one runner: merged batches change no one's dream."""
    results: dict[str, list] = {}

    def drive(name, **where):
        envs = gymnasium.make_vec(ID, num_envs=4, obs_type="latent", latents="sampled", **where)
        results[name] = play(envs, 60, 9)
        envs.close()

    threads = [
        threading.Thread(target=drive, args=("grpc",), kwargs={"server": server.address}),
        threading.Thread(target=drive, args=("local",), kwargs={"server": server.local}),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    alone = play(gymnasium.make_vec(ID, num_envs=4, obs_type="latent", latents="sampled",
                                    threads=1), 60, 9)  # fmt: skip
    for name in ("grpc", "local"):
        for a, b in zip(results[name], alone, strict=True):
            np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-5)


def test_the_socket_is_this_users_only_and_a_single_env_passes_check_env(server):
    assert stat.S_IMODE(server.socket.stat().st_mode) == 0o600
    from gymnasium.utils.env_checker import check_env

    env = gymnasium.make(ID, server=server.local, render_mode="rgb_array")
    check_env(env.unwrapped, skip_render_check=True)
    env.reset(seed=1)
    assert env.render().shape == (64, 64, 3)
    env.close()


def test_bad_steps_get_their_error_and_the_server_serves_on(server):
    simulator = SameHostSimulator(server.local, 2, obs_type="latent")
    with pytest.raises(ServerError, match="reset envs \\[0\\] before stepping"):
        simulator.step(np.array([0]), np.array([1]), np.zeros(0, np.int64))
    with pytest.raises(ConnectionError, match="broke earlier"):  # an error ends the session
        simulator.step(np.array([0]), np.array([1]), np.zeros(0, np.int64))
    simulator.close()
    simulator = SameHostSimulator(server.local, 2, obs_type="latent")
    simulator.reset(np.array([0, 1]), [1, 2])
    with pytest.raises(ValueError, match=r"actions must be in \[0, 4\)"):
        simulator.step(np.array([0]), np.array([7]), np.zeros(0, np.int64))
    simulator.close()
    with pytest.raises(ValueError, match="num_envs must be at least 1"):
        SameHostSimulator(server.local, 0)
    with pytest.raises(ServerError, match="RESOURCE_EXHAUSTED|free"):
        SameHostSimulator(server.local, MAX_ENVS + 1)
    wait_until(lambda: free_envs(server.address) == MAX_ENVS)
    good = gymnasium.make_vec(ID, num_envs=2, server=server.local, obs_type="latent")
    good.reset(seed=0)
    good.step(np.zeros(2, int))
    good.close()


def raw(path: Path) -> socket.socket:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(10)
    connection.connect(str(path))
    return connection


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (struct.pack("<BI", wire.STEP, 0), "open a session first"),
        (
            struct.pack("<BI", wire.OPEN, 5) + b"\xff\xff\xff\xff\xff",
            "not a valid OpenSessionRequest",
        ),
        (struct.pack("<BI", wire.OPEN, 1 << 30), "over the limit"),
    ],
)
def test_garbage_on_the_socket_gets_an_error_and_the_server_serves_on(server, message, error):
    connection = raw(server.socket)
    connection.sendall(message)
    kind, payload, _ = wire.receive(connection, 1 << 20)
    assert kind == wire.ERROR
    refused = wire.Refused.parse(payload)
    assert refused.code == "INVALID_ARGUMENT" and error in refused.message
    assert connection.recv(1) == b""  # and the connection is closed
    connection.close()
    wait_until(lambda: free_envs(server.address) == MAX_ENVS)
    with SameHostSimulatorClosing(server.local) as simulator:
        simulator.reset(np.array([0]), [0])


class SameHostSimulatorClosing:
    def __init__(self, address):
        self.simulator = SameHostSimulator(address, 1, obs_type="latent")

    def __enter__(self):
        return self.simulator

    def __exit__(self, *exc):
        self.simulator.close()


def test_a_client_killed_mid_step_frees_its_envs(server):
    kill_a_stepping_client(server, server.local, MAX_ENVS)


def test_sigterm_ends_same_host_sessions_and_removes_the_socket(folder):
    path = folder / "drain.sock"
    with served("--socket", path) as running:
        envs = gymnasium.make_vec(ID, num_envs=2, server=f"local:{path}", obs_type="latent")
        envs.reset(seed=0)
        envs.step(np.zeros(2, int))
        assert running.stop() == 0
        with pytest.raises(ConnectionError):
            envs.step(np.zeros(2, int))
        envs.close()
    assert not path.exists()


def test_a_stale_socket_file_is_replaced_and_other_files_are_refused(folder):
    stale = folder / "stale.sock"
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(stale))
    left.close()  # the file stays, nobody listens
    with served("--socket", stale) as running:
        envs = gymnasium.make(ID, server=f"local:{stale}", obs_type="latent")
        envs.reset(seed=0)
        envs.close()
        assert running.process.poll() is None
    taken = folder / "taken"
    taken.write_text("mine")
    command = [sys.executable, "-m", "wmsim", "serve", "--port", "0", "--socket", taken]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "exists and is not a socket" in result.stderr
    assert "Traceback" not in result.stderr and taken.read_text() == "mine"


def test_a_missing_server_is_a_clear_error(folder):
    with pytest.raises(ConnectionError, match="cannot be reached"):
        gymnasium.make(ID, server=f"local:{folder / 'nobody.sock'}")
    with pytest.raises(ValueError, match="tls does not apply"):
        gymnasium.make(ID, server=f"local:{folder / 'nobody.sock'}", tls=True)
