"""The run-directory lifecycle every loop shares: start or resume, settings, interrupts, logs."""

import json
import os
import signal

import pytest
import torch

from wmsim.configs import to_dict
from wmsim.errors import UserError
from wmsim.run_dir import RunDirectory, check_same_run
from wmsim.train.checkpoint import load_checkpoint, save_checkpoint
from wmsim.train.config import preset
from wmsim.train.logs import read_metrics

CPU = torch.device("cpu")
CONFIG = {"preset": "tiny", "seed": 0, "train": {"batch": 2, "eval_every": 3}}
KEYS = ("preset", "seed", "train")


def started(path, kind="test"):
    """A run of ``kind`` in ``path`` with one checkpoint, at step 3."""
    run_dir = RunDirectory(path, kind, resume=False)
    assert run_dir.open(CONFIG, KEYS, CPU) is None
    run_dir.save({"config": CONFIG, "step": 3})
    return run_dir


def test_a_new_run_writes_its_config_and_tags_its_checkpoints(tmp_path):
    run = tmp_path / "deep" / "run"
    started(run)
    assert json.loads((run / "config.json").read_text()) == CONFIG
    saved = load_checkpoint(run)
    assert saved["kind"] == "test" and saved["step"] == 3 and saved["config"] == CONFIG


def test_start_or_resume_is_refused_where_it_does_not_fit(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file; --out must be a directory"):
        RunDirectory(tmp_path / "file", "test", resume=False)
    with pytest.raises(UserError, match="holds no run to resume; drop --resume"):
        RunDirectory(tmp_path / "run", "test", resume=True)
    assert not (tmp_path / "run").exists()  # a refused command leaves nothing behind
    started(tmp_path / "run")
    with pytest.raises(UserError, match="already holds a run; pass --resume"):
        RunDirectory(tmp_path / "run", "test", resume=False)


def test_a_resume_returns_the_checkpoint_of_the_same_run_only(tmp_path):
    run = tmp_path / "run"
    started(run)
    saved = RunDirectory(run, "test", resume=True).open(CONFIG, KEYS, CPU)
    assert saved["step"] == 3
    rescheduled = {**CONFIG, "train": {"batch": 2, "eval_every": 5}}  # schedules may change
    assert RunDirectory(run, "test", resume=True).open(rescheduled, KEYS, CPU)["step"] == 3
    other = {**CONFIG, "train": {"batch": 4, "eval_every": 3}}
    with pytest.raises(UserError, match="batch: 2 there, 4 asked"):
        RunDirectory(run, "test", resume=True).open(other, KEYS, CPU)
    with pytest.raises(UserError, match="a run of another kind"):
        RunDirectory(run, "other", resume=True).open(CONFIG, KEYS, CPU)


def test_a_run_made_before_a_config_field_existed_resumes_with_its_default(tmp_path):
    asked = {
        "preset": "tiny-s5",
        "game": "Breakout",
        "seed": 0,
        "train": to_dict(preset("tiny-s5")),
    }
    saved = json.loads(json.dumps(asked))
    del saved["train"]["model"]["prior_recon_scale"]  # a run saved by an older wmsim
    check_same_run(tmp_path, saved, asked)
    saved["train"]["model"]["motion_weight"] = 1.0
    with pytest.raises(UserError, match="motion_weight: 1.0 there, 20.0 asked"):
        check_same_run(tmp_path, saved, asked)


def test_running_logs_from_its_step_and_saves_nothing_when_the_loop_ends(tmp_path):
    run_dir = started(tmp_path / "run")
    saves = []
    with run_dir.running(3, 5, lambda: saves.append(1), progress=False) as (log, bar):
        log.log(4, "train", {"loss": 1.0})
        bar.update(1)
    assert saves == [] and [m["step"] for m in read_metrics(run_dir.path)] == [4]
    assert log.file.closed and bar.disable


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raising KeyboardInterrupt, as in a terminal: a suite started in the background
    (``... &`` in a script) starts with SIGINT ignored, and Python then installs no handler."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("ctrl_c_raises")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupt_saves_a_checkpoint_then_goes_on(tmp_path, sig):
    run_dir = started(tmp_path / "run")
    before = signal.getsignal(signal.SIGTERM)

    def checkpoint():
        run_dir.save({"config": CONFIG, "step": 7})

    with pytest.raises(KeyboardInterrupt):
        with run_dir.running(3, 10, checkpoint, progress=False) as (log, _):
            log.log(7, "train", {"loss": 1.0})
            os.kill(os.getpid(), sig)
            pytest.fail("the signal did not interrupt the loop")
    assert load_checkpoint(run_dir.path)["step"] == 7
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back
    assert log.file.closed


def test_a_checkpoint_of_an_older_wmsim_resumes_as_the_kind_it_is(tmp_path):
    run = tmp_path / "run"
    RunDirectory(run, "train", resume=False).open(CONFIG, KEYS, CPU)
    save_checkpoint(run, {"config": CONFIG, "step": 3})  # untagged: a `wmsim train` run
    assert RunDirectory(run, "train", resume=True).open(CONFIG, KEYS, CPU)["step"] == 3
    with pytest.raises(UserError, match="a run of another kind"):
        RunDirectory(run, "agent", resume=True).open(CONFIG, KEYS, CPU)
