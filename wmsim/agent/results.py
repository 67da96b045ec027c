"""Atari 100k results: evaluation records gathered, aggregated and set beside the papers.

``wmsim eval`` writes one ``eval.json`` per run (seed) of one game. A run's score
is the mean of its episode scores; a game's score is the mean over its runs.
Aggregates (mean, median, IQM of human-normalized scores) are those of
:func:`wmsim.scores.aggregate`, computed the way the papers compute theirs
(Agarwal et al., "Deep RL at the Edge of the Statistical Precipice", NeurIPS 2021, for the
IQM), so they are comparable only over all 26 games.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wmsim.errors import UserError
from wmsim.games import ATARI_100K
from wmsim.scores import aggregate, human_normalized_score

POLICIES = ("agent", "random")
BUDGET = 100_000  # agent steps of the Atari 100k protocol


@dataclass(frozen=True)
class ResultsArgs:
    """Aggregate evaluation records into Atari 100k scores beside the published ones."""

    paths: tuple[Path, ...]
    """Directories searched recursively for eval*.json files, or record files themselves."""
    json: bool = False
    """Print the summary as JSON instead of a table."""
    policy: str = "agent"
    """Which records to aggregate: those of the trained agent ("agent") or of "random"."""

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise UserError(f"unknown policy {self.policy!r}; use --policy agent or random")


@dataclass(frozen=True)
class Published:
    """A method's published Atari 100k results (5 seeds per game, all 26 games)."""

    mean: float
    """Mean HNS across games."""
    median: float
    """Median HNS across games."""
    iqm: float
    """Interquartile mean over all (seed, game) HNS values."""
    superhuman: int
    """Games with mean HNS at least 1."""
    scores: dict[str, float]
    """Raw score (mean over seeds) of a few games."""


PUBLISHED_GAMES = ("Breakout", "Pong", "MsPacman", "Boxing", "Freeway")
"""The games whose published raw scores :data:`PUBLISHED` carries."""

# Recomputed with the standard random/human table from the authors' per-seed files
# (REM's results/data/*.json, STORM's results/storm.json in the authors' repositories).
# STORM's paper reports a mean of 1.267; its own per-seed file gives 1.222.
_TABLE = {  # mean, median, IQM, games >= human, then the raw scores of PUBLISHED_GAMES
    "REM": (1.222, 0.280, 0.673, 12, 90.7, 18.0, 962.5, 87.5, 32.3),
    "STORM": (1.222, 0.425, 0.561, 9, 15.9, 11.3, 2673.5, 79.7, 0.0),
    "IRIS": (1.046, 0.289, 0.501, 10, 83.7, 14.6, 999.1, 70.1, 31.1),
    "DreamerV3 2023": (1.124, 0.485, 0.487, 9, 31.1, 18.4, 1326.9, 78.0, 0.0),
    "TWM": (0.956, 0.505, 0.459, 8, 20.0, 18.8, 1588.4, 77.5, 24.3),
    "SimPLe": (0.332, 0.134, 0.130, 1, 16.4, 12.8, 1480.0, 7.8, 16.7),
}
PUBLISHED: dict[str, Published] = {
    name: Published(*row[:4], scores=dict(zip(PUBLISHED_GAMES, row[4:], strict=True)))
    for name, row in _TABLE.items()
}
"""Method -> its published aggregates and a few per-game raw scores."""


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _field_problem(record: dict) -> str | None:
    """What is wrong with a record's fields, or None."""
    missing = [key for key in ("game", "policy", "scores") if key not in record]
    if missing:
        return f"the record has no {', '.join(missing)}"
    game, scores, steps = record["game"], record["scores"], record.get("env_steps")
    if game not in ATARI_100K:
        close = difflib.get_close_matches(str(game), ATARI_100K, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return (
            f"game {game!r}{hint} is not one of the 26 Atari 100k games, the only ones "
            f"with human-normalized scores: {', '.join(ATARI_100K)}"
        )
    if record["policy"] not in POLICIES:
        return f"policy {record['policy']!r} is neither agent nor random"
    if not isinstance(scores, list) or not scores or not all(map(_is_number, scores)):
        return "'scores' must be a non-empty list of finite numbers (one per episode)"
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 0):
        return f"'env_steps' must be a step count or null, not {steps!r}"
    return None


def _load(path: Path) -> dict:
    """Read and validate one evaluation record."""
    fix = "re-run `wmsim eval` to write it again, or leave the file out"
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg}, line {e.lineno}); {fix}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot be read ({e}); check its permissions") from None
    kind = record.get("kind") if isinstance(record, dict) else None
    if kind != "wmsim-eval":
        raise UserError(
            f"{path}: not a wmsim evaluation record (kind {kind!r}, expected 'wmsim-eval'); "
            "give run directories or the eval.json files `wmsim eval` writes"
        )
    if record.get("format") != 1:
        raise UserError(f"{path}: format {record.get('format')!r}, but this wmsim reads 1; {fix}")
    problem = _field_problem(record)
    if problem:
        raise UserError(f"{path}: {problem}; {fix}")
    return record


def _check_runs_counted_once(records: dict[Path, dict]) -> None:
    """Each trained run is one sample: two records of the same run would count it twice."""
    seen: dict[tuple, Path] = {}
    for file, record in records.items():
        if record["policy"] != "agent" or record.get("run") is None:
            continue
        key = (record["game"], str(record["run"]), str(record.get("seed")))  # any JSON value
        if key in seen:
            raise UserError(
                f"{seen[key]} and {file} both evaluate run {record['run']} (seed "
                f"{record.get('seed')}), which must count once; leave one of them out"
            )
        seen[key] = file


