"""Dependency rules: light `import wmsim`; clients and server never import torch."""

import subprocess
import sys

import pytest


def modules_after(statement: str) -> set[str]:
    code = f"{statement}\nimport sys\nprint(' '.join(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return set(result.stdout.split())


@pytest.mark.parametrize("package", ["wmsim", "wmsim_client", "wmsim_server"])
def test_no_torch(package):
    assert "torch" not in modules_after(f"import {package}")


def test_import_wmsim_is_light():
    loaded = modules_after("import wmsim")
    assert not loaded & {"torch", "ale_py", "cv2", "gymnasium", "tyro"}


def test_collection_and_replay_need_no_torch():
    loaded = modules_after("import wmsim.collect.rollout, wmsim.replay, wmsim.cli, wmsim.scores")
    assert "torch" not in loaded


def test_models_know_nothing_of_replay_training_export_or_serving():
    loaded = modules_after("import wmsim.model, wmsim.model.backbones")
    ours = {name for name in loaded if name.startswith(("wmsim", "wmsim_"))}
    allowed = ("wmsim.model", "wmsim.errors")
    assert {name for name in ours if name != "wmsim" and not name.startswith(allowed)} == set()
