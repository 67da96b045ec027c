"""wmsim bundle decoder: a bundle's model back in torch, and a new decoder trained for it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from wmsim.bundle import open_bundle, sha256
from wmsim.cli import main
from wmsim.collect.atari import AtariConfig
from wmsim.collect.rollout import CollectConfig, collect
from wmsim.configs import to_dict
from wmsim.errors import UserError
from wmsim.export.check import compare_with_torch
from wmsim.train.config import preset
from wmsim.train.decoder import DecoderArgs, model_from_bundle, train_decoder

SHIPPED = Path(__file__).parents[2] / "wmsim" / "bundles" / "Breakout.wmsim"
"""The default model: tiny-s5 exported with float16 weights (tests read it, never write it)."""


@pytest.fixture(scope="module")
def s5_bundle():
    return SHIPPED


@pytest.fixture(scope="module")
def max_replay(tmp_path_factory) -> Path:
    """Real Breakout resized by block max, as the default model's frames were."""
    out = tmp_path_factory.mktemp("max") / "replay"
    collect(CollectConfig(out=out, steps=1200, envs=2, seed=7, env=AtariConfig(resize="max")),
            progress=False)  # fmt: skip
    return out


def args(bundle, replay, tmp_path, **kw) -> DecoderArgs:
    given = {"depth": 4, "steps": 4, "eval_every": 1000, "precision": "fp32"} | kw
    return DecoderArgs(bundle=bundle, data=replay, run=tmp_path / "dec", **given)


def dreams(bundle, steps: int = 3) -> list[np.ndarray]:
    """Every output of ``steps`` dreamed steps of 3 start contexts, seeded, through the graphs."""
    from wmsim.runtime.graphs import Graphs

    graphs, rng = Graphs(open_bundle(bundle), device="cpu"), np.random.default_rng(0)
    state, latent = graphs.observe(*(v[:3] for v in open_bundle(bundle).start_contexts().values()))
    out = [*state.values(), latent]
    for _ in range(steps):
        state, reward, cont, latent = graphs.step(
            state, rng.integers(4, size=3), rng.random((3, 32), dtype=np.float32)
        )
        out += [*state.values(), reward, cont, latent]
    return out


def test_a_bundle_is_its_torch_model_again(s5_bundle):
    bundle = open_bundle(s5_bundle)
    assert compare_with_torch(bundle, model_from_bundle(bundle), steps=3, batch=3, seed=1) == []


def test_a_new_decoder_learns_and_its_bundle_dreams_the_same_latents(
    s5_bundle, max_replay, tmp_path, capsys
):
    train_decoder(args(s5_bundle, max_replay, tmp_path, steps=40, log_every=1),
                  progress=False)  # fmt: skip
    run, out = tmp_path / "dec", tmp_path / "narrow.wmsim"
    losses = [json.loads(line)["recon"] for line in (run / "metrics.jsonl").open()
              if '"train"' in line]  # fmt: skip
    assert len(losses) == 40 and np.mean(losses[-8:]) < 0.8 * np.mean(losses[:8])
    # resumed at the steps done, the command writes the bundle from the checkpoint
    command = ["bundle", "decoder", "--bundle", str(s5_bundle), "--data", str(max_replay),
               "--run", str(run), "--depth", "4", "--resume", "--fidelity-steps", "0"]  # fmt: skip
    assert main([*command, "--steps", "40", "--out", str(out)]) == 0
    assert "to step 40; held-out recon_mse" in capsys.readouterr().out
    old, new = open_bundle(s5_bundle), open_bundle(out)
    # the same weights, exported again: the same dreams, bit for bit, but for the frames
    assert all(np.array_equal(a, b) for a, b in zip(dreams(s5_bundle), dreams(out), strict=True))
    assert new.read_graph("decode") != old.read_graph("decode")
    model = model_from_bundle(new)
    decoder = new.spec["training"]["decoder"]
    assert model.config.decoder_depth == 4 and decoder["steps"] == 40
    assert decoder["held_out"]["recon_mse"] > 0 and "held_out" not in new.spec["training"]
    assert compare_with_torch(new, model, steps=3, batch=3, seed=1) == []
    contexts = old.start_contexts()
    assert all(np.array_equal(v, new.start_contexts()[k]) for k, v in contexts.items())
    # fewer steps than done, and a decoder run where a world model's run belongs: one line each
    assert main([*command, "--steps", "39"]) == 2
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "x.wmsim")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "at step 40" in lines[0] and "bundle decoder" in lines[1]


def test_a_resumed_decoder_run_ends_where_an_unbroken_one_does(s5_bundle, max_replay, tmp_path):
    train_decoder(args(s5_bundle, max_replay, tmp_path / "a"), progress=False)
    train_decoder(args(s5_bundle, max_replay, tmp_path / "b", steps=2), progress=False)
    train_decoder(args(s5_bundle, max_replay, tmp_path / "b", resume=True), progress=False)
    a, b = (torch.load(tmp_path / x / "dec" / "checkpoint.pt", weights_only=True)
            for x in "ab")  # fmt: skip
    assert a["step"] == b["step"] == 4
    for name, value in a["decoder"].items():
        assert torch.equal(value, b["decoder"][name]), name


