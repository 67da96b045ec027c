"""``wmsim export``: a trained run -> a model bundle (see :mod:`wmsim.bundle`).

The bundle is written into a temporary sibling directory and renamed into place
at the end, so an interrupted export leaves no half bundle under the name.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wmsim import __version__
from wmsim.bundle import (
    BATCH,
    CONFIG,
    FORMAT_VERSION,
    GRAPHS,
    MAX_START_CONTEXTS,
    SAMPLING,
    SPEC,
    START_CONTEXTS,
    Bundle,
    expected_io,
    open_bundle,
    sha256,
)
from wmsim.configs import from_dict
from wmsim.errors import UserError
from wmsim.export.graphs import (
    EXAMPLE_BATCH,
    OPSET,
    DecodeGraph,
    ObserveGraph,
    StepGraph,
    round_to_float16,
    store_float16,
    to_onnx,
)
from wmsim.files import atomic_write_bytes, atomic_write_json, replace_dir, staging_dir
from wmsim.replay import Replay
from wmsim.train.checkpoint import checkpoint_kind, load_run
from wmsim.train.config import TrainConfig
from wmsim.train.evaluate import episode_windows
from wmsim.train.logs import read_metrics

AGENT_REPLAY = "replay"
"""Where an agent run keeps its replay (:data:`wmsim.agent.loop.REPLAY`)."""


@dataclass(frozen=True)
class ExportArgs:
    """Write a trained run as a model bundle: ONNX graphs, spec, start contexts, config."""

    run: Path
    """Run directory written by `wmsim train`."""
    out: Path
    """Bundle directory to write, NAME.wmsim; replaced if it exists and is a bundle."""
    check: bool = False
    """Run torch and onnxruntime side by side on real contexts and random actions and noise,
    and fail on any mismatch; then measure the bundle's fidelity on fresh real play
    (`wmsim bundle eval`) and write it into spec.json."""
    fidelity_steps: int = 10_000
    """Real steps of fresh play that --check measures fidelity on (0: skip the measurement)."""
    contexts: int = 64
    """Start contexts to ship, evenly spread over the replay."""
    starts: str = "episode"
    """Where start contexts come from: "episode", the first frames of real episodes (a reset
    looks like the real game's), or "play", windows anywhere in real play (a reset may put the
    ball in flight, as DIAMOND's dream env and Dreamer's imagination start from replayed states;
    an agent trained in the dream then meets rallies and rewards from its first step)."""
    data: Path | None = None
    """Replay to take start contexts from (default: the one the run trained on)."""
    weights: str = "float32"
    """float32, or float16: weights rounded to half precision and stored so (half the size;
    the graphs still compute in float32)."""


STARTS = ("episode", "play")


def start_contexts(
    replay: Replay, context: int, count: int, starts: str = "episode"
) -> dict[str, np.ndarray]:
    """Up to ``count`` real contexts of ``context`` steps, evenly spread over the replay.

    With ``starts="episode"`` they are the first steps of episodes, so that a dream env's
    reset looks like the real game's. With ``"play"`` they are windows anywhere inside an
    episode that the game goes on after (the step after the context is not a new episode).
    """
    if starts not in STARTS:
        raise UserError(f"--starts must be one of {', '.join(STARTS)}, got {starts!r}")
    if starts == "episode":
        windows = replay.window_starts(context)
        firsts = replay.gather(windows, 1, fields=("is_first",))["is_first"][:, 0]
        chosen = episode_windows(replay, windows[firsts], context, count)
    else:
        chosen = episode_windows(replay, replay.window_starts(context + 1), context + 1, count)
    if len(chosen) == 0:
        what = "episode start followed by" if starts == "episode" else "episode of more than"
        raise UserError(
            f"{replay.directory} holds no {what} {context} steps; collect more with `wmsim collect`"
        )
    window = replay.gather(chosen, context, fields=("obs", "action", "is_first"))
    return {
        "frames": window["obs"],
        "actions": window["action"][:, :-1].astype(np.int64),
        "is_first": window["is_first"].astype(bool),
    }


def _info(name: str, x: torch.Tensor, batch_axis: bool = True) -> dict[str, Any]:
    """A tensor's entry in spec.json; the batch axis is named, or left out of a state's shape."""
    shape = [BATCH, *x.shape[1:]] if batch_axis else list(x.shape[1:])
    return {"name": name, "shape": shape, "dtype": str(x.dtype).removeprefix("torch.")}


def _training_summary(run: Path, saved: dict[str, Any], replay: Replay) -> dict[str, Any]:
    evaluations = read_metrics(run, "eval")
    return {
        "kind": checkpoint_kind(saved),  # train or agent: an env run holds no world model
        "preset": saved["config"]["preset"],
        # an agent run counts world-model updates
        "steps": int(saved.get("step", saved.get("updates", 0))),
        "data": str(replay.directory),
        "seed": saved["config"]["seed"],
        "held_out": {k: v for k, v in evaluations[-1].items() if k != "kind"}
        if evaluations
        else {},
    }


def build_graphs(
    model: torch.nn.Module, contexts: dict[str, np.ndarray], weights: str = "float32"
) -> dict[str, Any]:
    """Export the three graphs of ``model``; returns name -> (onnx bytes, inputs, outputs, state).

    The example inputs are real contexts (repeated to the example batch), their
    state, a random action and noise.
    """
    rows = np.arange(EXAMPLE_BATCH) % len(contexts["frames"])
    example = {k: torch.from_numpy(v[rows]) for k, v in contexts.items()}
    with torch.no_grad():
        state = model.observe(example["frames"], example["actions"], example["is_first"])
        names = list(state)
        action = torch.zeros(EXAMPLE_BATCH, dtype=torch.long)
        noise = torch.rand(EXAMPLE_BATCH, *model.noise_shape)
        latent = model.latent(state)
    inputs = {
        "observe": [example["frames"], example["actions"], example["is_first"]],
        "step": [*(state[k] for k in names), action, noise],
        "decode": [latent],
    }
    form = model.export_form()  # the same outputs, computed more cheaply where it can be
    modules = {
        "observe": ObserveGraph(form, names),
        "step": StepGraph(form, names),
        "decode": DecodeGraph(form),
    }
    graphs = {}
    for name, (input_names, output_names) in expected_io(names).items():
        with torch.no_grad():
            outputs = modules[name](*inputs[name])
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        # float16 storage needs the weights unfolded (see store_float16)
        optimize = weights == "float32"
        onnx = to_onnx(modules[name], inputs[name], input_names, output_names, optimize=optimize)
        graphs[name] = {
            "onnx": store_float16(onnx) if weights == "float16" else onnx,
            "inputs": [_info(n, x) for n, x in zip(input_names, inputs[name], strict=True)],
            "outputs": [_info(n, x) for n, x in zip(output_names, outputs, strict=True)],
        }
    graphs["state"] = [_info(k, v, batch_axis=False) for k, v in state.items()]
    graphs["latent"] = _info("latent", latent, batch_axis=False)
    return graphs


def _model_summary(model: torch.nn.Module, config: TrainConfig) -> dict[str, Any]:
    return {
        "type": type(model).__name__,
        "backbone": model.backbone_name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "clips_rewards": model.clips_rewards,
        "life_loss_ends": config.model.life_loss_ends,
    }


def _spec(model, graphs, contexts, **fields) -> dict[str, Any]:
    """spec.json but its hashes; ``fields``: game, actions, env, config, training, weights."""
    latent = graphs["latent"]
    low, high = (float(x) if np.isfinite(x) else None for x in model.latent_range)
    return {
        "format": FORMAT_VERSION,
        "wmsim": __version__,
        "game": fields["game"],
        "actions": list(fields["actions"]),
        "env": fields["env"],
        "context": int(contexts["frames"].shape[1]),
        "observation": {"shape": list(contexts["frames"].shape[2:]), "dtype": "uint8"},
        # None: unbounded (JSON has no infinity)
        "latent": {"shape": latent["shape"], "dtype": latent["dtype"], "low": low, "high": high},
        "noise": {
            "shape": list(model.noise_shape),
            "dtype": "float32",
            "sampling": SAMPLING[FORMAT_VERSION],
        },
        "state": graphs["state"],
        "model": _model_summary(model, from_dict(fields["config"]["train"])),
        "graphs": {
            name: {
                "file": f"{name}.onnx",
                "inputs": graphs[name]["inputs"],
                "outputs": graphs[name]["outputs"],
            }
            for name in GRAPHS
        },  # fmt: skip
        "opset": OPSET,
        "weights": fields["weights"],
        "training": fields["training"],
    }


def write_bundle(
    out: Path,
    model: torch.nn.Module,
    contexts: dict[str, np.ndarray],
    *,
    game: str,
    actions: list[str],
    env: dict[str, Any],
    config: dict[str, Any],
    training: dict[str, Any],
    weights: str = "float32",
    check: bool = False,
    fidelity_steps: int = 0,
) -> Bundle:
    """Export ``model`` (eval mode, on the CPU) as a bundle at ``out``; return it opened.

    With ``weights="float16"`` the model's large parameters are rounded in place
    first. With ``check``, the graphs are compared with ``model`` before the
    bundle takes the place of anything at ``out``, and with ``fidelity_steps``
    the bundle is measured on that many steps of fresh real play
    (:func:`wmsim.bundle_eval.evaluate_bundle`), the result stored as the
    spec's ``fidelity``.
    """
    out = Path(out)
    if out.exists() and not (out / SPEC).is_file():
        raise UserError(f"{out} exists and is not a bundle; choose another --out")
    if weights not in ("float32", "float16"):
        raise UserError(f"--weights must be float32 or float16, got {weights!r}")
    if weights == "float16":
        round_to_float16(model)
    graphs = build_graphs(model, contexts, weights)
    tmp = staging_dir(out)
    try:
        for name in GRAPHS:
            atomic_write_bytes(tmp / f"{name}.onnx", graphs[name]["onnx"])
        _write_npz(tmp / START_CONTEXTS, contexts)
        atomic_write_json(tmp / CONFIG, config)
        spec = _spec(model, graphs, contexts, game=game, actions=actions, env=env,
                     config=config, training=training, weights=weights)  # fmt: skip
        spec["files"] = {p.name: sha256(p) for p in sorted(tmp.iterdir())}
        atomic_write_json(tmp / SPEC, spec)
        if check:
            from wmsim.export.check import check_against_torch

            check_against_torch(open_bundle(tmp), model)
            if fidelity_steps:
                spec["fidelity"] = measure_fidelity(open_bundle(tmp), fidelity_steps)
                atomic_write_json(tmp / SPEC, spec)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return open_bundle(out)


def measure_fidelity(bundle: Bundle, steps: int) -> dict[str, Any]:
    """The bundle's fidelity metrics on ``steps`` of fresh real play, as spec.json holds them."""
    from wmsim.bundle_eval import FIDELITY_SEED, evaluate_bundle, json_ready

    metrics = evaluate_bundle(bundle, steps=steps, seed=FIDELITY_SEED)
    return {"seed": FIDELITY_SEED, **json_ready(metrics)}


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def export_run(args: ExportArgs) -> Bundle:
    """Export the run's checkpoint as a bundle at ``args.out`` (checked if ``args.check``)."""
    if args.out.suffix != ".wmsim":
        raise UserError(f"--out must name a NAME.wmsim directory, got {args.out.name!r}")
    if not 1 <= args.contexts <= MAX_START_CONTEXTS or args.fidelity_steps < 0:
        raise UserError(
            f"--contexts must be 1 to {MAX_START_CONTEXTS} and --fidelity-steps 0 or more"
        )
    model, saved = load_run(args.run, torch.device("cpu"))
    config = saved["config"]
    train: TrainConfig = from_dict(config["train"])
    if checkpoint_kind(saved) == "env":
        raise UserError(
            f"{args.run} is an agent trained in a dream env (`wmsim agent train --env`): it holds "
            "a policy and no world model; export a run of `wmsim train` or `wmsim agent train "
            "--game`"
        )
    # a `wmsim train` run names its replay; an agent run keeps its own beside its checkpoint
    replay = Replay(args.data or Path(config.get("data") or args.run / AGENT_REPLAY))
    if replay.env["game"] != config["game"]:
        raise UserError(
            f"{args.run} models {config['game']}, but {replay.directory} holds {replay.env['game']}"
        )
    contexts = start_contexts(replay, train.context, args.contexts, args.starts)
    bundle = write_bundle(
        args.out, model, contexts,
        game=config["game"], actions=list(saved["action_meanings"]), env=replay.env,
        config=config, weights=args.weights,
        training=_training_summary(args.run, saved, replay) | {"starts": args.starts},
        check=args.check, fidelity_steps=args.fidelity_steps,
    )  # fmt: skip
    return bundle
