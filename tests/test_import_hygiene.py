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
    # gymnasium is allowed: importing wmsim registers the dream envs
    loaded = modules_after("import wmsim")
    assert not loaded & {"torch", "ale_py", "cv2", "tyro", "onnxruntime", "grpc"}
    assert "wmsim_client" not in loaded  # registered by name, imported by gymnasium.make


def test_dream_env_modules_import_no_torch_and_no_runtime_until_an_env_is_made():
    loaded = modules_after("import wmsim_client, wmsim_client.env, wmsim_client.vector")
    assert not loaded & {"torch", "onnxruntime", "stable_baselines3", "grpc"}


def test_the_server_and_the_remote_client_need_no_torch():
    loaded = modules_after("import wmsim_server.serve, wmsim_client.remote")
    assert not loaded & {"torch", "ale_py", "cv2"}


def test_a_remote_client_needs_no_onnxruntime():
    assert "onnxruntime" not in modules_after("import wmsim_client.remote")


def test_collection_and_replay_need_no_torch():
    loaded = modules_after("import wmsim.collect.rollout, wmsim.replay, wmsim.cli, wmsim.scores")
    assert "torch" not in loaded


def test_models_know_nothing_of_replay_training_export_or_serving():
    loaded = modules_after("import wmsim.model, wmsim.model.backbones")
    loaded -= modules_after("import wmsim")  # wmsim.games, for the env registrations
    ours = {name for name in loaded if name.startswith(("wmsim", "wmsim_"))}
    allowed = ("wmsim.model", "wmsim.errors")
    assert {name for name in ours if name != "wmsim" and not name.startswith(allowed)} == set()
