"""Bundles are validated before use: each kind of damage is refused with what is wrong."""

import json
import shutil

import numpy as np
import pytest
from helpers import FORMAT_1_BUNDLE as FORMAT_1

from wmsim.bundle import BundleError, open_bundle, sha256
from wmsim.cli import main
from wmsim.runtime.graphs import Graphs
from wmsim.store import EMBEDDED

DEFAULT = EMBEDDED / "Breakout.wmsim"


@pytest.fixture
def bundle(tmp_path):
    copy = tmp_path / "b.wmsim"
    shutil.copytree(DEFAULT, copy)
    return copy


def edit_spec(path, change):
    spec = json.loads((path / "spec.json").read_text())
    change(spec)
    (path / "spec.json").write_text(json.dumps(spec))


def rehash(path, name):
    edit_spec(path, lambda spec: spec["files"].__setitem__(name, sha256(path / name)))


def test_the_embedded_default_is_valid_and_loads(capsys):
    bundle = open_bundle(DEFAULT)
    assert bundle.game == "Breakout" and bundle.context >= 2
    Graphs(bundle, device="cpu")
    assert main(["bundle", "check", str(DEFAULT)]) == 0
    assert "ok" in capsys.readouterr().out
    size = sum(p.stat().st_size for p in DEFAULT.iterdir())
    assert size <= 20 * 2**20


def refused(path, match):
    with pytest.raises(BundleError, match=match):
        Graphs(path, device="cpu")


def test_a_missing_file_is_named(bundle):
    (bundle / "step.onnx").unlink()
    refused(bundle, "step.onnx is missing")


