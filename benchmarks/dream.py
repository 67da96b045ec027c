"""Dream steps per second: onnxruntime against torch eager, beside the real emulator, in one run.

One world model (a preset's, fresh weights: speed does not depend on them) is
exported to a bundle, then dreamed from primed states at each batch size:

- torch eager: ``model.step`` (and ``model.decode`` for pixels), no_grad;
- onnxruntime: the bundle's step graph through the runtime's state arena
  (and its decode graph for pixels), the path a dream env takes;
- dream env: ``DreamVectorEnv.step`` with random actions, the number an RL
  library sees (per-env random streams, autoreset and all), counting the
  steps dreamed (a row that an autoreset restarts dreams nothing that step);

beside ale-py's ``AtariVectorEnv`` on the same machine (64x64 RGB frames,
frame skip 4, as wmsim collects), its throughput at the same batch sizes.

    python benchmarks/dream.py [--preset tiny-s5 | --bundle PATH] [--batches 1 16 64 256]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from wmsim.bundle import open_bundle
from wmsim.configs import from_dict, to_dict
from wmsim.export.writer import write_bundle
from wmsim.model import make_world_model
from wmsim.train.config import preset

ACTIONS = ["NOOP", "FIRE", "RIGHT", "LEFT"]


def rate(fn, batch: int, steps: int, repeats: int) -> float:
    """Steps/s summed over the batch: the best of ``repeats`` runs of ``steps`` calls."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        best = min(best, time.perf_counter() - start)
    return batch * steps / best


def fake_contexts(count: int, context: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    is_first = np.zeros((count, context), bool)
    is_first[:, 0] = True
    return {
        "frames": rng.integers(0, 256, (count, context, 64, 64, 3), dtype=np.uint8),
        "actions": rng.integers(0, len(ACTIONS), (count, context - 1)),
        "is_first": is_first,
    }


def torch_rate(model, contexts, batch, pixels, steps, repeats) -> float:
    rows = np.arange(batch) % len(contexts["frames"])
    with torch.no_grad():
        state = model.observe(*(torch.from_numpy(contexts[k][rows])
                                for k in ("frames", "actions", "is_first")))  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    box = {"state": state}

    @torch.no_grad()
    def step():
        action = torch.randint(len(ACTIONS), (batch,), generator=generator)
        noise = torch.rand((batch, *model.noise_shape), generator=generator)
        box["state"], _, _, latent = model.step(box["state"], action, noise)
        if pixels:
            model.decode(latent)

    return rate(step, batch, steps, repeats)


def runtime_rate(bundle, batch, pixels, steps, repeats, threads) -> float:
    from wmsim.runtime.graphs import Runtime

    runtime = Runtime(bundle, batch, device="cpu", threads=threads, decode=pixels)
    rows = np.arange(batch)
    runtime.reset(rows, rows % runtime.num_contexts)
    rng = np.random.default_rng(0)
    shape = (batch, *bundle.spec["noise"]["shape"])

    def step():
        actions = rng.integers(len(ACTIONS), size=batch)
        runtime.step(rows, actions, rng.random(shape, dtype=np.float32))
        if pixels:
            runtime.frames(rows)

    return rate(step, batch, steps, repeats)


def env_rate(bundle, batch, pixels, steps, repeats, threads) -> float | None:
    """Dreamed steps/s through DreamVectorEnv: rows reset by autoreset in a step do not count."""
    try:
        from wmsim_client.vector import DreamVectorEnv
    except ImportError:
        return None
    env = DreamVectorEnv(num_envs=batch, model=bundle.path, device="cpu", threads=threads,
                         obs_type="pixels" if pixels else "latent")  # fmt: skip
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    best = float("inf")
    for _ in range(repeats + 1):  # the first is the warm-up
        start, dreamed = time.perf_counter(), 0
        for _ in range(steps):
            infos = env.step(rng.integers(len(ACTIONS), size=batch))[-1]
            dreamed += int(infos["_continue"].sum()) if "_continue" in infos else 0
        best = min(best, (time.perf_counter() - start) / max(dreamed, 1))
    env.close()
    return 1.0 / best


def ale_rate(batch: int, steps: int, repeats: int) -> float:
    from ale_py.vector_env import AtariVectorEnv

    env = AtariVectorEnv("breakout", batch, img_height=64, img_width=64, grayscale=False,
                         stack_num=1, reward_clipping=False)  # fmt: skip
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    result = rate(lambda: env.step(rng.integers(4, size=batch)), batch, steps, repeats)
    env.close()
    return result


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny-s5", help="the model, with fresh weights")
    parser.add_argument(
        "--bundle", type=Path, help="time this bundle in onnxruntime (torch: its architecture)"
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--steps", type=int, default=32, help="steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.bundle:
        config = from_dict(json.loads((args.bundle / "config.json").read_text())["train"])
        label = f"bundle {args.bundle}"
    else:
        config, label = preset(args.preset), f"preset {args.preset}, fresh weights"
    model = make_world_model(config.model, len(ACTIONS)).eval()
    contexts = fake_contexts(16, config.context)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = open_bundle(args.bundle) if args.bundle else write_bundle(
            Path(tmp) / "bench.wmsim", model, contexts, game="Breakout", actions=ACTIONS,
            env={}, config={"train": to_dict(config)}, training={},
        )  # fmt: skip
        print(f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
              f"({torch.get_num_threads()} threads), onnxruntime {ort_version()}, {label}, "
              f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")  # fmt: skip
        print("steps/s summed over the batch; ratios against torch eager and the real emulator")
        print(f"{'':8s}{'batch':>6s}{'torch':>9s}{'onnxrt':>9s}{'x torch':>9s}{'env':>9s}"
              f"{'ALE':>9s}{'ort/ALE':>9s}")  # fmt: skip
        ale = {b: ale_rate(b, args.steps, args.repeats) for b in args.batches}
        for pixels in (True, False):
            for b in args.batches:
                eager = torch_rate(model, contexts, b, pixels, args.steps, args.repeats)
                ort = runtime_rate(bundle, b, pixels, args.steps, args.repeats, args.threads)
                env = env_rate(bundle, b, pixels, args.steps, args.repeats, args.threads)
                shown = f"{env:9.0f}" if env is not None else f"{'-':>9s}"
                print(f"{'pixels' if pixels else 'latent':8s}{b:6d}{eager:9.0f}{ort:9.0f}"
                      f"{ort / eager:8.1f}x{shown}{ale[b]:9.0f}{ort / ale[b]:8.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
