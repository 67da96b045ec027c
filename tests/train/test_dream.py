"""wmsim dream: a viewable video of the real game beside the model's dream of it."""

import cv2
import numpy as np
import pytest
from PIL import Image

from wmsim.dream import DreamArgs, dream
from wmsim.errors import UserError
from wmsim.train.loop import TrainArgs, train


@pytest.fixture(scope="module")
def run(breakout_replay, tmp_path_factory):
    out = tmp_path_factory.mktemp("dream") / "run"
    train(TrainArgs(data=breakout_replay, out=out, steps=2, preset="tiny", batch=2, length=8),
          progress=False)  # fmt: skip
    return out


def test_a_gif_shows_context_then_real_and_dream_side_by_side(run, tmp_path):
    path = dream(DreamArgs(run=run, out=tmp_path / "dream.gif", steps=12, context=4))
    with Image.open(path) as gif:
        assert gif.n_frames == 4 + 12
        assert gif.size == (2 * 256 + 8, 24 + 256)
        gif.seek(15)
        frame = np.asarray(gif.convert("RGB"))
    assert frame[24:, :256].std() > 0  # the real game is drawn
    # during the context both sides show the same real frames
    with Image.open(path) as gif:
        first = np.asarray(gif.convert("RGB"))
    assert (first[24:, :256] == first[24:, 264:]).all()


def test_an_mp4_opens_with_every_frame(run, tmp_path):
    path = dream(DreamArgs(run=run, out=tmp_path / "dream.mp4", steps=10, context=4))
    video = cv2.VideoCapture(str(path))
    frames = 0
    while video.read()[0]:
        frames += 1
    assert frames == 14
    assert [p.name for p in tmp_path.iterdir()] == ["dream.mp4"], "no temporary file is left"


def test_the_same_seed_dreams_the_same_and_another_differs(run, tmp_path):
    def frames(seed, name):
        path = dream(DreamArgs(run=run, out=tmp_path / name, steps=8, context=4, seed=seed))
        with Image.open(path) as gif:
            return [np.asarray(gif.seek(i) or gif.convert("RGB")) for i in range(gif.n_frames)]

    a, b, c = frames(0, "a.gif"), frames(0, "b.gif"), frames(1, "c.gif")
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert any((x != y).any() for x, y in zip(a, c, strict=True))


def test_bad_requests_are_refused(run, tmp_path):
    with pytest.raises(UserError, match="must end in .gif or .mp4"):
        dream(DreamArgs(run=run, out=tmp_path / "dream.avi"))
    with pytest.raises(UserError, match="ask for fewer --steps"):
        dream(DreamArgs(run=run, out=tmp_path / "dream.gif", steps=100_000))
    with pytest.raises(UserError, match="has no checkpoint"):
        dream(DreamArgs(run=tmp_path, out=tmp_path / "dream.gif"))


@pytest.mark.parametrize(
    "preset", ["tiny-gru", "tiny-dreamerv2", "tiny-drama", "tiny-s5", "tiny-rem", "drama", "s5",
               "rem"]
)  # fmt: skip
def test_every_kind_of_world_model_trains_evaluates_and_dreams(breakout_replay, tmp_path, preset):
    out = tmp_path / "run"
    metrics = train(
        TrainArgs(data=breakout_replay, out=out, steps=2, preset=preset, batch=2, length=8),
        progress=False,
    )
    assert {"h1_mse", "h1_copy_mse", "continue_accuracy"} <= set(metrics)
    path = dream(DreamArgs(run=out, out=tmp_path / "dream.gif", steps=5, context=4))
    with Image.open(path) as gif:
        assert gif.n_frames == 4 + 5
        # a token model adds its tokenizer's view of the real game between real and dream
        panels = 3 if preset.endswith("rem") else 2
        assert gif.size == (panels * 256 + (panels - 1) * 8, 24 + 256)


def test_the_default_model_dreams_beside_the_live_game(tmp_path, monkeypatch, capsys):
    from wmsim.cli import main

    monkeypatch.setenv("WMSIM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WMSIM_MODEL", raising=False)
    out = tmp_path / "dream.gif"
    assert main(["dream", "--out", str(out), "--steps", "6", "--seed", "3"]) == 0
    with Image.open(out) as gif:
        context = 8
        assert gif.n_frames == context + 6
        assert gif.size == (2 * 256 + 8, 24 + 256)
    first = out.read_bytes()
    assert main(["dream", "--out", str(out), "--steps", "6", "--seed", "3"]) == 0
    assert out.read_bytes() == first  # the seed fixes the real game, its actions and the dream
    assert main(["dream", "--out", str(out), "--game", "Pong"]) == 2
    assert "no model of Pong" in capsys.readouterr().err
