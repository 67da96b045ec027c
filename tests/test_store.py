"""Which bundle a dream env loads: model=, then WMSIM_MODEL, the user store, the default."""

import shutil

import pytest

from wmsim.cli import main
from wmsim.errors import UserError
from wmsim.store import EMBEDDED, list_models, resolve_model, store

DEFAULT = EMBEDDED / "Breakout.wmsim"


@pytest.fixture(autouse=True)
def clean_home(tmp_path, monkeypatch):
    monkeypatch.setenv("WMSIM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WMSIM_MODEL", raising=False)


def test_resolution_order(tmp_path, monkeypatch):
    assert resolve_model("Breakout") == DEFAULT
    mine = tmp_path / "mine.wmsim"
    shutil.copytree(DEFAULT, mine)
    assert main(["models", "add", str(mine)]) == 0  # named after its game: Breakout's default now
    assert resolve_model("Breakout") == store() / "Breakout.wmsim"
    monkeypatch.setenv("WMSIM_MODEL", str(mine))
    assert resolve_model("Breakout") == mine
    assert resolve_model("Breakout", model=DEFAULT) == DEFAULT


def test_a_name_finds_a_bundle_in_the_store(tmp_path, capsys):
    assert main(["models", "add", str(DEFAULT), "--name", "fast"]) == 0
    assert resolve_model("Breakout", model="fast") == store() / "fast.wmsim"
    assert resolve_model("Breakout", model="fast.wmsim") == store() / "fast.wmsim"
    assert main(["models", "list"]) == 0
    listed = capsys.readouterr().out
    assert "fast" in listed and "embedded" in listed
    assert [where for where, _ in list_models()] == ["store", "embedded"]


def test_a_game_without_a_model_names_the_commands_that_make_one():
    with pytest.raises(UserError, match="wmsim collect --game Pong.*wmsim export"):
        resolve_model("Pong")
    with pytest.raises(UserError, match="neither a directory nor a name"):
        resolve_model("Breakout", model="nothing-here")


def test_adding_a_damaged_bundle_is_refused(tmp_path, capsys):
    broken = tmp_path / "broken.wmsim"
    shutil.copytree(DEFAULT, broken)
    (broken / "step.onnx").unlink()
    assert main(["models", "add", str(broken)]) == 2
    assert "step.onnx is missing" in capsys.readouterr().err
    assert not (store() / "Breakout.wmsim").exists()


@pytest.mark.parametrize(
    "name", ["", ".hidden", "x" * 101, "x.wmsim.wmsim", "../escape", "a/b", "with space"]
)
def test_bad_store_names_are_refused_in_one_line(name, capsys):
    assert main(["models", "add", str(DEFAULT), "--name", name]) == 2
    err = capsys.readouterr().err
    assert "a model name is 1 to 100 letters" in err and "Traceback" not in err
    assert not store().exists() or not list(store().iterdir())


def test_a_stored_model_is_replaced_only_with_force(capsys):
    assert main(["models", "add", str(DEFAULT), "--name", "mine.wmsim"]) == 0
    assert resolve_model("Breakout", model="mine") == store() / "mine.wmsim"
    assert main(["models", "add", str(DEFAULT), "--name", "mine"]) == 2
    assert "already holds 'mine'" in capsys.readouterr().err
    assert main(["models", "add", str(DEFAULT), "--name", "mine", "--force"]) == 0


def test_a_full_disk_during_add_is_one_line(tmp_path, monkeypatch, capsys):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", full)
    assert main(["models", "add", str(DEFAULT), "--name", "big"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "WMSIM_HOME" in err and "Traceback" not in err
    assert not (store() / "big.wmsim").exists() and not list(store().glob(".*"))
