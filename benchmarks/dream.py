"""Dream steps per second: onnxruntime against torch eager, beside the real emulator, in one run.

One world model (a preset's, fresh weights: speed does not depend on them) is
exported to a bundle, then dreamed from primed states at each batch size:

- torch eager: ``model.step`` (and ``model.decode`` for pixels), no_grad;
- onnxruntime: the bundle's step graph through the runtime's state arena
  (and its decode graph for pixels, in onnxruntime too);
- runtime: the same with the decoder a dream env takes (``decoder="auto"``:
  OpenVINO on the CPU where installed), pixels only;
- dream env: ``DreamVectorEnv.step`` with random actions, the number an RL
  library sees (per-env random streams, autoreset and all), counting the
  steps dreamed (a row that an autoreset restarts dreams nothing that step).
  Its start contexts are observed before timing, as a run has after its first
  thousand or so resets (observing all 1,024 of the default takes about 1 s);

beside ale-py's ``AtariVectorEnv`` on the same machine (64x64 RGB frames,
frame skip 4, as wmsim collects), its throughput at the same batch sizes.

``--against B ...`` times the pixel env of other bundles (the same model with a narrower
decoder, say: ``wmsim bundle decoder``) beside ``--bundle``'s, and ``--decoders D ...`` its
pixel env with other decoders (``openvino``: OpenVINO in floating point, ``onnxruntime``: the
exported graph), in turns at each pixel batch, and prints each one's ratio to ``--bundle``'s
pixel env as a dream env makes it and to the emulator.

``--device cuda`` dreams on the GPU (onnxruntime-gpu; torch eager too where this torch
has CUDA, else its columns show ``-``); the emulator always plays on the CPU. Naming
``--device`` adds what a GPU run must show: the execution provider each graph's nodes
ran on (from onnxruntime's profile: a CUDA session can still place nodes on the CPU),
failing if a graph runs no node on CUDA, and issue 19's targets for one H100 beside the
best rates measured. ``scripts/gpu-bench.sh`` runs it so on a GPU machine.

    python benchmarks/dream.py [--preset tiny-s5 | --bundle PATH] [--batches 1 16 64 256]
                               [--device cuda] [--pixel-batches 256 1024]
                               [--latent-batches 256 1024 4096] [--ale-batches 256 1024]
                               [--against OTHER.wmsim ...] [--decoders openvino ...]
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
GPU_TARGETS = {"pixels": 100_000, "latent": 1_000_000}
"""Issue 19: dreamed steps/s on one H100, summed over the batch."""


MIN_SECONDS = 0.25
"""A timed run lasts at least this long: 32 steps of a 0.5 ms latent step are 16 ms, and the
best of three such runs moved by 25% between two runs of the benchmark on the 2-core CPU."""


def best_of(run, steps: int, repeats: int) -> float:
    """The least seconds per unit of ``run(calls) -> (seconds, units)`` over ``repeats`` runs.

    Runs have ``steps`` calls, doubled until one lasts :data:`MIN_SECONDS`; the runs that
    find the count warm up (threads woken, caches and allocators settled) and do not count.
    """
    calls = steps
    while (found := run(calls))[0] < MIN_SECONDS:
        calls *= 2
    best = found[0] / max(found[1], 1)  # the last warm-up run is as long as the timed ones
    for _ in range(repeats):
        seconds, units = run(calls)
        best = min(best, seconds / max(units, 1))
    return best


def rate(fn, batch: int, steps: int, repeats: int, finish=lambda: None) -> float:
    """Steps/s summed over the batch: the best of ``repeats`` runs (see :func:`best_of`).

    ``finish`` waits for queued work (CUDA kernels run after their call returns).
    """
    fn()
    finish()

    def run(calls: int) -> tuple[float, int]:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        finish()
        return time.perf_counter() - start, calls

    return batch / best_of(run, steps, repeats)


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
    device = next(model.parameters()).device
    rows = np.arange(batch) % len(contexts["frames"])
    with torch.no_grad():
        state = model.observe(*(torch.from_numpy(contexts[k][rows]).to(device)
                                for k in ("frames", "actions", "is_first")))  # fmt: skip
    generator = torch.Generator(device).manual_seed(0)
    box = {"state": state}

    @torch.no_grad()
    def step():
        action = torch.randint(len(ACTIONS), (batch,), generator=generator, device=device)
        noise = torch.rand((batch, *model.noise_shape), generator=generator, device=device)
        box["state"], _, _, latent = model.step(box["state"], action, noise)
        if pixels:
            model.decode(latent)

    finish = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    return rate(step, batch, steps, repeats, finish)


def runtime_rate(bundle, batch, pixels, steps, repeats, device, threads, decoder) -> float:
    from wmsim.runtime.graphs import Runtime

    runtime = Runtime(bundle, batch, device=device, threads=threads, decode=pixels,
                      decoder=decoder)  # fmt: skip
    rows = np.arange(batch)
    runtime.reset(rows, rows % runtime.num_contexts)
    rng = np.random.default_rng(0)
    shape = (batch, *bundle.noise_shape)

    def step():
        actions = rng.integers(len(ACTIONS), size=batch)
        runtime.advance(rows, actions, rng.random(shape, dtype=np.float32))
        if pixels:
            runtime.frames(rows)

    return rate(step, batch, steps, repeats)


def env_rate(
    bundle, batch, pixels, steps, repeats, device, threads, decoder="auto"
) -> float | None:
    """Dreamed steps/s through DreamVectorEnv: rows reset by autoreset in a step do not count."""
    try:
        from wmsim_client.simulator import LocalSimulator
        from wmsim_client.vector import DreamVectorEnv
    except ImportError:
        return None
    obs_type = "pixels" if pixels else "latent"
    simulator = LocalSimulator(bundle.path, batch, obs_type=obs_type, device=device,
                               threads=threads, decoder=decoder)  # fmt: skip
    env = DreamVectorEnv(num_envs=batch, obs_type=obs_type, simulator=simulator)
    runtime = env.simulator.dreams.runtime
    runtime.observe_contexts(np.arange(runtime.num_contexts))
    env.reset(seed=0)
    rng = np.random.default_rng(0)

    def run(calls: int) -> tuple[float, int]:
        start, dreamed = time.perf_counter(), 0
        for _ in range(calls):
            infos = env.step(rng.integers(len(ACTIONS), size=batch))[-1]
            dreamed += int(infos["_continue"].sum()) if "_continue" in infos else 0
        return time.perf_counter() - start, dreamed

    best = best_of(run, steps, repeats)
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


def placement(bundle, device: str, threads) -> tuple[list[str], dict[str, dict[str, list]]]:
    """(The sessions' providers, per graph and provider [nodes, kernel µs] of one call at batch 2).

    A session with the CUDA provider may still place nodes on the CPU, so each graph runs
    once more in a profiled session made with the runtime's own providers and options: the
    profile names the provider of every node it ran (memory copies between them left out).
    """
    import onnxruntime as ort

    from wmsim.bundle import STATE_IN
    from wmsim.runtime.graphs import Runtime

    runtime = Runtime(bundle, 2, device=device, threads=threads, arena="host")  # feeds, below
    rows = np.arange(2)
    runtime.reset(rows, rows % runtime.num_contexts)
    contexts = {k: v[:2] for k, v in runtime.contexts.items()}
    noise = np.random.default_rng(0).random((2, *bundle.noise_shape), np.float32)
    feeds = {
        "observe": {**contexts, "actions": np.asarray(contexts["actions"], np.int64)},
        "step": {**{STATE_IN + k: v for k, v in runtime.arena.items()},
                 "action": np.zeros(2, np.int64), "noise": noise},
        "decode": {"latent": runtime.latents},
    }  # fmt: skip
    found: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, feed in feeds.items():
            live = runtime.graphs.sessions[name]
            options = ort.SessionOptions()
            options.enable_profiling, options.profile_file_prefix = True, f"{tmp}/{name}"
            providers = live.get_providers()
            session = ort.InferenceSession(
                bundle.read_graph(name), options, providers=providers,
                provider_options=[live.get_provider_options()[p] for p in providers],
            )  # fmt: skip
            session.run(None, feed)
            for event in json.loads(Path(session.end_profiling()).read_text()):
                args = event.get("args", {})
                if event.get("cat") != "Node" or args.get("op_name", "").startswith("Memcpy"):
                    continue
                if event["name"].endswith("_kernel_time"):
                    count = found.setdefault(name, {}).setdefault(args["provider"], [0, 0.0])
                    count[0], count[1] = count[0] + 1, count[1] + event["dur"]
    return providers, found


def show_placement(found: dict[str, dict[str, list[float]]], device: str) -> None:
    """One line per graph; exits when ``device`` is cuda and a graph ran no node on CUDA."""
    for name, providers in found.items():
        total = sum(micros for _, micros in providers.values()) or 1.0
        nodes = ", ".join(f"{n} on {p.removesuffix('ExecutionProvider')}"
                          for p, (n, _) in providers.items())  # fmt: skip
        cuda = providers.get("CUDAExecutionProvider", [0, 0.0])
        print(f"  {name}: {nodes} ({cuda[1] / total:.0%} of kernel time on CUDA)")
        if device == "cuda" and not cuda[0]:
            raise SystemExit(
                f"dream.py: the {name} graph ran no node on CUDA (a silent CPU fallback): "
                "check that onnxruntime-gpu alone is installed and finds CUDA 12 and cuDNN 9"
            )


def show_targets(rows: list[tuple[str, int, float, float | None]], device: str) -> None:
    """Issue 19's one-H100 targets beside the best rates measured: env where it ran."""
    for kind, target in GPU_TARGETS.items():
        ours = [row for row in rows if row[0] == kind]
        if not ours:
            continue
        ort_batch, ort = max(((b, o) for _, b, o, _ in ours), key=lambda x: x[1])
        envs = [(b, e) for _, b, _, e in ours if e is not None]
        env_batch, env = max(envs, key=lambda x: x[1]) if envs else (ort_batch, ort)
        verdict = "met" if env >= target else "not met"
        print(f"target on one H100: {kind} {target:,} dream steps/s; measured on {device}: "
              f"env {env:,.0f} (batch {env_batch}), onnxrt {ort:,.0f} (batch {ort_batch}): "
              f"{verdict}")  # fmt: skip


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def number(value: float | None, width: int = 9, suffix: str = "") -> str:
    """``value`` right-aligned (a ratio: one decimal and ``suffix``), ``-`` where not measured."""
    if value is None:
        return f"{'-':>{width}s}"
    return f"{value:{width - len(suffix)}.{1 if suffix else 0}f}{suffix}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny-s5", help="the model, with fresh weights")
    parser.add_argument(
        "--bundle", type=Path, help="time this bundle in onnxruntime (torch: its architecture)"
    )
    parser.add_argument(
        "--against", type=Path, nargs="+", default=[],
        help="bundles whose pixel env is timed beside --bundle's (a narrower decoder, say), "
        "interleaved, at the pixel batches",
    )  # fmt: skip
    parser.add_argument(
        "--decoders", nargs="+", default=[], choices=("openvino", "openvino-int8", "onnxruntime"),
        help="decoders whose pixel env is timed beside the default's, interleaved, at the pixel "
        "batches",
    )  # fmt: skip
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--pixel-batches", type=int, nargs="+", help="default: --batches")
    parser.add_argument("--latent-batches", type=int, nargs="+", help="default: --batches")
    parser.add_argument(
        "--ale-batches", type=int, nargs="+", help="emulator batches (default: all); others: -"
    )
    parser.add_argument("--steps", type=int, default=32, help="steps per measurement, at least")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        help="where onnxruntime and torch dream (default cpu); naming it adds node placement "
        "and the GPU targets",
    )
    args = parser.parse_args()
    device = args.device or "cpu"
    batches = {True: args.pixel_batches or args.batches, False: args.latent_batches or args.batches}
    torch.manual_seed(0)
    if args.bundle:
        config = from_dict(json.loads((args.bundle / "config.json").read_text())["train"])
        label = f"bundle {args.bundle}"
    else:
        config, label = preset(args.preset), f"preset {args.preset}, fresh weights"
    model = make_world_model(config.model, len(ACTIONS)).eval()
    torch_here = device == "cpu" or torch.cuda.is_available()
    if device == "cuda" and torch_here:
        model = model.to("cuda")
    contexts = fake_contexts(16, config.context)
    from wmsim.runtime.graphs import Runtime

    with tempfile.TemporaryDirectory() as tmp:
        bundle = open_bundle(args.bundle) if args.bundle else write_bundle(
            Path(tmp) / "bench.wmsim", model, contexts, game="Breakout", actions=ACTIONS,
            env={}, config={"train": to_dict(config)}, training={},
        )  # fmt: skip
        print(f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
              f"({torch.get_num_threads()} threads), onnxruntime {ort_version()}, {label}, "
              f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")  # fmt: skip
        if args.device:
            providers, found = placement(bundle, device, args.threads)
            eager_on = device if torch_here else "- (this torch has no CUDA)"
            print(f"device {device}: torch eager on {eager_on}; the emulator (ALE) on the CPU, "
                  f"{os.cpu_count()} cores; onnxruntime sessions on {', '.join(providers)}; "
                  "nodes per provider, one profiled call per graph:")  # fmt: skip
            show_placement(found, device)
        probe = Runtime(bundle, 1, device=device, threads=args.threads)
        print(f"steps/s summed over the batch; ratios against torch eager and the real emulator; "
              f"runtime and env decode with {probe.graphs.decoder}, their state arena in "
              f"{probe.arena_place} memory")  # fmt: skip
        print(f"{'':8s}{'batch':>6s}{'torch':>9s}{'onnxrt':>9s}{'runtime':>9s}{'x torch':>9s}"
              f"{'env':>9s}{'ALE':>9s}{'env/ALE':>9s}")  # fmt: skip
        everything = sorted({b for kind in batches.values() for b in kind})
        ale = {b: ale_rate(b, args.steps, args.repeats) for b in args.ale_batches or everything}
        rows = []
        for pixels in (True, False):
            kind = "pixels" if pixels else "latent"
            for b in batches[pixels]:
                eager = (torch_rate(model, contexts, b, pixels, args.steps, args.repeats)
                         if torch_here else None)  # fmt: skip
                timing = (bundle, b, pixels, args.steps, args.repeats, device, args.threads)
                ort = runtime_rate(*timing, "onnxruntime")
                # the env's decoder, where it is not onnxruntime: only frames need a decoder
                apart = pixels and probe.graphs.decoder != "onnxruntime"
                ours = runtime_rate(*timing, "auto") if apart else None
                best = ours or ort
                env = env_rate(*timing)
                played = ale.get(b)
                print(f"{kind:8s}{b:6d}{number(eager)}{number(ort)}{number(ours)}"
                      f"{number(eager and best / eager, suffix='x')}{number(env)}{number(played)}"
                      f"{number(played and env and env / played, suffix='x')}")  # fmt: skip
                rows.append((kind, b, best, env))
        if args.device:
            show_targets(rows, device)
        if args.against or args.decoders:
            turns = [(bundle.path.name, bundle, "auto")]
            turns += [(p.name, open_bundle(p), "auto") for p in args.against]
            turns += [(f"{bundle.path.name} {d}", bundle, d) for d in args.decoders]
            show_against(turns, batches[True], ale, args)


def show_against(turns, batches, ale, args) -> None:
    """The pixel env of each (label, bundle, decoder) of ``turns``, timed in turns, with ratios."""
    print(f"pixel env (DreamVectorEnv) side by side, in turns, best of {args.repeats} turns; "
          f"ratios against the first and the real emulator")  # fmt: skip
    device = args.device or "cpu"
    for b in batches:
        best = [0.0] * len(turns)
        for _ in range(args.repeats):
            for i, (_, bundle, decoder) in enumerate(turns):
                rate_ = env_rate(bundle, b, True, args.steps, 1, device, args.threads, decoder)
                if rate_ is None:  # no wmsim_client: nothing to compare
                    return
                best[i] = max(best[i], rate_)
        played = ale.get(b)
        for (label, _, _), r in zip(turns, best, strict=True):
            print(f"{label[:40]:40s}{b:6d}{number(r)}{r / best[0]:8.2f}x"
                  f"{number(played and r / played, suffix='x')} ALE")  # fmt: skip


if __name__ == "__main__":
    main()