def find_records(paths: Iterable[Path]) -> list[dict]:
    """Load and validate every evaluation record under ``paths``, in path order.

    Directories are searched recursively for ``eval*.json``; files are read
    as records. A file reached twice is read once.

    Raises:
        UserError: a path does not exist, a record is malformed, two records
            evaluate the same trained run, or no record is found.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise UserError("no paths given; name run directories or eval.json files")
    files: dict[Path, Path] = {}  # resolved -> as found, so each file is read once
    for path in paths:
        if not path.exists():
            raise UserError(f"{path} does not exist; name run directories or eval.json files")
        found = sorted(path.rglob("eval*.json")) if path.is_dir() else [path]
        for file in found:
            if file.is_file():
                files.setdefault(file.resolve(), file)
    if not files:
        searched = ", ".join(str(p) for p in paths)
        raise UserError(
            f"no evaluation records (eval*.json) under {searched}; "
            "`wmsim eval` writes one into each run directory it evaluates"
        )
    records = {file: _load(file) for file in files.values()}
    _check_runs_counted_once(records)
    return list(records.values())


def summarize(records: Sequence[dict]) -> dict:
    """Per-game scores and the aggregate HNS of records that share one policy.

    Returns ``{"policy", "games": {game: {runs, mean, std, hns, run_scores, env_steps}},
    "aggregate": asdict(Aggregate)}``. ``mean`` and ``std`` are the raw score's mean
    and population standard deviation over runs (std is 0 for one run); ``hns``
    is the mean over runs of the human-normalized score.
    """
    policies = {r["policy"] for r in records}
    if len(policies) != 1:
        raise ValueError(f"summarize needs records of one policy, got {sorted(policies)}")
    run_scores: dict[str, list[float]] = {}
    steps: dict[str, set[int]] = {}
    for record in records:
        game = record["game"]
        run_scores.setdefault(game, []).append(float(np.mean(record["scores"])))
        if record.get("env_steps") is not None:
            steps.setdefault(game, set()).add(record["env_steps"])
    games = {}
    for game in sorted(run_scores):
        scores = run_scores[game]
        games[game] = {
            "runs": len(scores),
            "mean": float(np.mean(scores)),
            "std": float(np.std(scores)),
            "hns": float(np.mean([human_normalized_score(game, s) for s in scores])),
            "run_scores": scores,
            "env_steps": sorted(steps.get(game, ())),
        }
    overall = aggregate({game: run_scores[game] for game in games})
    return {"policy": policies.pop(), "games": games, "aggregate": asdict(overall)}


def _comparison(summary: dict) -> list[str]:
    """Our aggregate row beside the published ones, with the games both report."""
    shown = [g for g in summary["games"] if g in PUBLISHED_GAMES]
    ours = summary["aggregate"]
    header = f"{'method':<16}{'mean':>7}{'median':>8}{'IQM':>7}{'≥human':>8}"
    header += "".join(f"{g:>10}" for g in shown)
    rows = [(f"wmsim {summary['policy']}", ours, {g: summary["games"][g]["mean"] for g in shown})]
    rows += [(name, asdict(p), p.scores) for name, p in PUBLISHED.items()]
    lines = [header]
    for name, agg, raw in rows:
        line = f"{name:<16}{agg['mean']:>7.3f}{agg['median']:>8.3f}{agg['iqm']:>7.3f}"
        line += f"{agg['superhuman']:>8d}" + "".join(f"{raw[g]:>10.1f}" for g in shown)
        lines.append(line)
    return lines


def format_table(summary: dict) -> str:
    """Plain-text table: per-game rows, our aggregate, then the published methods."""
    games, agg = summary["games"], summary["aggregate"]
    lines = [f"{'game':<16}{'runs':>5}{'score (mean ± std)':>24}{'HNS':>9}"]
    for game, row in games.items():
        score = f"{row['mean']:.1f} ± {row['std']:.1f}"
        lines.append(f"{game:<16}{row['runs']:>5}{score:>24}{row['hns']:>9.3f}")
    lines.append(
        f"HNS over {agg['games']} games, {agg['runs']} runs ({summary['policy']} policy): "
        f"mean {agg['mean']:.3f}  median {agg['median']:.3f}  IQM {agg['iqm']:.3f}  "
        f"{agg['superhuman']} ≥ human"
    )
    if agg["games"] < len(ATARI_100K):
        lines.append(
            f"note: aggregates over {agg['games']} of {len(ATARI_100K)} games are not "
            f"comparable to the papers' {len(ATARI_100K)}-game figures"
        )
    off_budget = {g: r["env_steps"] for g, r in games.items() if set(r["env_steps"]) - {BUDGET}}
    if off_budget:
        listed = "; ".join(f"{g} {', '.join(map(str, s))}" for g, s in off_budget.items())
        lines.append(f"note: runs trained for other than {BUDGET:,} env steps ({listed})")
    lines += [
        "",
        "beside the published results (26 games, 5 seeds; recomputed from the per-seed "
        "files of REM, Cohen et al. 2024, and STORM, Zhang et al. 2023):",
    ]
    return "\n".join(lines + _comparison(summary))


def results(args: ResultsArgs) -> str:
    """What ``wmsim results`` prints: the table, or the summary as JSON."""
    records = find_records(args.paths)
    chosen = [r for r in records if r["policy"] == args.policy]
    if not chosen:
        others = sorted({r["policy"] for r in records})
        raise UserError(
            f"none of the {len(records)} evaluation records is of the {args.policy} policy "
            f"(they are {', '.join(others)}); pass --policy {others[0]}"
        )
    summary = summarize(chosen)
    return json.dumps(summary, indent=2) if args.json else format_table(summary)
