"""wmsim bundle eval: a bundle measured on fresh real play through its own graphs, without torch."""

import json

import numpy as np
import pytest

from wmsim.bundle import open_bundle
from wmsim.bundle_eval import evaluate_bundle, json_ready, play, table, window_starts
from wmsim.cli import main
from wmsim.store import EMBEDDED

SHIPPED = EMBEDDED / "Breakout.wmsim"


def test_real_play_keeps_flags_and_windows_stay_in_one_episode():
    spec = open_bundle(SHIPPED).spec
    real = play(spec, 600, seed=3)
    assert len(real["obs"]) == 600 and real["obs"].dtype == np.uint8
    assert real["episode"].max() >= 1  # random Breakout ends within 600 steps
    assert real["lost"].sum() >= 4 and real["end"].sum() >= 1
    starts = window_starts(real, 8, stride=1)
    assert (real["episode"][starts] == real["episode"][starts + 8]).all()
    assert (play(spec, 600, seed=3)["obs"] == real["obs"]).all()  # seeded


def test_the_shipped_bundle_is_measured_beside_the_copy_baseline():
    metrics = evaluate_bundle(open_bundle(SHIPPED), steps=300, seed=5, stride=3)
    assert metrics["windows"] > 50
    for name in ("recon", "h1", "h4", "h16"):
        assert metrics[f"{name}_objects"] > 0
        assert 0.0 <= metrics[f"{name}_object_recall"] <= 1.0
        assert metrics[f"{name}_copy_mse"] > 0.0
    # copying the last frame keeps a slow ball within a pixel one step on, never four steps on
    assert metrics["h1_copy_object_recall"] > 0.5 > metrics["h4_copy_object_recall"]
    text = table(metrics)
    assert text.splitlines()[1].startswith("recon") and "rewards one step ahead" in text


def test_the_command_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "fidelity.json"
    assert main(["bundle", "eval", str(SHIPPED), "--steps", "120", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "h16" in printed and "ends one step ahead" in printed
    saved = json.loads(out.read_text())
    assert saved["real_steps"] == 120 and "h4_object_recall" in saved


def test_too_few_steps_is_a_one_line_error(capsys):
    assert main(["bundle", "eval", str(SHIPPED), "--steps", "10"]) != 0
    assert "--steps" in capsys.readouterr().err


@pytest.mark.parametrize("stride", [0, -1])
def test_a_bad_stride_is_refused(stride, capsys):
    assert main(["bundle", "eval", str(SHIPPED), "--stride", str(stride)]) != 0


def test_sampled_dreams_are_seeded_and_differ_from_the_most_likely_one():
    bundle = open_bundle(SHIPPED)
    first = evaluate_bundle(bundle, steps=200, seed=7, stride=4, sampled=True)
    again = evaluate_bundle(bundle, steps=200, seed=7, stride=4, sampled=True)
    mode = evaluate_bundle(bundle, steps=200, seed=7, stride=4)
    assert json_ready(first) == json_ready(again)  # NaN (no event) is never equal to itself
    assert first["sampled"] and not mode["sampled"]
    assert first["h16_mse"] != mode["h16_mse"]


def test_either_decoder_measures_the_same_dreams_and_a_bad_one_is_refused(capsys):
    bundle = open_bundle(SHIPPED)
    runs = {d: evaluate_bundle(bundle, steps=200, seed=7, stride=4, decoder=d)
            for d in ("onnxruntime", "auto")}  # fmt: skip
    ours, theirs = (json_ready(runs[d]) for d in ("auto", "onnxruntime"))
    events = [k for k in ours if k.startswith(("reward_", "end_"))]
    assert events and all(ours[k] == theirs[k] for k in events)  # decoding changes frames only
    assert abs(ours["h4_object_recall"] - theirs["h4_object_recall"]) < 0.05
    assert main(["bundle", "eval", str(SHIPPED), "--decoder", "tensorrt"]) != 0
    assert "--decoder must be one of auto, onnxruntime, openvino" in capsys.readouterr().err
