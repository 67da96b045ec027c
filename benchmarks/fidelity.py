"""Fidelity per backbone at one equal budget: which tiny preset draws the ball, rewards, ends.

Every tiny preset trains on the same replay for the same number of steps,
seed 0, then is judged on the same held-out windows with wmsim.fidelity's
metrics (object recall of the reconstruction and of open-loop dreams at h1
and h4, beside copying the last real frame; reward and end recall over every
dreamed step). The wall clock of each run is printed beside it, since equal
steps are not equal time.

    python benchmarks/fidelity.py --data REPLAY [--steps 1500] [--out runs/fidelity]
        [--presets tiny-s5 ...] [--motion-weights 20 0]

``--motion-weights`` trains each preset once per weight of the moving pixels'
error (0: the papers' plain squared error): the loss ablation, first run on an
autoencoder alone, on whole world models (docs/fidelity.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from wmsim.replay import Replay
from wmsim.train.checkpoint import load_run
from wmsim.train.config import PRESETS
from wmsim.train.evaluate import episode_windows, evaluate, split_starts
from wmsim.train.loop import TrainArgs, train
from wmsim.train.step import to_torch

TINY = ["tiny", "tiny-gru", "tiny-drama", "tiny-s5", "tiny-dreamerv2", "tiny-rem"]
# recall means little without the spurious pixels beside it: noise draws "balls" everywhere
COLUMNS = ["recon_object_recall", "recon_spurious", "h1_object_recall", "h4_object_recall",
           "h4_copy_object_recall", "h4_spurious", "h1_moving_mse", "reward_recall",
           "reward_precision", "end_recall", "end_prob_ratio"]  # fmt: skip


def judge(run: Path, replay: Replay, windows: int) -> dict[str, float]:
    """The run's fidelity metrics on ``windows`` held-out windows of its own context + 16."""
    model, saved = load_run(run, torch.device("cpu"))
    context = saved["config"]["train"]["context"]
    span = context + 16
    starts = episode_windows(replay, split_starts(replay, span, 0.1)[1], span, windows)
    batch = to_torch(replay.gather(starts, span), torch.device("cpu"))
    life_loss_ends = saved["config"]["train"]["model"].get("life_loss_ends", False)
    return evaluate(model, batch, context, life_loss_ends=life_loss_ends)


def variants(presets: list[str], motion_weights: list[float] | None) -> list[str]:
    """Preset names to train: the presets, or one variant per motion weight, registered here."""
    if motion_weights is None:
        return presets
    names = []
    for name in presets:
        for weight in motion_weights:
            config = PRESETS[name]
            model = dataclasses.replace(config.model, motion_weight=weight)
            PRESETS[f"{name}@motion{weight:g}"] = dataclasses.replace(config, model=model)
            names.append(f"{name}@motion{weight:g}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="replay directory")
    parser.add_argument("--steps", type=int, default=1500, help="training steps per preset")
    parser.add_argument("--windows", type=int, default=256, help="held-out windows judged")
    parser.add_argument("--out", type=Path, default=Path("runs/fidelity"), help="run directories")
    parser.add_argument("--presets", nargs="+", default=TINY, choices=sorted(PRESETS))
    parser.add_argument("--motion-weights", nargs="+", type=float, default=None,
                        help="train each preset with each of these motion weights")  # fmt: skip
    args = parser.parse_args()
    replay = Replay(args.data)
    rows = {}
    for name in variants(args.presets, args.motion_weights):
        run = args.out / name
        started = time.perf_counter()
        train(TrainArgs(data=args.data, out=run, steps=args.steps, preset=name,
                        eval_every=args.steps, resume=(run / "checkpoint.pt").exists()),
              progress=False)  # fmt: skip
        seconds = time.perf_counter() - started
        rows[name] = {**judge(run, replay, args.windows), "seconds": seconds}
        print(f"{name}: {seconds / 60:.1f} min", flush=True)
    (args.out / "fidelity.json").write_text(json.dumps(rows, indent=2))
    print(f"\n{args.steps} steps each on {args.data}, {args.windows} held-out windows")
    print("| preset | " + " | ".join(COLUMNS) + " | minutes |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for name, m in rows.items():
        cells = " | ".join(f"{m[c]:.3f}" for c in COLUMNS)
        print(f"| {name} | {cells} | {m['seconds'] / 60:.1f} |")


if __name__ == "__main__":
    main()
