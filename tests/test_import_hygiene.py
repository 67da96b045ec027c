"""Dependency rules: light `import wmsim`; clients and server never import torch.

The layers, bottom up: ``wmsim.runtime`` (onnxruntime, no torch, no grpc); the
server and the clients above it; the training side (collect, train, export,
agent) beside them, never importing the server.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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


def imported_names(folder: Path, root: Path = ROOT) -> dict[str, set[str]]:
    """Every module named by an import anywhere in each file, function bodies included."""
    out = {}
    for path in sorted(folder.rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
        out[path.relative_to(root).as_posix()] = names
    return out


def importers(folder: Path, *roots: str) -> list[str]:
    return [
        path
        for path, names in imported_names(folder).items()
        if any(name == root or name.startswith(root + ".") for name in names for root in roots)
    ]


def test_the_runtime_layer_imports_neither_torch_nor_grpc_nor_the_layers_above_it():
    assert (
        importers(ROOT / "wmsim" / "runtime", "torch", "grpc", "wmsim_server", "wmsim_client") == []
    )
    loaded = modules_after("import wmsim.runtime.graphs, wmsim.runtime.dreams")
    assert not loaded & {"torch", "grpc", "wmsim_server", "wmsim_client"}


def test_only_the_command_line_reaches_the_server_from_the_wmsim_package():
    # `wmsim serve` starts the server; nothing else on the training side may lean on it
    assert importers(ROOT / "wmsim", "wmsim_server") == ["wmsim/cli.py"]


def test_clients_and_server_never_import_torch_even_inside_functions():
    assert importers(ROOT / "clients" / "wmsim_client", "torch") == []
    assert importers(ROOT / "server" / "wmsim_server", "torch") == []


def test_the_import_scan_sees_imports_inside_functions(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n    from torch import nn\n")
    assert imported_names(tmp_path, root=tmp_path) == {"m.py": {"torch"}}