def test_the_learning_rate_falls_over_the_last_steps_asked(s5_bundle, max_replay, tmp_path):
    train_decoder(args(s5_bundle, max_replay, tmp_path, log_every=1), progress=False)
    # a run that went on at a constant rate is ended by a resume that asks for a decay
    train_decoder(args(s5_bundle, max_replay, tmp_path, log_every=1, steps=8, lr_decay=4,
                       resume=True), progress=False)  # fmt: skip
    logged = [json.loads(line) for line in (tmp_path / "dec" / "metrics.jsonl").open()]
    lrs = [r["lr"] for r in logged if r["kind"] == "train"]
    lr = lrs[0]
    assert lrs == [lr] * 5 + [0.75 * lr, 0.5 * lr, 0.25 * lr]


def edited_copy(bundle, tmp_path, edit) -> object:
    """A copy of ``bundle`` after ``edit(directory)``, its hashes made right again."""
    copy = tmp_path / "copy.wmsim"
    shutil.copytree(bundle, copy)
    edit(copy)
    spec = json.loads((copy / "spec.json").read_text())
    spec["files"] = {name: sha256(copy / name) for name in spec["files"]}
    (copy / "spec.json").write_text(json.dumps(spec))
    return open_bundle(copy)


def test_models_whose_decoder_reads_more_than_the_latent_are_refused(
    s5_bundle, max_replay, tmp_path, capsys
):
    def rssm(copy):  # an RSSM's decoder reads its deterministic state too
        config = json.loads((copy / "config.json").read_text())
        config["train"] = to_dict(preset("tiny-dreamerv2"))
        (copy / "config.json").write_text(json.dumps(config))

    copy = edited_copy(s5_bundle, tmp_path, rssm)
    with pytest.raises(UserError, match="STORM, DRAMA and S5"):
        model_from_bundle(copy)
    command = ["bundle", "decoder", "--bundle", str(copy.path), "--data", str(max_replay),
               "--run", str(tmp_path / "dec"), "--depth", "4"]  # fmt: skip
    assert main(command) == 2
    assert "STORM, DRAMA and S5" in capsys.readouterr().err


def test_a_config_that_is_not_its_graphs_model_is_refused(s5_bundle, max_replay, tmp_path):
    def flip(copy):  # the same weights' shapes, another model: frames left unsquashed
        config = json.loads((copy / "config.json").read_text())
        config["train"]["model"]["decoder_sigmoid"] = False
        (copy / "config.json").write_text(json.dumps(config))

    copy = edited_copy(s5_bundle, tmp_path, flip)
    with pytest.raises(UserError, match="not its config.json's model"):
        train_decoder(args(copy.path, max_replay, tmp_path), progress=False)


@pytest.mark.parametrize("weights", ["float16", "float32"])
def test_a_bundle_without_its_weights_says_how_to_export_one_that_loads(
    s5_bundle, tmp_path, weights
):
    # a --weights float32 export folds BatchNorm into the convolutions; a copy missing one
    # BatchNorm's weights stands in for it (such an export takes a minute)
    def drop(copy):
        graph = onnx.load(copy / "observe.onnx")
        kept = [t for t in graph.graph.initializer if not t.name.startswith("model.encoder.net.1.")]
        del graph.graph.initializer[:]
        graph.graph.initializer.extend(kept)
        onnx.save(graph, copy / "observe.onnx")
        spec = json.loads((copy / "spec.json").read_text())
        (copy / "spec.json").write_text(json.dumps(spec | {"weights": weights}))

    fix = "--weights float16" if weights == "float32" else "export the run again"
    with pytest.raises(UserError, match=f"lack 4 of its model's weights .*{fix}"):
        model_from_bundle(edited_copy(s5_bundle, tmp_path, drop))


def test_the_cli_says_what_is_wrong_in_one_line(s5_bundle, max_replay, tmp_path, capsys):
    common = ["--data", str(max_replay), "--run", str(tmp_path / "dec"), "--depth", "4"]
    assert main(["bundle", "decoder", "--bundle", str(tmp_path / "none.wmsim"), *common]) == 2
    assert main(["bundle", "decoder", "--bundle", str(s5_bundle), *common, "--out",
                 str(tmp_path / "x.onnx")]) == 2  # fmt: skip
    assert main(["bundle", "decoder", "--bundle", str(s5_bundle), *common[:-1], "0"]) == 2
    small = tmp_path / "small"  # frames of another size than the model's
    collect(
        CollectConfig(out=small, steps=64, env=AtariConfig(size=32, resize="max"), seed=1),
        progress=False,
    )
    assert main(["bundle", "decoder", "--bundle", str(s5_bundle), *common[2:], "--data",
                 str(small)]) == 2  # fmt: skip
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("wmsim: error: ") for line in lines)
    assert "NAME.wmsim" in lines[1] and "--depth" in lines[2] and "size 32" in lines[3]
    assert not (tmp_path / "dec").exists()  # nothing written for a command that failed
