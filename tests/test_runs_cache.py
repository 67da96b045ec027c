"""A training run as a model: served, dreamed and made into envs straight from its directory."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from serving import play, served

import wmsim  # noqa: F401  registers the ids
from wmsim.agent.commands import AgentTrainArgs, agent_train
from wmsim.bundle import open_bundle
from wmsim.cli import main
from wmsim.errors import UserError
from wmsim.runs_cache import CHECKPOINT
from wmsim.store import resolve_model, runs_cache
from wmsim.train import checkpoint
from wmsim.train.loop import TrainArgs, train

ID = "wmsim/Breakout-dream-v0"
TINY = {"preset": "tiny", "batch": 2, "length": 8, "precision": "fp32"}
EXPORTED = re.compile(r"wmsim: exported (\S+) \(step (\d+)\) to (\S+\.wmsim); using that")


@pytest.fixture(scope="module")
def run(breakout_replay, tmp_path_factory) -> Path:
    """A `wmsim train` run of two steps."""
    out = tmp_path_factory.mktemp("runs") / "run"
    train(TrainArgs(data=breakout_replay, out=out, steps=2, **TINY), progress=False)
    return out


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """WMSIM_HOME of the module's server: its cache is empty until the server exports the run."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def server(run, home):
    """`wmsim serve --model RUN`, the first user of ``home``: it exports the run."""
    with served("--model", run, "--max-envs", 8, "--metrics-every-s", 0,
                env={"WMSIM_HOME": str(home)}) as running:  # fmt: skip
        yield running


@pytest.fixture(scope="module")
def first_export(server, home) -> Path:
    """The bundle the server exported the run to (the only one until a test exports more)."""
    (bundle,) = (home / "cache" / "runs").glob("*.wmsim")
    return bundle


@pytest.fixture
def exported(first_export, home, monkeypatch) -> Path:
    """The server's export, with WMSIM_HOME the server's."""
    monkeypatch.setenv("WMSIM_HOME", str(home))
    monkeypatch.delenv("WMSIM_MODEL", raising=False)
    return first_export


@pytest.fixture
def reports(caplog):
    """The lines the run cache says (it logs them where logging is configured, as here)."""
    caplog.set_level(logging.INFO, logger="wmsim.runs")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "wmsim.runs"]


def identity(path: Path) -> tuple[int, int]:
    """spec.json's inode and mtime: an export writes a new one, a reuse leaves it."""
    info = (path / "spec.json").stat()
    return info.st_ino, info.st_mtime_ns


@pytest.mark.slow
def test_a_served_run_dreams_what_the_run_dreams_in_process(server, run, exported, reports):
    line = server.wait_for_log(r"wmsim: exported ")
    assert EXPORTED.search(line).groups() == (str(run), "2", str(exported))
    assert exported.name.startswith("Breakout-")
    assert f"model={exported}" in server.wait_for_log("event=serving")
    before = identity(exported)
    # drawn ends: a tiny run's continue head is rarely sure of an end, and the comparison
    # must go through ends and autoresets
    remote = gymnasium.make_vec(ID, num_envs=4, server=server.address, ends="sampled")
    local = gymnasium.make_vec(ID, num_envs=4, threads=1, model=str(run), ends="sampled")
    assert reports() == [f"{run} (step 2) was exported to {exported} before; using that"]
    assert identity(exported) == before  # reused, not exported again
    ends = 0
    for a, b in zip(play(remote, 20, 5), play(local, 20, 5), strict=True):
        assert np.array_equal(a[0], b[0])  # frames
        if len(a) == 5:
            np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6)  # rewards
            assert np.array_equal(a[2], b[2]) and np.array_equal(a[3], b[3])  # ends
            ends += int(a[2].sum())
    assert ends > 0  # the comparison went through episode ends and autoresets
    remote.close()
    local.close()


@pytest.mark.slow
def test_the_export_is_reused_until_the_checkpoint_changes(
    breakout_replay, run, exported, tmp_path, reports
):
    before = identity(exported)
    assert resolve_model("Breakout", run / CHECKPOINT) == exported
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert resolve_model("Breakout", copy) == exported  # keyed by the checkpoint's bytes
    assert identity(exported) == before
    assert reports() == [f"{where} (step 2) was exported to {exported} before; using that"
                         for where in (run / CHECKPOINT, copy)]  # fmt: skip
    train(TrainArgs(data=breakout_replay, out=copy, steps=3, resume=True, **TINY), progress=False)
    rng = torch.get_rng_state()
    again = resolve_model("Breakout", copy)
    assert torch.equal(torch.get_rng_state(), rng)  # the export's example noise is its own
    assert again != exported and again.parent == exported.parent
    assert reports()[-1] == f"exported {copy} (step 3) to {again}; using that"
    assert open_bundle(again).spec["training"]["steps"] == 3
    assert open_bundle(exported).spec["training"]["steps"] == 2  # the old one stays
    video = tmp_path / "d.gif"
    assert main(["dream", "--model", str(copy), "--out", str(video), "--steps", "3"]) == 0
    assert video.stat().st_size > 0
    assert reports()[-1] == f"{copy} (step 3) was exported to {again} before; using that"


