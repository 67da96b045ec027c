"""The ``wmsim`` command line: one thin entry per command; the work lives in importable functions.

Every error caused by the user's input (:class:`~wmsim.errors.UserError`) is
printed as one line naming the problem and the fix, with a non-zero exit status
and no traceback.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from wmsim.errors import UserError, missing_extra

USAGE = """usage: wmsim COMMAND [OPTIONS]

commands:
  collect         play the real game and store the steps in a replay directory
  data info       summarise a replay directory: steps, episodes, returns, actions
  train           train a world model on a replay directory
  dream           write the real game and a model's dream of it side by side (GIF, MP4)
  export          write a trained run as a model bundle (ONNX graphs, spec, start contexts)
  serve           serve a model bundle's dreams over gRPC to any number of clients
  play            play a model's dream in the browser, alone or beside the real game
  agent train     train the reference agent: the full loop on a real game, or in any gymnasium env
  eval            play an agent (or the random policy) on the real game: scores, HNS, video, JSON
  results         aggregate evaluation records: mean, median and IQM HNS beside the papers'
  bundle check    validate a model bundle: files, hashes, graph signatures, format version
  bundle eval     measure a bundle's fidelity on fresh real play: the ball, rewards, ends
  bundle decoder  train a narrower (cheaper) or wider decoder for a bundle's model
  models list     list the model bundles dream envs can load by name
  models add      copy a bundle into the user's model store
  bench NAME      run a benchmark from benchmarks/

