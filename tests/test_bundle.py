"""Bundles are validated before use: each kind of damage is refused with what is wrong."""

import json
import shutil

import numpy as np
import pytest
from wmsim_server.runtime import Graphs

from wmsim.bundle import BundleError, open_bundle, sha256
from wmsim.cli import main
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
    refused(bundle, "observe.onnx cannot be loaded by onnxruntime")


def test_another_format_version_is_refused(bundle):
    edit_spec(bundle, lambda spec: spec.__setitem__("format", 99))
    refused(bundle, "bundle format 99 and this wmsim reads format 1")


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
