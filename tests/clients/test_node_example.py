"""The Node.js example client: installs from its lockfile, plays a served dream, matches Python."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import gymnasium
import pytest
from serving import served

import wmsim  # noqa: F401  registers the wmsim/<Game>-dream-v0 ids

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = Path("clients/examples/node")
NETWORK_ERRORS = ("ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "ECONNREFUSED", "network")
SEED = 0

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def node_example(tmp_path_factory) -> Path:
    """The example with its dependencies installed by ``npm ci``, in the repository's layout."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("the Node.js example needs node and npm on PATH")
    root = tmp_path_factory.mktemp("node-example")
    shutil.copytree(ROOT / "proto", root / "proto")  # the script loads ../../../proto/...
    shutil.copytree(ROOT / EXAMPLE, root / EXAMPLE, ignore=shutil.ignore_patterns("node_modules"))
    try:
        installed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=root / EXAMPLE, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.skip("npm ci took over 300 s: the npm registry is unreachable or too slow")
    output = installed.stdout + installed.stderr
    if installed.returncode != 0:
        if any(error.lower() in output.lower() for error in NETWORK_ERRORS):
            pytest.skip(f"the npm registry is unreachable:\n{output[-800:]}")
        pytest.fail(f"npm ci failed (exit status {installed.returncode}):\n{output}")
    return root / EXAMPLE


@pytest.fixture(autouse=True)
def no_token(monkeypatch):
    """Servers and clients take $WMSIM_TOKEN by default: each test sets its own."""
    monkeypatch.delenv("WMSIM_TOKEN", raising=False)


def random_agent(example: Path, server: str, *args: str, token: str | None = None):
    """Run ``node random_agent.js --server SERVER ARGS``, its $WMSIM_TOKEN ``token``."""
    env = {k: v for k, v in os.environ.items() if k != "WMSIM_TOKEN"}
    if token is not None:
        env["WMSIM_TOKEN"] = token
    command = [shutil.which("node"), "random_agent.js", "--server", server, *args]
    return subprocess.run(command, cwd=example, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_the_node_client_dreams_what_the_python_client_dreams(node_example):
    with served("--max-envs", "16") as server:
        run = random_agent(node_example, server.address,
                           "--envs", "4", "--steps", "50", "--seed", str(SEED))  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        result = json.loads(run.stdout.strip().splitlines()[-1])
        assert result["game"] == "Breakout"
        assert result["steps"] == 50 and result["env_steps"] == 200
        assert 0 <= result["autoresets"] <= result["episodes_ended"]
        assert result["steps_per_s"] > 0
        server.wait_for_log(r"event=session_(close|end) ")  # the session ended cleanly
        assert not any("event=session_lost" in line for line in server.logs)

        env = gymnasium.make("wmsim/Breakout-dream-v0", server=server.address)
        obs, _ = env.reset(seed=SEED)  # the node client seeds env 0 with --seed
        env.close()
        assert int(obs.sum()) == result["first_obs_sum"]


def test_the_node_client_sends_the_token_and_names_a_wrong_one(node_example):
    with served("--token", "s3cret") as server:
        right = random_agent(node_example, server.address, "--envs", "1", "--steps", "2",
                             token="s3cret")  # fmt: skip
        assert right.returncode == 0, right.stdout + right.stderr

        wrong = random_agent(node_example, server.address, "--envs", "1", token="wrong")
        assert wrong.returncode != 0
        assert "UNAUTHENTICATED" in wrong.stdout + wrong.stderr
