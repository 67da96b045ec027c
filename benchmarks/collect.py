"""Collection throughput beside raw ALE stepping of the same game, on this machine, in one run.

Rows, each in agent steps per second (one step = frame_skip emulator frames):

- raw ALE: ``ALEInterface.act`` frame_skip times per step with random actions,
  nothing else: the emulator's own cost, the floor of any Atari pipeline;
- wmsim AtariEnv: our gymnasium env (max-pool of the last two frames, resize);
- wmsim collect: the whole pipeline, env + policy + replay chunks on disk;
- the same with K emulators: raw ALE in K processes against ``wmsim collect --envs K``.

Ratios are ours over raw ALE; the target is a pipeline overhead under 30%
(a ratio of at least 0.70). Each measurement is repeated ``--rounds`` times,
alternating raw and ours, and the best round counts.

    python benchmarks/collect.py [--game Breakout] [--steps 6000] [--envs 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from wmsim.collect.atari import AtariConfig, AtariEnv
from wmsim.collect.rollout import CollectConfig, collect
from wmsim.games import resolve_game, rom_id


def raw_ale(game: str, steps: int, frame_skip: int, seed: int) -> float:
    """Steps/s of bare emulation: act() frame_skip times per step, reset at game over."""
    import ale_py
    from ale_py import roms

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    ale = ale_py.ALEInterface()
    ale.setInt("random_seed", seed)
    ale.setFloat("repeat_action_probability", 0.0)
    ale.loadROM(roms.get_rom_path(rom_id(game)))
    actions = ale.getMinimalActionSet()
    choice = np.random.default_rng(seed).integers(len(actions), size=steps)
    start = time.perf_counter()
    for i in range(steps):
        action = actions[choice[i]]
        for _ in range(frame_skip):
            ale.act(action)
        if ale.game_over():
            ale.reset_game()
    return steps / (time.perf_counter() - start)


def _raw_ale_worker(game: str, steps: int, frame_skip: int, seed: int, queue: mp.Queue) -> None:
    queue.put(raw_ale(game, steps, frame_skip, seed))


def raw_ale_processes(game: str, steps: int, frame_skip: int, processes: int) -> float:
    """Total steps/s of ``processes`` bare emulators in parallel processes."""
    ctx = mp.get_context("forkserver")
    queue = ctx.Queue()
    workers = [
        ctx.Process(target=_raw_ale_worker, args=(game, steps // processes, frame_skip, i, queue))
        for i in range(processes)
    ]
    for w in workers:
        w.start()
    rates = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    return sum(rates)


def atari_env(config: AtariConfig, steps: int) -> float:
    """Steps/s of our single gymnasium env with random actions."""
    env = AtariEnv(config)
    env.reset(seed=0)
    choice = np.random.default_rng(0).integers(env.action_space.n, size=steps)
    start = time.perf_counter()
    for i in range(steps):
        _, _, terminated, truncated, _ = env.step(choice[i])
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def wmsim_collect(config: AtariConfig, steps: int, envs: int) -> float:
    """Steps/s of ``wmsim collect`` into a fresh replay (emulator start-up excluded)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = CollectConfig(out=Path(tmp) / "replay", steps=steps, env=config, envs=envs)
        result = collect(cfg, progress=False)
    return result.added / result.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--game", default="Breakout")
    parser.add_argument("--steps", type=int, default=6000, help="steps per measurement")
    parser.add_argument("--envs", type=int, default=os.cpu_count() or 2, help="K, parallel envs")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    config = AtariConfig(game=resolve_game(args.game))
    skip = config.frame_skip

    raw1, rawk = "raw ALE, 1 process", f"raw ALE, {args.envs} processes"
    rows = {  # name -> (measurement, the raw row it is compared with)
        raw1: (lambda: raw_ale(config.game, args.steps, skip, 0), raw1),
        "wmsim AtariEnv": (lambda: atari_env(config, args.steps), raw1),
        "wmsim collect, 1 env": (lambda: wmsim_collect(config, args.steps, 1), raw1),
        rawk: (lambda: raw_ale_processes(config.game, args.steps, skip, args.envs), rawk),
        f"wmsim collect, {args.envs} envs": (
            lambda: wmsim_collect(config, args.steps, args.envs),
            rawk,
        ),
    }
    best = dict.fromkeys(rows, 0.0)
    for _ in range(args.rounds):
        for name, (measure, _) in rows.items():
            best[name] = max(best[name], measure())

    print(
        f"{config.game}, frame skip {skip}, {config.size}x{config.size} RGB; "
        f"{platform.machine()}, {os.cpu_count()} CPUs; "
        f"best of {args.rounds} rounds of {args.steps} steps"
    )
    print(f"{'':32s}{'steps/s':>10s}{'vs raw':>9s}{'overhead':>10s}")
    collect_ratios = []
    for name, (_, baseline) in rows.items():
        ratio = best[name] / best[baseline]
        print(f"{name:32s}{best[name]:10.0f}{ratio:9.2f}{1 - ratio:10.0%}")
        if name.startswith("wmsim collect"):
            collect_ratios.append(ratio)
    worst = min(collect_ratios)
    verdict = "met" if worst >= 0.70 else "MISSED"
    print(f"target: collection overhead under 30% (ratio >= 0.70): {verdict}, worst {worst:.2f}")


if __name__ == "__main__":
    main()