Run `wmsim COMMAND --help` for a command's options.
"""


def _parse_positional(cls: type, prog: str, argv: list[str]):
    """Parse ``argv`` into ``cls`` with its required fields as positional arguments."""
    import tyro

    return tyro.cli(cls, prog=prog, args=argv, config=(tyro.conf.PositionalRequiredArgs,))


def _collect(argv: list[str]) -> int:
    import tyro

    from wmsim.collect.rollout import CollectConfig, collect
    from wmsim.replay import Replay

    config = tyro.cli(CollectConfig, prog="wmsim collect", args=argv)
    try:
        result = collect(config)
    except KeyboardInterrupt:
        steps = Replay(config.out).num_steps if config.out.is_dir() else 0
        print(
            f"wmsim: interrupted; {config.out} holds {steps} steps, "
            "run the same command again to continue",
            file=sys.stderr,
        )
        return 130
    if result.added == 0:
        print(f"{config.out} already holds {result.total} steps; nothing to collect")
    else:
        rate = result.added / max(result.seconds, 1e-9)
        print(
            f"collected {result.added} steps ({result.episodes} episodes ended) "
            f"in {result.seconds:.1f} s, {rate:.0f} steps/s; {config.out} holds {result.total}"
        )
    return 0


@dataclass(frozen=True)
class DataInfoConfig:
    """Summarise a replay directory."""

    path: Path
    """The replay directory."""
    json: bool = False
    """Print the summary as JSON."""


def _spread(values: list[float], mean_format: str, unit: str = "") -> str:
    if not values:
        return "none yet"
    mean = sum(values) / len(values)
    return f"mean {mean:{mean_format}}  min {min(values):.0f}  max {max(values):.0f}{unit}"


def _data_info(argv: list[str]) -> int:

    from wmsim.replay import Replay
    from wmsim.replay.summary import summarize

    config = _parse_positional(DataInfoConfig, "wmsim data info", argv)
    replay = Replay(config.path)
    summary = summarize(replay)
    if config.json:
        print(json.dumps({"path": str(config.path), "env": replay.env, **asdict(summary)}))
        return 0
    env = replay.env
    noops = f"1-{env['noop_max']} no-ops" if env["noop_max"] else "no no-ops"
    taken = max(sum(summary.action_counts.values()), 1)
    actions = "  ".join(
        f"{name} {count} ({100 * count / taken:.1f}%)"
        for name, count in summary.action_counts.items()
    )
    print(
        f"replay    {config.path}\n"
        f"game      {env['game']}: {env['size']}x{env['size']} RGB ({env.get('resize', 'area')}"
        f" resize), frame skip {env['frame_skip']}"
        f" (max of last 2), sticky actions p={env['sticky_action_prob']}, {noops},"
        f" cap {env['max_frames']} frames\n"
        f"steps     {summary.steps} in {summary.chunks} chunks, {summary.streams} streams\n"
        f"episodes  {len(summary.returns)} complete ({summary.terminal} game over,"
        f" {len(summary.returns) - summary.terminal} truncated), {summary.unfinished} unfinished\n"
        f"returns   {_spread(summary.returns, '.2f')}  (complete episodes)\n"
        f"lengths   {_spread(summary.lengths, '.1f', ' steps')}\n"
        f"lives     {summary.life_losses} lost\n"
        f"actions   {actions}"
    )
    return 0


def _interrupted(out: Path) -> int:
    print(
        f"wmsim: interrupted; checkpoint saved in {out}, "
        "add --resume to the same command to continue",
        file=sys.stderr,
    )
    return 130


def _train(argv: list[str]) -> int:
    import tyro

    from wmsim.train.distributed import ranks_from_env
    from wmsim.train.loop import TrainArgs, train, with_defaults

    args = tyro.cli(TrainArgs, prog="wmsim train", args=argv)
    if args.nproc < 1:
        raise UserError("--nproc must be at least 1")
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _train_ranks(argv, args.nproc)
    main = ranks_from_env().main  # the other ranks of a distributed run keep quiet
    try:
        metrics = train(args)
    except KeyboardInterrupt:
        return _interrupted(args.out) if main else 130
    if not main:
        return 0
    args = with_defaults(args)[0]
    shown = [f"h{h}_{kind}" for h in (1, 4, 16) for kind in ("mse", "copy_mse")]
    shown += [f"{name}_object_recall" for name in ("recon", "h1", "h4")]
    summary = ", ".join(f"{k} {metrics[k]:.5f}" for k in shown if k in metrics)
    print(f"trained {args.out} to step {args.steps}" + (f"; held-out {summary}" if summary else ""))
    return 0


def _train_ranks(argv: list[str], nproc: int) -> int:
    """``wmsim train --nproc N``: the same command without it, as N ranks under torchrun.

    Ctrl-C reaches every process of the terminal, and SIGTERM is passed on to
    torchrun, which passes it to the ranks: they finish the step, rank 0 saves.
    """
    rest = [a for i, a in enumerate(argv) if not a.startswith("--nproc") and
            not (i and argv[i - 1] == "--nproc")]  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "wmsim", "train", *rest]  # fmt: skip
    process = subprocess.Popen(command)
    stopped = []

    def forward(signum, frame) -> None:
        stopped.append(signum)
        process.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                code = process.wait()
                break
            except KeyboardInterrupt:
                stopped.append(signal.SIGINT)  # the ranks got it too; wait for their checkpoint
    finally:
        signal.signal(signal.SIGTERM, previous)
    # torchrun reports ranks that stopped on an interrupt as failed; the command says interrupted
    return 130 if stopped and code != 0 else code


def _dream(argv: list[str]) -> int:
    import tyro

    from wmsim.dream import DreamArgs, dream

    args = tyro.cli(DreamArgs, prog="wmsim dream", args=argv)
    print(f"wrote {dream(args)}")
    return 0


def _export(argv: list[str]) -> int:
    import tyro

    from wmsim.export.writer import ExportArgs, export_run

    args = tyro.cli(ExportArgs, prog="wmsim export", args=argv)
    bundle = export_run(args)
    size = sum(p.stat().st_size for p in bundle.path.iterdir()) / 2**20
    checked = "; onnxruntime matches torch" if args.check else ""
    print(f"wrote {bundle.path} ({bundle.game}, {size:.1f} MiB){checked}")
    if "fidelity" in bundle.spec:
        from wmsim.bundle_eval import table

        fidelity = bundle.spec["fidelity"]
        print(f"fidelity on {fidelity['real_steps']} steps of fresh real play (in spec.json):")
        print(table({k: float("nan") if v is None else v for k, v in fidelity.items()}))
    return 0


def _serve(argv: list[str]) -> int:
    import tyro

    try:
        from wmsim_server.serve import ServeArgs, serve
    except ImportError as error:
        raise UserError(
            f"serving needs {error.name}: pip install 'wmsim[cpu]' (or [gpu])"
        ) from None
    # the command owns its process, so it tunes malloc unless told not to (a library call doesn't)
    default = ServeArgs(tune_malloc=True)
    return serve(tyro.cli(ServeArgs, prog="wmsim serve", args=argv, default=default))


def _play(argv: list[str]) -> int:
    import tyro

    try:
        from wmsim.play.app import PlayArgs, play
    except ImportError as error:
        if (error.name or "").partition(".")[0] != "aiohttp":
            raise
        raise UserError('`wmsim play` needs aiohttp: pip install -e ".[play]"') from None
    return play(tyro.cli(PlayArgs, prog="wmsim play", args=argv))


@dataclass(frozen=True)
class BundleCheckArgs:
    """Validate a model bundle."""

    path: Path
    """The NAME.wmsim directory."""


def _agent_train(argv: list[str]) -> int:
    import tyro

    from wmsim.agent.commands import AgentTrainArgs, agent_train

    args = tyro.cli(AgentTrainArgs, prog="wmsim agent train", args=argv)
    try:
        metrics = agent_train(args)
    except KeyboardInterrupt:
        return _interrupted(args.out)
    print(
        f"trained {args.out} to {args.env_steps} env steps" + _training_eval_line(metrics, args.out)
    )
    return 0


def _training_eval_line(metrics: dict[str, float], out: Path) -> str:
    """The last periodic evaluation, with its standard error: a few episodes say little."""
    if not metrics:
        return ""
    rest = ", ".join(
        f"{k} {v:.3g}" for k, v in metrics.items() if k not in ("score", "score_se", "episodes")
    )
    return (
        f"; real game over {int(metrics['episodes'])} episodes: score {metrics['score']:.3g}"
        f" ± {metrics['score_se']:.2g} (standard error), {rest}."
        f" For a figure to report: wmsim eval --agent {out} --episodes 100"
    )


def _eval(argv: list[str]) -> int:
    import tyro

    from wmsim.agent.commands import EvalArgs, evaluate_command

    args = tyro.cli(EvalArgs, prog="wmsim eval", args=argv)
    record, path = evaluate_command(args)
    hns = f", HNS {record['hns']:.3f}" if record["hns"] is not None else ""
    print(
        f"{record['game']}: mean score {record['mean']:.2f} +- {record['std']:.2f} over "
        f"{record['episodes']} episodes{hns}; wrote {path}"
        + (f" and {record['video']}" if "video" in record else "")
    )
    return 0


def _results(argv: list[str]) -> int:
    from wmsim.agent.results import ResultsArgs, results

    print(results(_parse_positional(ResultsArgs, "wmsim results", argv)))
    return 0


def _bundle_check(argv: list[str]) -> int:

    from wmsim.bundle import open_bundle

    args = _parse_positional(BundleCheckArgs, "wmsim bundle check", argv)
    bundle = open_bundle(args.path)
    try:
        from wmsim.runtime.graphs import Graphs
    except ImportError:
        raise UserError(
            "checking the graphs needs onnxruntime: pip install wmsim[cpu] (or wmsim[gpu])"
        ) from None
    Graphs(bundle, device="cpu")
    spec = bundle.spec
    print(
        f"{bundle.path}: ok, format {spec['format']}, {bundle.game}, "
        f"{spec['model']['type']} ({spec['model']['parameters']:,} parameters), "
        f"{len(bundle.start_contexts()['frames'])} start contexts of {bundle.context} frames"
    )
    return 0


def _bundle_decoder(argv: list[str]) -> int:
    import tyro

    from wmsim.train.decoder import DecoderArgs, train_decoder

    args = tyro.cli(DecoderArgs, prog="wmsim bundle decoder", args=argv)
    try:
        step, metrics = train_decoder(args)
    except KeyboardInterrupt:
        return _interrupted(args.run)
    shown = [
        f"{name}_{kind}" for name in ("recon", "h1", "h4") for kind in ("mse", "object_recall")
    ]
    summary = ", ".join(f"{k} {metrics[k]:.5f}" for k in shown if metrics.get(k) is not None)
    print(
        f"trained {args.run} to step {step}"
        + (f"; held-out {summary}" if summary else "")
        + (f"; wrote {args.out}" if args.out else "")
    )
    return 0


def _bundle_eval(argv: list[str]) -> int:
    from wmsim.bundle import open_bundle
    from wmsim.bundle_eval import (
        BundleEvalArgs,
        evaluate_bundle,
        json_ready,
        life_loss_ends,
        table,
    )
    from wmsim.contingency import policy_lines, policy_table
    from wmsim.files import atomic_write_json

    args = _parse_positional(BundleEvalArgs, "wmsim bundle eval", argv)
    if args.branches < 1 or args.horizon < 1:
        raise UserError(
            f"--branches and --horizon must be positive, got {args.branches} and {args.horizon}"
        )
    from wmsim.runtime.graphs import check_decoder_option

    check_decoder_option(args.decoder)
    bundle = open_bundle(args.path)
    metrics = evaluate_bundle(
        bundle, steps=args.steps, seed=args.seed, stride=args.stride, sampled=args.sampled,
        decoder=args.decoder,
    )  # fmt: skip
    kind = "sampled" if args.sampled else "most likely"
    print(
        f"{bundle.path}: {bundle.game}, {metrics['windows']} dreams ({kind} latents) from "
        f"{args.steps} real steps (seed {args.seed}); object recall beside copying the last frame"
    )
    print(table(metrics))
    if args.policies:
        lives = life_loss_ends(bundle)
        rates = policy_table(
            bundle, lives=lives, branches=args.branches, horizon=args.horizon, seed=args.seed,
            sampled=args.sampled,
        )  # fmt: skip
        print(policy_lines(rates, lives))
        metrics |= {f"policy_{k}": v for k, v in rates.items()}
    if args.json is not None:
        atomic_write_json(args.json, json_ready(metrics))
        print(f"wrote {args.json}")
    return 0


def _models_list(argv: list[str]) -> int:
    from wmsim.bundle import read_spec
    from wmsim.store import list_models, store

    if argv:
        raise UserError(f"`wmsim models list` takes no arguments, got {' '.join(argv)}")
    found = list_models()
    for where, path in found:
        try:
            spec = read_spec(path)
            steps = spec.get("training", {}).get("steps", "?")
            about = f"{spec['game']:12s} {spec['model']['type']} ({steps} steps)"
        except (UserError, AttributeError, KeyError, TypeError) as error:
            problem = str(error).removeprefix(f"{path} is not a usable model bundle: ")[:160]
            about = f"(unusable: {problem}; `wmsim bundle check` says more)"
        print(f"{path.stem:24s} {where:9s} {about}  {path}")
    if not any(where == "store" for where, _ in found):
        print(f"(the store, {store()}, is empty; `wmsim models add BUNDLE` fills it)")
    return 0


@dataclass(frozen=True)
class ModelsAddArgs:
    """Copy a bundle into the user's model store, under a name dream envs can load."""

    path: Path
    """The NAME.wmsim directory."""
    name: str | None = None
    """Name in the store (default: the bundle's game, which makes it that game's default)."""
    force: bool = False
    """Replace a stored model of that name."""


