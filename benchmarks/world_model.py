"""World-model speed per backbone, measured side by side in one run.

For each world model (STORM's transformer, the GRU backbone, DreamerV2's RSSM,
DRAMA's Mamba-2, S5):

- training: frames per second of a full gradient step (loss, backward, Adam)
  on a batch of B x T frames, in fp32 and under bf16 autocast (what
  ``wmsim train --precision auto`` takes where the hardware has native bf16),
  measured alternately and side by side;
- imagination: dreamed steps per second (latent only, and with the frame
  decoded) at batch 1, 16 and 256, from a primed state;
- for the transformer, the ring-buffer KV-cache step against recomputing the
  full context window at every step, the way a model without a cache must.

    python benchmarks/world_model.py [--size paper|tiny] [--steps 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import replace

import torch

from wmsim.model import make_world_model
from wmsim.model.backbones import GRUConfig
from wmsim.train.config import PRESETS

MODELS = {
    "paper": {
        "transformer (storm)": PRESETS["storm"].model,
        "gru (storm latents, GRU 600)": replace(PRESETS["storm"].model, backbone=GRUConfig()),
        "rssm (dreamerv2)": PRESETS["dreamerv2"].model,
        "mamba2 (drama)": PRESETS["drama"].model,
        "s5 (s5)": PRESETS["s5"].model,
    },
    "tiny": {
        "transformer (tiny)": PRESETS["tiny"].model,
        "gru (tiny-gru)": PRESETS["tiny-gru"].model,
        "rssm (tiny-dreamerv2)": PRESETS["tiny-dreamerv2"].model,
        "mamba2 (tiny-drama)": PRESETS["tiny-drama"].model,
        "s5 (tiny-s5)": PRESETS["tiny-s5"].model,
    },
}
ACTIONS = 4


def timed(fn, repeats: int) -> float:
    """Seconds per call, best of ``repeats`` after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def fake_batch(batch: int, length: int, device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "obs": torch.randint(0, 256, (batch, length, 64, 64, 3), generator=g, dtype=torch.uint8).to(
            device
        ),
        "action": torch.randint(0, ACTIONS, (batch, length), generator=g).to(device),
        "reward": torch.zeros(batch, length, device=device),
        "is_first": torch.zeros(batch, length, dtype=torch.bool, device=device),
        "is_terminal": torch.zeros(batch, length, dtype=torch.bool, device=device),
        "life_loss": torch.zeros(batch, length, dtype=torch.bool, device=device),
    }


def training_rates(model, batch: int, length: int, device, repeats: int) -> tuple[float, float]:
    """Frames/s of a training step in fp32 and under bf16 autocast, timed alternately."""
    data = fake_batch(batch, length, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(autocast: bool):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss, _ = model.loss(data)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    best = [float("inf"), float("inf")]
    for _ in range(repeats):  # alternate, so both see the same machine load
        for k, autocast in enumerate((False, True)):
            best[k] = min(best[k], timed(lambda a=autocast: step(a), 1))
    return batch * length / best[0], batch * length / best[1]


@torch.no_grad()
def imagination_rate(model, batch: int, steps: int, decode: bool, device, repeats: int) -> float:
    data = fake_batch(batch, 8, device)
    primed = model.observe(data["obs"], data["action"][:, :7], data["is_first"])
    action = torch.zeros(batch, dtype=torch.long, device=device)

    def dream():
        state = primed
        for _ in range(steps):
            state, _, _, latent = model.step(state, action)
            if decode:
                model.decode(latent)

    return batch * steps / timed(dream, repeats)


@torch.no_grad()
def cache_against_recompute(
    model, batch: int, steps: int, device, repeats: int
) -> tuple[float, float]:
    """Steps/s of the ring-buffer step and of re-running the window's parallel form per step."""
    backbone = model.backbone
    window = backbone.config.window
    x = torch.randn(batch, window + steps, backbone.input_dim, device=device)
    first = torch.zeros(batch, window + steps, dtype=torch.bool, device=device)
    warm = backbone.initial_state(batch, device)
    _, primed = backbone(x[:, :window], first[:, :window], warm)

    def cached():
        state = primed
        for t in range(window, window + steps):
            _, state = backbone.step(x[:, t], first[:, t], state)

    def recompute():
        for t in range(window, window + steps):
            backbone(x[:, t - window + 1 : t + 1], first[:, t - window + 1 : t + 1], warm)

    return batch * steps / timed(cached, repeats), batch * steps / timed(recompute, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(MODELS), default="paper")
    parser.add_argument("--steps", type=int, default=32, help="dreamed steps per measurement")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("--train-batch", type=int, nargs=2, default=[16, 64], metavar=("B", "T"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    threads = torch.get_num_threads()
    print(f"{name}, {os.cpu_count()} CPUs, torch {torch.__version__}, {threads} threads")
    b, t = args.train_batch
    header = f"{'model':28s}{'params':>8s}{'train fps':>11s}{'bf16 fps':>10s}{'bf16 x':>8s}"
    header += "".join(f"{'imag/s b' + str(n):>13s}" for n in args.batches)
    header += "".join(f"{'+decode b' + str(n):>14s}" for n in args.batches)
    print(f"training on {b} x {t} frames; imagination in dreamed steps/s (latent, then +decode)")
    print(header)
    transformer = None
    for label, config in MODELS[args.size].items():
        model = make_world_model(config, ACTIONS).to(device)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        fps, bf16 = training_rates(model.train(), b, t, device, args.repeats)
        row = f"{label:28s}{params:7.1f}M{fps:11.0f}{bf16:10.0f}{bf16 / fps:7.2f}x"
        model.eval()
        latent = [
            imagination_rate(model, n, args.steps, False, device, args.repeats)
            for n in args.batches
        ]
        pixels = [
            imagination_rate(model, n, args.steps, True, device, args.repeats) for n in args.batches
        ]
        row += "".join(f"{r:13.0f}" for r in latent) + "".join(f"{r:14.0f}" for r in pixels)
        print(row, flush=True)
        if hasattr(model, "backbone") and hasattr(model.backbone.config, "window"):
            transformer = model
    if transformer is not None:
        window = transformer.backbone.config.window
        print(f"\ntransformer, full {window}-token context: ring-buffer cache vs recomputing it")
        for n in args.batches:
            cached, recomputed = cache_against_recompute(
                transformer, n, args.steps, device, args.repeats
            )
            print(
                f"  batch {n:4d}: cache {cached:9.0f} steps/s, "
                f"recompute {recomputed:9.0f} steps/s, ratio {cached / recomputed:5.1f}x"
            )


if __name__ == "__main__":
    main()
