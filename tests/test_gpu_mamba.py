"""scripts/gpu-mamba.sh without a GPU: it parses, refuses before installing anything, and a
failing step stops it with a message naming the step (stand-ins for nvidia-smi and python)."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-mamba.sh"


def run_script(tmp_path, nvidia_smi: str) -> tuple[subprocess.CompletedProcess, Path]:
    """Run the script with ``nvidia-smi`` replaced by ``nvidia_smi`` (a shell body) and a python
    that logs its arguments and fails; returns the result and the log."""
    bin_dir, log = tmp_path / "bin", tmp_path / "python.log"
    bin_dir.mkdir()
    for name, body in {"nvidia-smi": nvidia_smi, "python": f'echo "$*" >> {log}; exit 1'}.items():
        (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = os.environ | {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHON": str(bin_dir / "python"),
    }
    env.pop("WHEELS", None)
    env.pop("TORCH_INDEX", None)
    result = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    return result, log


def test_the_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_without_a_gpu_the_script_refuses_before_running_python(tmp_path):
    result, log = run_script(tmp_path, "exit 9")
    assert result.returncode == 2, result.stderr
    assert "no NVIDIA GPU here" in result.stderr
    assert not log.exists()  # nothing installed, nothing run


def test_a_failing_step_stops_the_script_and_names_what_to_do(tmp_path):
    smi = 'echo "NVIDIA H100 80GB HBM3, 580.159.04"; echo "| CUDA Version: 12.8 |"'
    result, log = run_script(tmp_path, smi)
    assert result.returncode == 1
    assert "gpu-mamba: device: NVIDIA H100" in result.stdout
    assert "gpu-mamba: FAILED: could not install a CUDA torch==" in result.stderr
    assert "set TORCH_INDEX or WHEELS" in result.stderr
    # the driver's CUDA 12.8 picks PyTorch's cu128 wheels
    assert "--index-url https://download.pytorch.org/whl/cu128 torch==" in log.read_text()
