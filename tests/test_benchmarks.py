"""Benchmarks keep running: each one, at a tiny size (timings are never asserted)."""

import subprocess
import sys
from pathlib import Path

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