NO_TORCH = """
import sys
sys.modules["torch"] = None  # as if it were not installed
from wmsim.errors import UserError
from wmsim.store import resolve_model
try:
    print(resolve_model("Breakout", sys.argv[1]))
except UserError as error:
    print(f"error: {error}")
"""


@pytest.mark.slow
def test_without_torch_an_exported_run_loads_and_a_new_one_names_what_to_install(
    run, exported, tmp_path
):
    def resolve(home: Path) -> str:
        result = subprocess.run(
            [sys.executable, "-c", NO_TORCH, str(run)], capture_output=True, text=True,
            check=True, env={**os.environ, "WMSIM_HOME": str(home)},
        )  # fmt: skip
        return result.stdout.strip()

    assert resolve(exported.parents[2]) == str(exported)
    error = resolve(tmp_path / "fresh")
    assert error.startswith(f"error: {run} is a training run, and exporting it needs torch")
    assert "pip install torch" in error and "wmsim export --run" in error


@pytest.mark.slow
def test_an_agent_runs_world_model_is_exported_from_its_replay(tmp_path, monkeypatch, reports):
    monkeypatch.setenv("WMSIM_HOME", str(tmp_path / "home"))
    agent = tmp_path / "agent"
    agent_train(AgentTrainArgs(
        out=agent, game="Breakout", env_steps=64, preset="tiny", warmup_steps=48, train_every=16,
        imagine_batch=4, eval_every=0, eval_episodes=1, eval_max_frames=200, device="cpu",
    ), progress=False)  # fmt: skip
    env = gymnasium.make(ID, model=str(agent), threads=1)
    bundle = open_bundle(resolve_model("Breakout", agent))
    assert reports()[0] == f"exported {agent} (step 2) to {bundle.path}; using that"
    training = bundle.spec["training"]
    updates = checkpoint.load_checkpoint(agent)["updates"]
    assert (training["kind"], training["steps"]) == ("agent", updates)
    assert training["data"] == str(agent / "replay")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and env.step(1)[0].shape == (64, 64, 3)
    env.close()


def test_the_checkpoint_name_is_the_trainers():
    assert CHECKPOINT == checkpoint.CHECKPOINT


def _neither(path: Path, run: Path) -> Path:
    path.mkdir()
    (path / "notes.txt").write_text("not a model")
    return path


def _not_saved_yet(path: Path, run: Path) -> Path:
    path.mkdir()
    (path / "config.json").write_text("{}")
    return path


def _damaged(path: Path, run: Path) -> Path:
    path.mkdir()
    (path / CHECKPOINT).write_bytes(b"\x00 not a checkpoint")
    return path


def _truncated(path: Path, run: Path) -> Path:
    path.mkdir()
    (path / CHECKPOINT).write_bytes((run / CHECKPOINT).read_bytes()[:1000])
    return path


def _replay_gone(path: Path, run: Path) -> Path:
    path.mkdir()
    saved = checkpoint.load_checkpoint(run)
    saved["config"]["data"] = str(path / "gone")
    checkpoint.save_checkpoint(path, {k: v for k, v in saved.items() if k != "format"})
    return path


def _policy_only(path: Path, run: Path) -> Path:
    agent_train(AgentTrainArgs(out=path, env=ID, env_steps=16, preset="tiny", num_envs=2,
                               horizon=8, eval_episodes=1, eval_max_frames=200, device="cpu"),
                progress=False)  # fmt: skip
    return path


BAD = {
    "neither": (_neither, "is neither a model bundle nor a training run .*a run directory of"),
    "no checkpoint yet": (_not_saved_yet, "is a training run without a checkpoint yet"),
    "not a checkpoint": (_damaged, r"checkpoint.pt is damaged, or no checkpoint of `wmsim train`"),
    "truncated": (_truncated, r"checkpoint.pt is damaged \(.*\); it cannot be loaded"),
    "replay gone": (_replay_gone, r"trained on the replay .*/gone, which is not there"),
    "policy only": (_policy_only, "an agent trained in a dream env .* holds a policy"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_run_is_one_line_naming_the_fix(case, run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WMSIM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WMSIM_MODEL", raising=False)
    make, message = BAD[case]
    bad = make(tmp_path / "bad", run)
    capsys.readouterr()
    assert main(["dream", "--model", str(bad), "--out", str(tmp_path / "d.gif")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("wmsim: error: ") and re.search(message, err)
    assert not (tmp_path / "d.gif").exists()
    with pytest.raises(UserError, match=message):
        gymnasium.make(ID, model=str(bad))
    assert not list(runs_cache().glob("*.wmsim"))


def test_serve_refuses_a_directory_that_is_neither_in_one_line(tmp_path):
    bad = _neither(tmp_path / "bad", tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "wmsim", "serve", "--model", str(bad), "--port", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"wmsim: error: {bad} is neither a model bundle nor a training")