def _models_add(argv: list[str]) -> int:

    from wmsim.bundle import open_bundle
    from wmsim.store import add_model

    args = _parse_positional(ModelsAddArgs, "wmsim models add", argv)
    bundle = open_bundle(args.path)
    name = bundle.game if args.name is None else args.name
    target = add_model(bundle.path, name, force=args.force)
    if target.stem == bundle.game:
        how = f"gymnasium.make('wmsim/{bundle.game}-dream-v0') loads it unless WMSIM_MODEL is set"
    else:
        how = f"load it with model={target.stem!r}"
    print(f"added {target}; {how}")
    return 0


def _bench(argv: list[str]) -> int:
    folder = Path(__file__).resolve().parent.parent / "benchmarks"
    names = sorted(p.stem for p in folder.glob("*.py")) if folder.is_dir() else []
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: wmsim bench NAME [OPTIONS]\n\nbenchmarks: {', '.join(names) or 'none'}")
        return 0
    if not names:
        raise UserError(
            "benchmarks ship with the source checkout, not the installed package; "
            "clone the repository and `pip install -e .` it"
        )
    if argv[0] not in names:
        raise UserError(f"unknown benchmark {argv[0]!r}; choose one of: {', '.join(names)}")
    return subprocess.call([sys.executable, str(folder / f"{argv[0]}.py"), *argv[1:]])


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "collect": _collect,
    "data info": _data_info,
    "train": _train,
    "dream": _dream,
    "export": _export,
    "serve": _serve,
    "play": _play,
    "agent train": _agent_train,
    "eval": _eval,
    "results": _results,
    "bundle check": _bundle_check,
    "bundle eval": _bundle_eval,
    "bundle decoder": _bundle_decoder,
    "models list": _models_list,
    "models add": _models_add,
    "bench": _bench,
}


DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.ENAMETOOLONG, errno.EROFS}
"""Errors of the disk, not of wmsim: a command that meets one ends with one line."""


def disk_error(error: OSError) -> str:
    """One line for a disk error: what could not be written, why, and the fix.

    What was written before it is safe: every file wmsim writes lands whole or not at all.
    """
    where = f" {error.filename}" if error.filename else ""
    if error.errno == errno.ENAMETOOLONG:
        return f"cannot use the path{where}: its name is too long; choose a shorter one"
    return (
        f"cannot write{where}: {error.strerror}; free some space or raise the limit, or write "
        "to another disk (--out), then run the command again (--resume where it has one)"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command named by the first words of ``argv``; return the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    for words in (2, 1):
        name = " ".join(argv[:words])
        if name in COMMANDS:
            try:
                return COMMANDS[name](argv[words:])
            except UserError as error:
                print(f"wmsim: error: {error}", file=sys.stderr)
                return 2
            except KeyboardInterrupt:
                print("wmsim: interrupted", file=sys.stderr)
                return 130
            except OSError as error:
                if error.errno not in DISK_ERRORS:
                    raise
                print(f"wmsim: error: {disk_error(error)}", file=sys.stderr)
                return 2
            except ImportError as error:
                if (message := missing_extra(error, f"wmsim {name}")) is None:
                    raise
                print(f"wmsim: error: {message}", file=sys.stderr)
                return 2
    groups = {name.split()[0] for name in COMMANDS if " " in name}
    asked = " ".join(argv[:2] if argv[0] in groups else argv[:1])
    known = ", ".join(COMMANDS)
    print(f"wmsim: error: unknown command {asked!r}; commands: {known}", file=sys.stderr)
    return 2
