"""Benchmarks keep running: each one, at a tiny size (timings are never asserted)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_collect_benchmark_prints_its_ratios():
    command = [sys.executable, "-m", "wmsim", "bench", "collect", "--steps", "400", "--rounds", "1"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["steps/s", "vs", "raw", "overhead"]
    rows = {line[:32].strip(): line[32:].split() for line in lines[2:-1]}
    assert set(rows) >= {"raw ALE, 1 process", "wmsim AtariEnv", "wmsim collect, 1 env"}
    assert all(float(values[0]) > 0 for values in rows.values())
    assert lines[-1].startswith("target: collection overhead under 30%")


def test_world_model_benchmark_prints_every_model_and_the_cache_ratio():
    command = [sys.executable, "benchmarks/world_model.py", "--size", "tiny", "--steps", "2",
               "--repeats", "1", "--batches", "1", "4", "--train-batch", "2", "8"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for model in ("transformer (tiny)", "gru (tiny-gru)", "rssm (tiny-dreamerv2)",
                  "mamba2 (tiny-drama)", "s5 (tiny-s5)"):  # fmt: skip
        assert model in out
    assert "ring-buffer cache vs recomputing" in out and out.count("ratio") == 2


def test_scan_benchmark_prints_both_forms_for_every_backbone():
    command = [sys.executable, "benchmarks/scan.py", "--size", "tiny", "--lengths", "4", "8",
               "--batch", "2", "--repeats", "1"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = [line.split() for line in lines if line.startswith(("mamba2", "s5", "transformer"))]
    assert [(row[0], row[2]) for row in rows] == [
        (model, length) for model in ("mamba2", "s5", "transformer") for length in ("4", "8")
    ]
    assert all(float(value.rstrip("x")) > 0 for row in rows for value in row[3:])
    assert "memory growth from T=4 to T=8" in result.stdout
    assert lines[-1].startswith("target (2-core CPU)")


def test_pop_benchmark_counts_calls_per_frame_for_both_methods():
    command = [sys.executable, "benchmarks/pop.py", "--size", "tiny", "--batch", "2",
               "--frames", "2", "--repeats", "1", "--device", "cpu"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = {line[:18].strip(): line[18:].split() for line in result.stdout.splitlines()}
    assert rows["POP"][0] == "2" and rows["token by token"][0] == "65"
    assert float(rows["POP"][1]) > 0 and float(rows["token by token"][1]) > 0
    assert "POP dreams" in result.stdout and "15.4x" in result.stdout


def test_dream_benchmark_prints_every_runtime_beside_the_emulator():
    command = [sys.executable, "benchmarks/dream.py", "--bundle", "wmsim/bundles/Breakout.wmsim",
               "--batches", "1", "2", "--steps", "2", "--repeats", "1",
               "--against", "wmsim/bundles/Breakout.wmsim", "--decoders", "openvino"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()
            if line.startswith(("pixels", "latent"))]  # fmt: skip
    assert [(row[0], row[1]) for row in rows] == [
        (kind, batch) for kind in ("pixels", "latent") for batch in ("1", "2")
    ]
    # torch, onnxrt, runtime (OpenVINO decoding), its ratio to torch, env, ALE, env / ALE
    assert "decode with openvino" in result.stdout
    pixels, latents = rows[:2], rows[2:]
    assert all(float(value.rstrip("x")) > 0 for row in pixels for value in row[2:])
    assert all(row[4] == "-" for row in latents)  # a latent step decodes nothing
    assert all(float(value.rstrip("x")) > 0 for row in latents for value in row[2:4] + row[5:])
    # --against and --decoders: each batch's pixel env of both bundles and of the float decoder
    # in turns, the first the reference
    turns = [(line[:40].strip(), line[40:].split()) for line in result.stdout.splitlines()
             if line.startswith("Breakout")]  # fmt: skip
    labels = ["Breakout.wmsim", "Breakout.wmsim", "Breakout.wmsim openvino"]
    assert [label for label, _ in turns] == labels * 2
    assert [row[0] for _, row in turns] == ["1", "1", "1", "2", "2", "2"]  # the batch
    assert [row[2] for _, row in turns[::3]] == ["1.00x", "1.00x"]
    assert all(float(row[1]) > 0 and row[-1] == "ALE" for _, row in turns)


def test_serve_benchmark_prints_every_setup_and_both_targets():
    command = [sys.executable, "-m", "wmsim", "bench", "serve", "--batch", "4", "--clients", "2",
               "--steps", "3", "--repeats", "1", "--rounds", "2", "--obs", "latent"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = {line[8:39].strip(): line[39:].split() for line in lines if line.startswith("latent")}
    assert list(rows) == ["in-process 1 x 4", "grpc 1 client x 4", "grpc 2 clients x 2",
                          "same-host 1 client x 4", "same-host 2 clients x 2"]  # fmt: skip
    assert all(float(values[0]) > 0 for values in rows.values())  # steps/s
    for transport in ("grpc", "same-host"):
        assert float(rows[f"{transport} 2 clients x 2"][-1]) >= 1  # envs per model call
        assert rows[f"{transport} 1 client x 4"][2:4] == ["x", "local"]
    spread = r"one client / in-process in each of 2 rounds, latent: grpc \S+-\S+, "
    spread += r"same-host \S+-\S+$"
    assert sum(bool(re.match(spread, line)) for line in lines) == 1
    expected = [
        f"{what}, {transport}: latent"
        for what in ("remote / in-process at batch 4", "2 x 2 / 1 x 4")
        for transport in ("grpc", "same-host")
    ]
    for line, start in zip(lines[-4:], expected, strict=True):
        assert line.startswith(f"target on a 2-core CPU: {start}")
    assert "(at least 0.8: " in lines[-1]


def test_serve_floor_benchmark_prints_the_bare_exchange_beside_in_process_for_both_obs():
    command = [sys.executable, "-m", "wmsim", "bench", "serve_floor", "--batch", "4",
               "--capacity", "8", "--steps", "5", "--rounds", "2"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = {
        line.split()[0]: line.split()[1:] for line in lines if line.startswith(("pixels", "latent"))
    }
    assert list(rows) == ["pixels", "latent"]
    assert all(len(values) == 6 and all(float(v) >= 0 for v in values) for values in rows.values())
    floors = [line for line in lines if line.startswith("floor on this machine: ")]
    assert [line.split()[4] for line in floors] == ["pixels", "latent"]
    assert "target of 0.9)" in floors[0] and "target of 0.8)" in floors[1]


def test_serve_benchmark_adds_rows_of_client_threads_and_over_replicas():
    command = [sys.executable, "-m", "wmsim", "bench", "serve", "--batch", "4", "--clients", "2",
               "--steps", "3", "--repeats", "1", "--obs", "latent", "--replicas", "2",
               "--client-threads"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("no speed-up figure" in line for line in lines)
    rows = {line[8:39].strip(): line[39:].split() for line in lines if line.startswith("latent")}
    for transport in ("grpc", "same-host"):
        threads = rows[f"{transport} 2 threads x 2"]
        assert float(threads[0]) > 0 and threads[2:5] == ["x", "1", "big"]
    values = rows["grpc 1 x 4 on 2 replicas"]
    assert float(values[0]) > 0 and float(values[1]) > 0 and values[2:5] == ["x", "1", "srv"]
    assert 0 < float(values[-1]) <= 2  # envs per model call: each replica holds two of the four


def test_fidelity_benchmark_prints_a_row_per_preset_and_motion_weight(breakout_replay, tmp_path):
    command = [sys.executable, "benchmarks/fidelity.py", "--data", str(breakout_replay),
               "--steps", "2", "--windows", "4", "--out", str(tmp_path),
               "--presets", "tiny-s5", "--motion-weights", "20", "0"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| tiny-s5@motion")]
    assert [row.split()[1] for row in rows] == ["tiny-s5@motion20", "tiny-s5@motion0"]
    assert (tmp_path / "fidelity.json").is_file()


def test_play_benchmark_prints_key_to_frame_latency_in_process_and_served():
    pytest.importorskip("aiohttp")
    command = [sys.executable, "-m", "wmsim", "bench", "play", "--presses", "2", "--fps", "30"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith(("in-", "wm"))]
    assert [row[:-5] for row in rows] == [["in-process"], ["wmsim", "serve"]]
    assert all(row[-5:-3] == ["30", "2"] and float(row[-1]) > 0 for row in rows)


@pytest.mark.long
def test_the_gpu_fidelity_script_runs_to_the_end_on_cpu_at_tiny_sizes(tmp_path):
    env = {**__import__("os").environ, "OUT": str(tmp_path), "ENVS": "1", "RANDOM_STEPS": "600",
           "TRACKER_STEPS": "600", "STEPS": "4", "BATCH": "2", "TRAIN_SECONDS": "120",
           "FIDELITY_STEPS": "200",
           "CONTROL_ARGS": "--envs 2 --steps 10 --episode-steps 8"}  # fmt: skip
    result = subprocess.run(["bash", "scripts/gpu-fidelity.sh"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fidelity on 200 steps of fresh real play" in result.stdout
    assert "tracker / random rewards" in result.stdout and "gpu-fidelity:" in result.stdout
