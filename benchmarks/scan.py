"""Parallel form against a loop of steps, per sequence backbone, in one run.

For Mamba-2 (DRAMA), S5 and STORM's transformer, at sequence lengths T (64,
256, 1024 by default): the time of one training step of the backbone alone
(forward and backward of the parallel form, against the same through a Python
loop of the step form) and the peak memory each takes.

Every measurement runs in a fresh process, so that peak memory is its own: on
a CPU, the rise of the process's peak resident memory over what it held before
the first step; on CUDA, torch's peak allocated memory. Inputs carry episode
starts (1% of steps), so the reset paths are timed too.

    python benchmarks/scan.py [--size paper|tiny] [--lengths 64 256 1024] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch

from wmsim.model.backbones import make_backbone
from wmsim.train.config import PRESETS

MODELS = {
    "paper": {"mamba2 (drama)": "drama", "s5 (s5)": "s5", "transformer (storm)": "storm"},
    "tiny": {
        "mamba2 (tiny-drama)": "tiny-drama",
        "s5 (tiny-s5)": "tiny-s5",
        "transformer (tiny)": "tiny",
    },
}
FORMS = ("parallel", "loop")


def measure(preset: str, form: str, length: int, batch: int, repeats: int, device: str) -> dict:
    """Seconds per training step (best of ``repeats``) and peak memory in MB, in this process."""
    device = torch.device(device)
    torch.manual_seed(0)
    config = PRESETS[preset].model.backbone
    backbone = make_backbone(config, config.width, device=device).train()
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(batch, length, config.width, generator=g, device=device)
    is_first = torch.rand(batch, length, generator=g, device=device) < 0.01

    def train_step():
        state = backbone.initial_state(batch, device)
        if form == "parallel":
            h, _ = backbone(x, is_first, state)
        else:
            outputs = []
            for t in range(length):
                out, state = backbone.step(x[:, t], is_first[:, t], state)
                outputs.append(out)
            h = torch.stack(outputs, 1)
        h.square().mean().backward()
        backbone.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    train_step()
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        train_step()
        best = min(best, time.perf_counter() - start)
    return {"seconds": best, "peak_mb": peak / 2**20}


def in_fresh_process(args: argparse.Namespace, preset: str, form: str, length: int) -> dict:
    job = [preset, form, length, args.batch, args.repeats, args.device]
    command = [sys.executable, __file__, "--measure", json.dumps(job)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"measuring {preset} {form} T={length} failed:\n{result.stderr}")
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(MODELS), default="paper")
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*json.loads(args.measure))))
        return
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    print(f"{name}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    memory = "peak allocated" if device.type == "cuda" else "peak RSS rise"
    print(f"one training step (forward + backward) of the backbone alone, batch {args.batch}; "
          f"memory: {memory}, MB")  # fmt: skip
    print(f"{'model':24s}{'T':>6s}{'parallel s':>12s}{'loop s':>10s}{'speed-up':>10s}"
          f"{'parallel MB':>13s}{'loop MB':>10s}")  # fmt: skip
    results = {}
    for label, preset in MODELS[args.size].items():
        for length in args.lengths:
            p, loop = (in_fresh_process(args, preset, form, length) for form in FORMS)
            results[label, length] = p, loop
            print(f"{label:24s}{length:6d}{p['seconds']:12.4f}{loop['seconds']:10.4f}"
                  f"{loop['seconds'] / p['seconds']:9.1f}x"
                  f"{p['peak_mb']:13.1f}{loop['peak_mb']:10.1f}", flush=True)  # fmt: skip
    if len(args.lengths) > 1:
        short, long = args.lengths[-2], args.lengths[-1]
        print(f"\nmemory growth from T={short} to T={long} ({long / short:.0f}x the steps; "
              "linear memory grows as much):")  # fmt: skip
        for label in MODELS[args.size]:
            growth = [
                results[label, long][i]["peak_mb"] / max(results[label, short][i]["peak_mb"], 1e-9)
                for i in range(2)
            ]
            print(f"  {label:24s} parallel {growth[0]:5.1f}x   loop {growth[1]:5.1f}x")
    print("target (2-core CPU): the parallel form at least 5x faster than the step loop at "
          "T=256 for mamba2 and s5; memory growing linearly in T")  # fmt: skip


if __name__ == "__main__":
    main()
