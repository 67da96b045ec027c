"""The malloc setting for large messages: applied where glibc is, and only when asked for.

It changes the whole process, so library calls (remote and same-host simulators and envs,
``serve()``, ``run_server``) leave it alone by default; the ``wmsim serve`` command, which
owns its process, turns it on.
"""

import asyncio
import platform
import subprocess
import sys

import pytest
import wmsim_client.remote
import wmsim_client.same_host
import wmsim_server.serve
from wmsim_client.remote import RemoteSimulator
from wmsim_client.same_host import SameHostSimulator
from wmsim_server.serve import ServeArgs, run_server

from wmsim.cli import main
from wmsim.errors import UserError

CODE = "from wmsim.rpc.memory import keep_freed_memory; print(keep_freed_memory())"
NOBODY = "127.0.0.1:1"  # a port nothing listens on: the simulator fails after the setting
NO_SOCKET = "local:/nonexistent/wmsim.sock"  # the same for a same-host server


def test_it_applies_on_glibc():
    result = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert result.stdout.strip() == str(platform.libc_ver()[0] == "glibc")


@pytest.fixture
def tuned(monkeypatch):
    """The calls of keep_freed_memory from the client and the server, counted."""
    calls = []
    for module in (wmsim_client.remote, wmsim_client.same_host, wmsim_server.serve):
        monkeypatch.setattr(module, "keep_freed_memory", lambda: calls.append(1) or True)
    return calls


SERVED = [(RemoteSimulator, NOBODY), (SameHostSimulator, NO_SOCKET)]


@pytest.mark.parametrize("asked", [False, True])
@pytest.mark.parametrize(("simulator", "server"), SERVED)
def test_a_served_simulator_tunes_malloc_only_when_asked(tuned, simulator, server, asked):
    options = {"tune_malloc": True} if asked else {}
    with pytest.raises(ConnectionError):
        simulator(server, 1, timeout=1.0, **options)
    assert len(tuned) == asked


@pytest.mark.parametrize("server", [NOBODY, NO_SOCKET])
def test_a_remote_env_passes_the_choice_on(tuned, server):
    from wmsim_client.vector import DreamVectorEnv

    with pytest.raises(ConnectionError):
        DreamVectorEnv(2, server=server, timeout=1.0)
    assert not tuned
    with pytest.raises(ConnectionError):
        DreamVectorEnv(2, server=server, timeout=1.0, tune_malloc=True)
    assert len(tuned) == 1


@pytest.mark.parametrize("asked", [False, True])
def test_run_server_tunes_malloc_only_when_asked(tuned, tmp_path, asked):
    args = ServeArgs(model=str(tmp_path / "missing.wmsim"), tune_malloc=asked)
    with pytest.raises(UserError):  # the model load comes after the setting
        asyncio.run(run_server(args))
    assert len(tuned) == asked


def test_the_serve_command_tunes_malloc_unless_told_not_to(monkeypatch):
    parsed = []
    monkeypatch.setattr(wmsim_server.serve, "serve", lambda args: parsed.append(args) or 0)
    assert main(["serve"]) == 0 and main(["serve", "--no-tune-malloc"]) == 0
    assert [args.tune_malloc for args in parsed] == [True, False]
    assert ServeArgs().tune_malloc is False  # a library call leaves malloc alone
