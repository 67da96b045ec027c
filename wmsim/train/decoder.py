"""A new decoder for a bundle's world model: ``wmsim bundle decoder``.

Decoding is most of a pixel dream's cost on a CPU, and its work grows with the
decoder's width, ``decoder_depth`` (``docs/speed.md``). This trains a decoder of
another width for a bundle's model with every other weight frozen:

- the torch model is rebuilt from the bundle's own graphs (:func:`model_from_bundle`:
  the exported weights keep their torch names);
- its encoder turns real frames into latents as in training, one sampled per frame,
  and only the new decoder learns, on the loss the bundle's config names (moving
  pixels weighted);
- the new bundle (:func:`export_decoder`) holds the same observe and step graphs'
  weights, so a seed dreams the same latents, rewards and ends; only the frames differ.

The run directory is ``wmsim train``'s: ``config.json``, ``checkpoint.pt`` (atomic,
``--resume`` continues exactly), ``metrics.jsonl``, with ``wmsim train``'s held-out
evaluation (recon and 1, 4, 16 dreamed steps) every ``eval_every`` steps.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from wmsim.bundle import CONFIG, GRAPHS, Bundle, open_bundle
from wmsim.configs import from_dict, to_dict
from wmsim.devices import autocast_dtype
from wmsim.errors import UserError
from wmsim.model import make_world_model
from wmsim.model.distributions import sample_one_hot
from wmsim.model.pixels import reconstruction_loss
from wmsim.model.world_model import LatentWorldModel, LatentWorldModelConfig
from wmsim.replay import Replay
from wmsim.run_dir import RunDirectory
from wmsim.train.config import TrainConfig
from wmsim.train.evaluate import evaluate
from wmsim.train.logs import read_metrics
from wmsim.train.loop import run_steps
from wmsim.train.optim import OPTIMIZERS, warm_up
from wmsim.train.windows import Windows

KIND = "decoder"
"""The checkpoint kind of these runs (``checkpoint.KINDS``)."""
UNSAVED = ("num_batches_tracked",)
"""Buffers a graph does not hold (BatchNorm's step count: unused in eval mode)."""


@dataclass(frozen=True)
class DecoderArgs:
    """Train a decoder of another width for a bundle's model, everything else frozen."""

    bundle: Path
    """The bundle whose model gets the new decoder (a STORM, DRAMA or S5 model)."""
    data: Path
    """Replay directory of real frames (`wmsim collect`), resized as the bundle's were."""
    run: Path
    """Run directory: config, checkpoint, metrics."""
    depth: int
    """The new decoder's width (its `decoder_depth`: channels of its last hidden layer)."""
    out: Path | None = None
    """Write the model with the new decoder as this NAME.wmsim bundle when training ends."""
    steps: int = 20_000
    """Gradient steps the run should reach; with --resume, at least those done (as many: write
    --out from the checkpoint, as an interrupted run stands)."""
    resume: bool = False
    """Continue the run in --run from its checkpoint."""
    seed: int = 0
    """Seeds the decoder, the window sampling and the latent samples."""
    eval_every: int | None = None
    """Steps between held-out evaluations (default: the bundle's training config's)."""
    checkpoint_every: int | None = None
    """Steps between checkpoints (default: the bundle's training config's)."""
    log_every: int | None = None
    """Steps between logged training metrics (default: the bundle's training config's)."""
    lr_decay: int = 0
    """Lower the learning rate linearly to 0 over the run's last this many steps (0: the bundle's
    constant rate). A resumed run may change it, to end a run that went on at a constant rate."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Arithmetic of the training step: bf16 autocast, fp32, or auto (bf16 where native)."""
    fidelity_steps: int = 10_000
    """Real steps the written bundle is measured on (its spec's fidelity table); 0: none."""


def bundle_config(bundle: Bundle) -> dict[str, Any]:
    """The bundle's ``config.json``: the run's resolved config, as ``wmsim train`` saved it.

    Raises:
        UserError: it is not a training config of a latent world model (a bundle is untrusted).
    """
    try:
        config = json.loads((bundle.path / CONFIG).read_text())
        train = from_dict(config["train"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise UserError(f"{bundle.path}/{CONFIG} is not a training config ({error})") from error
    if not isinstance(train, TrainConfig) or not isinstance(bundle.spec.get("env"), dict):
        raise UserError(f"{bundle.path} holds no training config and env; export it again")
    if not isinstance(train.model, LatentWorldModelConfig):
        raise UserError(
            f"{bundle.path} holds a {type(train.model).__name__.removesuffix('Config')} model; "
            "a new decoder is trained for STORM, DRAMA and S5 models (their decoder takes the "
            "latent alone)"
        )
    return config


def graph_weights(bundle: Bundle) -> dict[str, torch.Tensor]:
    """The model's weights held in the bundle's graphs, by their torch names.

    The graphs are exported with their weights unfolded and named after the module's
    parameters (``model.encoder.net.0.weight``; ``.float16`` where stored as such).
    """
    import onnx
    from onnx import numpy_helper

    weights: dict[str, torch.Tensor] = {}
    for graph in GRAPHS:
        try:
            for tensor in onnx.load_from_string(bundle.read_graph(graph)).graph.initializer:
                name = tensor.name.removesuffix(".float16")
                if name.startswith("model."):
                    array = numpy_helper.to_array(tensor)
                    array = array.astype(np.float32) if array.dtype == np.float16 else array
                    weights[name.removeprefix("model.")] = torch.from_numpy(array.copy())
        except UserError:
            raise
        except Exception as error:  # onnx and numpy raise many kinds for a damaged graph
            raise UserError(
                f"{bundle.graph(graph)}'s weights cannot be read ({str(error)[:200]})"
            ) from error
    return weights


def model_from_bundle(bundle: Bundle, decoder_depth: int | None = None) -> LatentWorldModel:
    """The bundle's world model in torch, in eval mode, with a new decoder if ``decoder_depth``.

    With ``decoder_depth`` the decoder is freshly initialized at that width and the
    rest is the bundle's; without it, the bundle's own decoder is loaded too.

    Raises:
        UserError: the bundle's model is not a latent world model, or its graphs lack weights.
    """
    config: TrainConfig = from_dict(bundle_config(bundle)["train"])
    model_config = config.model
    if decoder_depth is not None:
        model_config = dataclasses.replace(model_config, decoder_depth=decoder_depth)
    try:
        model = make_world_model(model_config, len(bundle.actions))
    except (TypeError, ValueError, KeyError) as error:
        raise UserError(
            f"{bundle.path}/{CONFIG} names no model wmsim can build ({error})"
        ) from error
    form = model.export_form() if decoder_depth is None else model
    weights = graph_weights(bundle)
    wanted = {
        k: v for k, v in form.state_dict().items()
        if not k.endswith(UNSAVED) and (decoder_depth is None or not k.startswith("decoder."))
    }  # fmt: skip
    missing = [k for k in wanted if k not in weights or weights[k].shape != wanted[k].shape]
    if missing:
        folded = bundle.spec.get("weights") == "float32"  # exported optimized: BatchNorm folded
        raise UserError(
            f"{bundle.path}'s graphs lack {len(missing)} of its model's weights (first: "
            f"{missing[0]}); "
            + ("a --weights float32 export folds them together; export the run with --weights "
               "float16" if folded else "export the run again with this wmsim (`wmsim export`)")
        )  # fmt: skip
    form.load_state_dict({k: weights[k] for k in wanted}, strict=False)
    if decoder_depth is None:  # the export form's one-hot rows are the decoder's first weights
        model.load_state_dict(_plain_decoder(form.state_dict()), strict=False)
    return model.eval()


def _plain_decoder(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An export form's state dict as the model's: its one-hot first layer's rows transposed."""
    rows = state.pop("decoder.net.0.rows")
    state.pop("decoder.net.0.offsets", None)
    return state | {"decoder.net.0.weight": rows.t().contiguous()}


def decoder_loss(
    model: LatentWorldModel, batch: dict[str, torch.Tensor], generator: torch.Generator
) -> torch.Tensor:
    """The reconstruction loss of ``model``'s decoder on windows (B, T, ...), the encoder frozen.

    The latents are drawn from the frozen encoder's posterior as in training
    (:meth:`LatentWorldModel.loss`), and the error weighted as its config says.
    """
    c, obs = model.config, batch["obs"]
    with torch.no_grad():
        post = model.encode(obs)  # (B, T, S, K)
        noise = torch.rand(post.shape, generator=generator, device=post.device, dtype=post.dtype)
        z = sample_one_hot(post, noise).flatten(-2).flatten(0, 1)  # (B * T, S * K)
    recon = model.decoder(z)
    return c.recon_scale * reconstruction_loss(
        recon, obs, batch["is_first"], motion_weight=c.motion_weight, threshold=c.motion_threshold
    )


class DecoderTrainer:
    """A decoder run's state: the model (all frozen but the decoder), optimizer, randomness."""

    def __init__(self, args: DecoderArgs):
        if args.depth < 1 or args.steps < 1 or args.lr_decay < 0:
            raise UserError(
                f"--depth and --steps must be positive and --lr-decay 0 or more, got "
                f"{args.depth}, {args.steps} and {args.lr_decay}"
            )
        self.bundle = open_bundle(args.bundle)
        self.replay = Replay(args.data)
        saved = bundle_config(self.bundle)  # checked first: the model kind, then the data
        env = self.bundle.spec["env"] | {"game": self.bundle.game}
        for key in ("game", "resize", "size"):  # frames as the bundle's model saw them
            default = "area" if key == "resize" else None  # replays from before --resize: area
            data, model = self.replay.env.get(key, default), env.get(key, default)
            if data != model:
                raise UserError(
                    f"{args.data} holds frames of {key} {data!r}, but {args.bundle} models "
                    f"{key} {model!r}; collect them with `wmsim collect` as the bundle's were "
                    "(its spec.json's env)"
                )
        schedule = {
            name: getattr(args, name)
            for name in ("eval_every", "checkpoint_every", "log_every")
            if getattr(args, name) is not None
        }
        train: TrainConfig = dataclasses.replace(from_dict(saved["train"]), **schedule)
        train = dataclasses.replace(
            train, model=dataclasses.replace(train.model, decoder_depth=args.depth)
        )
        self.config, self.seed = train, args.seed
        self.steps, self.lr_decay = args.steps, args.lr_decay
        self.resolved = {
            "preset": saved.get("preset"),
            "game": self.bundle.game,
            "data": str(args.data),
            "seed": args.seed,
            "bundle": str(args.bundle),
            "bundle_files": dict(self.bundle.spec["files"]),
            "train": to_dict(train),
        }
        torch.manual_seed(args.seed)
        self.model = model_from_bundle(self.bundle, args.depth)
        for name, parameter in self.model.named_parameters():
            parameter.requires_grad_(name.startswith("decoder."))
        self.model.decoder.train()
        c = train
        self.optimizer = OPTIMIZERS[c.optimizer](
            [{"params": list(self.model.decoder.parameters())}],
            lr=c.lr, eps=c.eps, weight_decay=c.weight_decay,
        )  # fmt: skip
        self.windows = Windows(self.replay, c, torch.device("cpu"), args.seed, args.data)
        self.autocast = autocast_dtype(args.precision, torch.device("cpu"))
        self.step = 0

    def train_step(self) -> dict[str, float]:
        """One gradient step of the decoder on a sampled batch; returns its metrics."""
        c = self.config
        batch = self.windows.batch(c.batch, c.event_share)
        lr = warm_up(self.optimizer, c.lr, c.warmup, self.step)  # the bundle's warm-up, if any
        if self.lr_decay:
            lr *= min(1.0, (self.steps - self.step) / self.lr_decay)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        with torch.autocast("cpu", dtype=self.autocast, enabled=self.autocast is not None):
            loss = decoder_loss(self.model, batch, self.windows.noise)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.decoder.parameters(), c.grad_clip)
        self.optimizer.step()
        self.step += 1
        return {"recon": float(loss.detach()), "grad_norm": float(norm), "lr": lr}

    def evaluate(self) -> dict[str, float]:
        """``wmsim train``'s open-loop metrics on the held-out windows (decoder in eval mode)."""
        if len(self.windows.held_out["obs"]) == 0:
            return {}
        metrics = evaluate(
            self.model, self.windows.held_out, self.config.context,
            life_loss_ends=self.config.model.life_loss_ends,
        )  # fmt: skip
        self.model.decoder.train()  # evaluate() restores the model's mode, which is eval
        return metrics

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds: the decoder, its optimizer and every random stream."""
        return {
            "step": self.step,
            "config": self.resolved,
            "action_meanings": self.bundle.actions,
            "decoder": self.model.decoder.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **self.windows.streams(),
            "rng_torch": torch.get_rng_state(),
        }

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue from a checkpoint's state."""
        self.model.decoder.load_state_dict(saved["decoder"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.step = saved["step"]
        self.windows.restore(saved)
        torch.set_rng_state(saved["rng_torch"])


def train_decoder(args: DecoderArgs, *, progress: bool = True) -> tuple[int, dict[str, float]]:
    """Train the run in ``args.run`` to ``args.steps``, then write ``args.out`` if given.

    Returns the step reached and the last held-out evaluation.

    Raises:
        UserError: bad bundle, data or run directory (see the messages).
        KeyboardInterrupt: on Ctrl-C or SIGTERM, after a checkpoint at the step reached.
    """
    if args.out is not None and args.out.suffix != ".wmsim":
        raise UserError(f"--out must name a NAME.wmsim directory, got {args.out.name!r}")
    if args.out is not None and args.out.resolve() == Path(args.bundle).resolve():
        raise UserError("--out names the --bundle itself; write the new model elsewhere")
    if args.fidelity_steps < 0:
        raise UserError(f"--fidelity-steps must be 0 or more, got {args.fidelity_steps}")
    run_dir = RunDirectory(args.run, KIND, resume=args.resume)
    trainer = DecoderTrainer(args)
    keys = ("game", "seed", "bundle_files", "train")
    saved = run_dir.open(trainer.resolved, keys, torch.device("cpu"))
    if saved is None:  # a new run: the model rebuilt from the graphs must be what they compute
        check_rebuilt(trainer.bundle)
    else:
        trainer.restore(saved)
    if trainer.step > args.steps:
        raise UserError(f"{args.run} is at step {trainer.step}; --steps must be at least that")
    last_eval = run_steps(
        run_dir, trainer, args.steps, lambda interrupted: (trainer.train_step(), interrupted()),
        "recon", progress=progress,
    )  # fmt: skip
    if not last_eval and (evaluations := read_metrics(args.run, "eval")):
        last_eval = {k: v for k, v in evaluations[-1].items() if k not in ("step", "kind")}
    if args.out is not None:
        export_decoder(trainer, args.out, fidelity_steps=args.fidelity_steps, evaluation=last_eval)
    return trainer.step, last_eval


def check_rebuilt(bundle: Bundle) -> None:
    """Refuse a bundle whose graphs compute other than its config's model with their weights.

    A config.json that does not describe its graphs (edited, or from another version) would
    train a decoder for another model and re-export other observe and step graphs.
    """
    from wmsim.export.check import compare_with_torch

    problems = compare_with_torch(bundle, model_from_bundle(bundle), steps=2, batch=3)
    if problems:
        raise UserError(
            f"{bundle.path}'s graphs are not its config.json's model with their weights "
            f"({problems[0]}); export the run again with this wmsim"
        )


def export_decoder(
    trainer: DecoderTrainer, out: Path, *, fidelity_steps: int, evaluation: dict[str, float]
) -> Bundle:
    """The bundle's model with the trained decoder, written (and checked) as a bundle at ``out``.

    Everything but the decode graph comes from the bundle: its start contexts, env,
    weights' storage and training summary, with a ``decoder`` entry added to it.
    """
    from wmsim.bundle_eval import json_ready
    from wmsim.export.writer import write_bundle

    bundle, model = trainer.bundle, trainer.model.eval()
    config = bundle_config(bundle) | {"train": trainer.resolved["train"]}
    source = bundle.spec.get("training")
    source = dict(source) if isinstance(source, dict) else {}
    training = {k: v for k, v in source.items() if k != "held_out"} | {
        "decoder": {
            "depth": trainer.config.model.decoder_depth,
            "steps": trainer.step,
            "seed": trainer.seed,
            "lr_decay": trainer.lr_decay,
            "data": trainer.resolved["data"],
            "from": trainer.resolved["bundle"],
            "held_out": json_ready(evaluation),
            "source_held_out": source.get("held_out", {}),  # measured with the old decoder
        }
    }
    return write_bundle(
        out, model, bundle.start_contexts(),
        game=bundle.game, actions=bundle.actions, env=bundle.spec["env"], config=config,
        training=training, weights=bundle.spec.get("weights", "float32"), check=True,
        fidelity_steps=fidelity_steps,
    )  # fmt: skip