def test_a_changed_file_fails_its_hash(bundle):
    with open(bundle / "decode.onnx", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    refused(bundle, "decode.onnx does not match its sha256")


def test_a_truncated_graph_is_refused_even_with_a_matching_hash(bundle):
    data = (bundle / "observe.onnx").read_bytes()
    (bundle / "observe.onnx").write_bytes(data[: len(data) // 2])
    refused(bundle, "does not match its sha256")
    rehash(bundle, "observe.onnx")
    refused(bundle, "observe.onnx is not an ONNX model")


def test_the_default_is_format_2_and_a_format_1_bundle_still_loads():
    """Format 1 also dreams (tests/runtime, tests/server), on the default it replaced."""
    bundle = open_bundle(DEFAULT)
    assert bundle.spec["format"] == 2 and bundle.spec["noise"]["sampling"] == "inverse-cdf"
    assert bundle.noise_shape == (32,) and bundle.mode_noise < 0
    old = open_bundle(FORMAT_1)
    assert old.spec["format"] == 1 and "sampling" not in old.spec["noise"]
    assert old.noise_shape == (32, 32) and old.mode_noise == 0.5
    assert main(["bundle", "check", str(FORMAT_1)]) == 0
    for b in (bundle, old):  # noise for n rows: every mode, or the generator's next uniforms
        assert (b.noise(3) == b.mode_noise).all() and b.noise(3).shape == (3, *b.noise_shape)
        drawn = b.noise(2, np.random.default_rng(5))
        assert drawn.dtype == np.float32 and (drawn >= 0).all()
        assert (drawn == np.random.default_rng(5).random(drawn.shape, dtype=np.float32)).all()


def test_a_newer_format_is_refused_with_how_to_export_it_again(bundle):
    edit_spec(bundle, lambda spec: spec.__setitem__("format", 3))
    with pytest.raises(BundleError) as refusal:
        Graphs(bundle, device="cpu")
    message = str(refusal.value)
    assert "bundle format 3 and this wmsim reads formats 1, 2" in message
    assert "wmsim export --run RUN --out b.wmsim` writes format 2" in message
    edit_spec(bundle, lambda spec: spec.__setitem__("format", True))
    refused(bundle, "bundle format True")


def test_noise_that_its_format_does_not_draw_is_refused(bundle, tmp_path):
    edit_spec(bundle, lambda spec: spec["noise"].__setitem__("sampling", "gumbel-max"))
    refused(bundle, "drawn by 'gumbel-max', but format 2 draws it by 'inverse-cdf'")
    edit_spec(bundle, lambda spec: spec["noise"].update(shape=[32, 32], sampling="inverse-cdf"))
    refused(bundle, "the noise is not what the step graph takes")
    old = tmp_path / "old.wmsim"
    shutil.copytree(FORMAT_1, old)
    edit_spec(old, lambda spec: spec["noise"].__setitem__("sampling", "inverse-cdf"))
    refused(old, "drawn by 'inverse-cdf', but format 1 draws it by 'gumbel-max'")


def test_a_spec_that_is_not_json_or_lacks_keys_is_refused(bundle):
    (bundle / "spec.json").write_text("{not json")
    refused(bundle, "spec.json is not valid JSON")
    shutil.copy(DEFAULT / "spec.json", bundle / "spec.json")
    edit_spec(bundle, lambda spec: spec.pop("state"))
    refused(bundle, "lacks 'state'")


def test_graph_names_that_differ_from_the_spec_are_refused(bundle):
    def rename(spec):
        spec["graphs"]["step"]["inputs"][0]["name"] = "state.renamed"

    edit_spec(bundle, rename)
    refused(bundle, "gives the step graph inputs")


def test_start_contexts_of_the_wrong_shape_are_refused(bundle):
    contexts = dict(np.load(bundle / "start_contexts.npz"))
    contexts["frames"] = contexts["frames"][:, :, :32]
    np.savez(bundle / "start_contexts.npz", **contexts)
    rehash(bundle, "start_contexts.npz")
    refused(bundle, r"start_contexts.npz\['frames'\] is uint8")


def test_the_cli_names_the_problem_without_a_traceback(bundle, capsys):
    (bundle / "config.json").unlink()
    assert main(["bundle", "check", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert "config.json is missing" in err and "Traceback" not in err
    assert main(["bundle", "check", str(bundle / "nothing")]) == 2
    assert "no such directory" in capsys.readouterr().err


# Hostile bundles: each passed `bundle check` before the checks that refuse it now.


def test_a_graph_reading_external_data_is_refused(bundle, tmp_path, monkeypatch):
    """An initializer stored at a relative path would have onnxruntime read that file from the
    working directory (a served bundle could send a server's files out in its frames)."""
    onnx = pytest.importorskip("onnx")
    from onnx.external_data_helper import set_external_data

    secret = tmp_path / "work" / ".private" / "secret.bin"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(np.arange(1 << 16, dtype=np.uint8).tobytes() * 16)
    monkeypatch.chdir(tmp_path / "work")
    model = onnx.load_from_string((bundle / "decode.onnx").read_bytes())
    tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    size = len(tensor.raw_data)
    set_external_data(tensor, location=".private/secret.bin", offset=0, length=size)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    (bundle / "decode.onnx").write_bytes(model.SerializeToString())
    rehash(bundle, "decode.onnx")
    refused(bundle, "decode.onnx keeps 1 tensor.* in external files")
    assert main(["bundle", "check", str(bundle)]) == 2


def test_external_tensors_are_found_in_subgraphs_too():
    onnx = pytest.importorskip("onnx")
    from onnx import helper

    from wmsim.bundle import external_tensors

    inner = helper.make_tensor("w", onnx.TensorProto.FLOAT, [1], [1.0])
    constant = helper.make_node("Constant", [], ["c"], value=inner)
    branch = helper.make_graph([constant], "branch", [], [helper.make_tensor_value_info(
        "c", onnx.TensorProto.FLOAT, [1])])  # fmt: skip
    node = helper.make_node("If", ["cond"], ["c"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "cond", onnx.TensorProto.BOOL, [])], [helper.make_tensor_value_info(
        "c", onnx.TensorProto.FLOAT, [1])])  # fmt: skip
    model = helper.make_model(graph)
    assert external_tensors(model.SerializeToString()) == 0
    inner.data_location = onnx.TensorProto.EXTERNAL
    constant = helper.make_node("Constant", [], ["c"], value=inner)
    branch = helper.make_graph([constant], "branch", [], list(branch.output))
    model.graph.node[0].CopyFrom(helper.make_node("If", ["cond"], ["c"], then_branch=branch,
                                                  else_branch=branch))  # fmt: skip
    assert external_tensors(model.SerializeToString()) == 2
    with pytest.raises(ValueError):
        external_tensors(b"\x0a\xff\xff\xff\xff\x0f")  # a length past the end


def test_a_symlink_to_dev_zero_is_refused_and_never_copied(bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WMSIM_HOME", str(tmp_path / "home"))
    (bundle / "notes.txt").symlink_to("/dev/zero")
    refused(bundle, "it holds 'notes.txt', which spec.json does not list")
    assert main(["models", "add", str(bundle), "--name", "zero"]) == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and "Traceback" not in err
    assert not (tmp_path / "home" / "models" / "zero.wmsim").exists()
    (bundle / "notes.txt").unlink()
    (bundle / "config.json").unlink()
    (bundle / "config.json").symlink_to(DEFAULT / "config.json")  # same bytes, same hash
    refused(bundle, "config.json is not a regular file")


def test_a_symlinked_directory_is_refused(bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WMSIM_HOME", str(tmp_path / "home"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private.txt").write_text("not for the store")
    (bundle / "more").symlink_to(outside, target_is_directory=True)
    refused(bundle, "it holds 'more'")
    assert main(["models", "add", str(bundle), "--name", "linked"]) == 2
    assert not list((tmp_path / "home").rglob("private.txt"))


def write_context_bomb(path, count, context=8):
    """A start_contexts.npz of ``count`` contexts of zeros, streamed: a few MB that unpack
    to count * 98 KB, written without holding them in memory."""
    import zipfile

    fields = {"frames": ((count, context, 64, 64, 3), np.uint8),
              "actions": ((count, context - 1), np.int64),
              "is_first": ((count, context), np.bool_)}  # fmt: skip
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, (shape, dtype) in fields.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as f:
                header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
                np.lib.format.write_array_header_1_0(f, header)
                left = int(np.prod(shape)) * np.dtype(dtype).itemsize
                block = bytes(1 << 22)
                while left:
                    f.write(block[: min(left, len(block))])
                    left -= min(left, len(block))


def test_a_start_context_bomb_is_refused_before_it_is_unpacked(bundle):
    import tracemalloc

    from wmsim.bundle import MAX_START_CONTEXTS

    write_context_bomb(bundle / "start_contexts.npz", MAX_START_CONTEXTS + 1000)
    assert (bundle / "start_contexts.npz").stat().st_size < 5 << 20
    rehash(bundle, "start_contexts.npz")
    tracemalloc.start()
    with pytest.raises(BundleError, match=f"holds {MAX_START_CONTEXTS + 1000} contexts, over"):
        open_bundle(bundle)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 << 20  # the 500 MB of frames were never unpacked


def test_deeply_nested_json_is_one_line_and_spares_the_other_models(
    bundle, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("WMSIM_HOME", str(tmp_path / "home"))
    assert main(["models", "add", str(DEFAULT), "--name", "good"]) == 0
    bad = tmp_path / "home" / "models" / "bad.wmsim"
    shutil.copytree(DEFAULT, bad)
    (bad / "spec.json").write_text("[" * 200_000 + "]" * 200_000)
    refused(bad, "spec.json nests deeper than the limit")
    (bundle / "spec.json").write_text('{"a": ' * 40 + "1" + "}" * 40)
    refused(bundle, "spec.json nests deeper than the limit")
    (bundle / "spec.json").write_text(" " * (2 << 20))
    refused(bundle, "spec.json is .* bytes, over the limit")
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    listed = capsys.readouterr().out
    assert "good" in listed and "Breakout" in listed
    assert "bad" in listed and "nests deeper than the limit" in listed
