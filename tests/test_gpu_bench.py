"""scripts/gpu-bench.sh: it refuses without a GPU, swaps onnxruntime for onnxruntime-gpu only
from local wheels (stand-ins for nvidia-smi and python), and in its test mode runs to the end on
the CPU at tiny sizes, printing every table."""

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-bench.sh"
H100 = 'echo "NVIDIA H100 80GB HBM3, 580.159.04, 81559 MiB"'


def run_script(tmp_path, nvidia_smi: str, installed: str = "onnxruntime", **env):
    """Run the script with ``nvidia-smi`` replaced by ``nvidia_smi`` (a shell body) and a python
    that logs its arguments, names ``installed`` as the onnxruntime packages, lets pip succeed
    and fails everything else; returns the result and the log's lines."""
    bin_dir, log = tmp_path / "bin", tmp_path / "python.log"
    bin_dir.mkdir()
    python = f"""echo "$*" >> {log}
case "$*" in
    *importlib.metadata*) echo "{installed}" ;;
    *getsitepackages*) ;;
    *"-m pip "*) exit 0 ;;
    *) exit 1 ;;
esac"""
    for name, body in {"nvidia-smi": nvidia_smi, "python": python}.items():
        (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    environ = {k: v for k, v in os.environ.items() if k not in ("WHEELS", "GPU_BENCH_ALLOW_CPU")}
    environ |= {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": str(bin_dir / "python")}
    result = subprocess.run(["bash", str(SCRIPT)], env=environ | env, capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    return result, log.read_text().splitlines() if log.exists() else []


def test_the_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_without_a_gpu_the_script_refuses_with_one_line_and_runs_nothing(tmp_path):
    result, calls = run_script(tmp_path, "exit 9")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "gpu-bench: no NVIDIA GPU here (nvidia-smi finds none); run this on a GPU machine"
    ]
    assert calls == []  # nothing installed, nothing run


def test_with_onnxruntime_for_the_cpu_and_no_wheels_it_says_how_to_prepare_them(tmp_path):
    result, calls = run_script(tmp_path, H100)
    assert result.returncode == 1
    assert "gpu-bench: 1/5 a GPU: NVIDIA H100 80GB HBM3" in result.stdout
    [line] = result.stderr.splitlines()
    assert line.startswith("gpu-bench: FAILED: installed: onnxruntime, not onnxruntime-gpu alone")
    assert "pip download onnxruntime-gpu==VERSION --no-deps -d wheels/" in line
    assert "WHEELS=wheels scripts/gpu-bench.sh" in line
    assert not any("-m pip" in call for call in calls)  # the CPU build stays installed


def test_an_empty_wheel_folder_changes_nothing(tmp_path):
    (tmp_path / "wheels").mkdir()
    result, calls = run_script(tmp_path, H100, WHEELS=str(tmp_path / "wheels"))
    assert result.returncode == 1
    assert "FAILED: no onnxruntime_gpu-*.whl in WHEELS=" in result.stderr
    assert not any("-m pip" in call for call in calls)


def test_both_builds_are_replaced_by_the_gpu_wheel_offline_then_the_graphs_are_checked(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in ("onnxruntime_gpu-1.32.0-cp312-cp312-manylinux_2_28_x86_64.whl",
                 "nvidia_cudnn_cu12-9.10.2.21-py3-none-manylinux_2_27_x86_64.whl"):  # fmt: skip
        (wheels / name).touch()
    result, calls = run_script(tmp_path, H100, "onnxruntime onnxruntime-gpu", WHEELS=str(wheels))
    pips = [call for call in calls if call.startswith("-m pip")]
    assert pips == [
        "-m pip uninstall -q -y onnxruntime onnxruntime-gpu",
        f"-m pip install -q --no-index --no-deps --find-links {wheels} onnxruntime-gpu",
        f"-m pip install -q --no-index --no-deps "
        f"{wheels}/nvidia_cudnn_cu12-9.10.2.21-py3-none-manylinux_2_27_x86_64.whl",
    ]
    # the stand-in python cannot run the graphs: the next step stops the script, naming the fix
    assert result.returncode == 1
    assert "FAILED: onnxruntime cannot run the graphs on cuda: onnxruntime-gpu needs CUDA 12" in (
        result.stderr
    )


def test_dream_benchmark_fails_when_a_cuda_session_runs_a_graph_on_the_cpu_alone():
    spec = importlib.util.spec_from_file_location("dream", ROOT / "benchmarks" / "dream.py")
    dream = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dream)
    mixed = {"step": {"CUDAExecutionProvider": [40, 90.0], "CPUExecutionProvider": [3, 10.0]}}
    dream.show_placement(mixed, "cuda")  # shape nodes on the CPU are onnxruntime's choice
    fallback = {**mixed, "decode": {"CPUExecutionProvider": [30, 50.0]}}
    dream.show_placement(fallback, "cpu")
    with pytest.raises(SystemExit, match="the decode graph ran no node on CUDA"):
        dream.show_placement(fallback, "cuda")


@pytest.mark.slow
def test_in_test_mode_the_script_runs_to_the_end_on_cpu_and_prints_every_table(tmp_path):
    (tmp_path / "nvidia-smi").write_text("#!/usr/bin/env bash\nexit 9\n")  # no GPU, even on one
    (tmp_path / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "GPU_BENCH_ALLOW_CPU": "1", "PIXEL_BATCHES": "2",
           "LATENT_BATCHES": "2 4", "ALE_BATCHES": "2", "STEPS": "2", "REPEATS": "1",
           "SERVE_BATCH": "4", "SERVE_CLIENTS": "2", "SERVE_STEPS": "3", "SERVE_REPEATS": "1",
           "ARENA_ROWS": "6", "ARENA_STEPS": "2",
           "PATH": f"{tmp_path}:{os.environ['PATH']}"}  # fmt: skip
    env.pop("WHEELS", None)
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                            timeout=600, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "gpu-bench: 1/5 a GPU: no GPU (test mode, GPU_BENCH_ALLOW_CPU=1" in out
    assert "gpu-bench: test mode: onnxruntime left as it is" in out
    assert "gpu-bench: step graph on CPUExecutionProvider" in out
    # the arena on the device (the CPU here) against the host's: the same dreams
    assert "gpu-bench: arena in host memory: " in out and "gpu-bench: arena in cpu memory: " in out
    assert "differ by at most 0\n" in out
    # dream: where each graph's nodes ran, then the table, the emulator only where asked
    assert "onnxruntime sessions on CPUExecutionProvider" in out
    for graph in ("observe", "step", "decode"):
        assert f"  {graph}: " in out and "on CPU (0% of kernel time on CUDA)" in out
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in out.splitlines()
            if line.startswith(("pixels  ", "latent  ")) and line.split()[1].isdigit()}  # fmt: skip
    assert list(rows) == [("pixels", "2"), ("latent", "2"), ("latent", "4")]
    latent = rows[("latent", "2")]
    assert latent[2] == "-"  # the runtime column: a latent step decodes nothing
    assert all(float(v.rstrip("x")) > 0 for v in latent[:2] + latent[3:])
    assert rows[("latent", "4")][-2:] == ["-", "-"]  # no emulator at batch 4
    for kind, target in (("pixels", "100,000"), ("latent", "1,000,000")):
        assert f"target on one H100: {kind} {target} dream steps/s; measured on cpu: env " in out
    # serve: every setup for both observation types, and its targets
    for kind in ("pixels", "latent"):
        served = [line[8:39].strip() for line in out.splitlines()
                  if line.startswith((f"{kind}  grpc", f"{kind}  same-host"))]  # fmt: skip
        assert served == ["grpc 1 client x 4", "grpc 2 clients x 2", "same-host 1 client x 4",
                          "same-host 2 clients x 2"]  # fmt: skip
    assert "target on a 2-core CPU: remote / in-process at batch 4" in out
    assert out.splitlines()[-1].startswith("gpu-bench: done in ")
