"""Parallel form against a loop of steps, per sequence backbone, in one run.

For Mamba-2 (DRAMA), S5 and STORM's transformer, at sequence lengths T (64,
256, 1024 by default): the time of one training step of the backbone alone
(forward and backward of the parallel form, against the same through a Python
loop of the step form) and the peak memory each takes.

Every measurement runs in a fresh process, so that peak memory is its own: on
a CPU, the rise of the process's peak resident memory over what it held before
the first step; on CUDA, torch's peak allocated memory. A CPU measurement may
use at most 3/4 of the machine's memory; past that its cell reads "out of
memory" (backpropagating through a loop of transformer steps keeps every
step's whole KV cache). Inputs carry episode starts (1% of steps), so the
reset paths are timed too.

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


MEMORY_SHARE = 0.75
"""Share of the machine's memory one CPU measurement may take."""


def measure(preset: str, form: str, length: int, batch: int, repeats: int, device: str) -> dict:
    """Seconds per training step (best of ``repeats``) and peak memory in MB, in this process.

    Returns ``{"error": "out of memory"}`` where the step needs more than its share of memory.
    """
    device = torch.device(device)
    if device.type == "cpu":  # fail fast rather than swap the machine to a halt
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        limit = int(total * MEMORY_SHARE)
        resource.setrlimit(
            resource.RLIMIT_AS,
            (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard),
        )
    try:
        return _measure(preset, form, length, batch, repeats, device)
    except (MemoryError, torch.OutOfMemoryError):
        return {"error": "out of memory"}
    except RuntimeError as error:
        if "allocate" not in str(error):
            raise
        return {"error": "out of memory"}


def _measure(
    preset: str, form: str, length: int, batch: int, repeats: int, device: torch.device
) -> dict:
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


def cell(result: dict, key: str, width: int, spec: str) -> str:
    """One table cell: the value, or why there is none."""
    text = format(result[key], spec) if key in result else "OOM"
    return f"{text:>{width}s}"


def growth_of(short: dict, long: dict) -> str:
    """How many times the peak memory grew, or '-' where a measurement is missing."""
    if "peak_mb" not in short or "peak_mb" not in long:
        return "-"
    return f"{long['peak_mb'] / max(short['peak_mb'], 1e-9):.1f}x"


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
            speed_up = (
                f"{loop['seconds'] / p['seconds']:9.1f}x" if "seconds" in p and "seconds" in loop
                else f"{'-':>10s}"
            )  # fmt: skip
            print(f"{label:24s}{length:6d}{cell(p, 'seconds', 12, '.4f')}"
                  f"{cell(loop, 'seconds', 10, '.4f')}{speed_up}"
                  f"{cell(p, 'peak_mb', 13, '.1f')}{cell(loop, 'peak_mb', 10, '.1f')}",
                  flush=True)  # fmt: skip
    if len(args.lengths) > 1:
        short, long = args.lengths[-2], args.lengths[-1]
        print(f"\nmemory growth from T={short} to T={long} ({long / short:.0f}x the steps; "
              "linear memory grows as much):")  # fmt: skip
        for label in MODELS[args.size]:
            growth = [
                growth_of(results[label, short][i], results[label, long][i]) for i in range(2)
            ]
            print(f"  {label:24s} parallel {growth[0]:>6s}   loop {growth[1]:>6s}")
    if any("error" in r for pair in results.values() for r in pair):
        print(f"OOM: the step needed more than {MEMORY_SHARE:.0%} of this machine's memory")
    print("target (2-core CPU): the parallel form at least 5x faster than the step loop at "
          "T=256 for mamba2 and s5; memory growing linearly in T")  # fmt: skip


if __name__ == "__main__":
    main()
