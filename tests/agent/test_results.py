import json
import re

import pytest
import tyro

from wmsim.agent.results import (
    PUBLISHED,
    PUBLISHED_GAMES,
    ResultsArgs,
    find_records,
    format_table,
    results,
    summarize,
)
from wmsim.errors import UserError
from wmsim.games import ATARI_100K
from wmsim.scores import RANDOM_SCORES


def record(game="Breakout", scores=(3.0,), policy="agent", run=None, **fields):
    return {
        "format": 1,
        "kind": "wmsim-eval",
        "game": game,
        "run": run,
        "policy": policy,
        "env_steps": 100_000 if policy == "agent" else None,
        "episodes": len(scores),
        "scores": list(scores),
        "lengths": [1000] * len(scores),
        "mean": -1.0,  # never trusted: the score is recomputed from "scores"
        "std": 0.0,
        "hns": 0.0,
        "seed": 0,
        "protocol": {},
        "machine": "test",
        **fields,
    }


def write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


@pytest.fixture
def runs(tmp_path):
    """Two Breakout runs and two Pong runs with known human-normalized scores."""
    root = tmp_path / "runs"
    # Breakout: random 1.7, human 30.5. Episodes 1.7 and 30.5 -> run score 16.1, HNS 0.5
    write(root / "breakout-0" / "eval.json", record("Breakout", [1.7, 30.5], run="b0"))
    write(root / "breakout-1" / "eval.json", record("Breakout", [30.5, 30.5], run="b1"))  # HNS 1
    # Pong: random -20.7, human 14.6. -20.7 -> HNS 0; 49.9 -> HNS 2
    write(root / "deep" / "er" / "pong-0" / "eval-final.json", record("Pong", [-20.7], run="p0"))
    write(root / "pong-1" / "eval.json", record("Pong", [49.9], run="p1"))
    write(root / "pong-1" / "config.json", {"not": "a record"})  # not eval*.json: never read
    return root


def test_aggregate_by_hand(runs):
    summary = summarize(find_records([runs]))
    breakout, pong = summary["games"]["Breakout"], summary["games"]["Pong"]
    assert breakout["runs"] == pong["runs"] == 2
    assert breakout["run_scores"] == pytest.approx([16.1, 30.5])
    assert breakout["mean"] == pytest.approx(23.3)
    assert breakout["std"] == pytest.approx(7.2)  # population std of 16.1 and 30.5
    assert breakout["hns"] == pytest.approx(0.75)
    assert pong["hns"] == pytest.approx(1.0)
    agg = summary["aggregate"]
    assert agg["mean"] == pytest.approx((0.75 + 1.0) / 2)
    assert agg["median"] == pytest.approx(0.875)
    # run values sorted: 0, 0.5, 1, 2; int(4 / 4) = 1 cut from each end -> mean of 0.5 and 1
    assert agg["iqm"] == pytest.approx(0.75)
    assert (agg["games"], agg["runs"], agg["superhuman"]) == (2, 4, 1)
    assert summary["policy"] == "agent"


def test_three_runs_nothing_trimmed(tmp_path):
    write(tmp_path / "a" / "eval.json", record("Breakout", [16.1], run="a"))  # HNS 0.5
    write(tmp_path / "b" / "eval.json", record("Breakout", [30.5], run="b"))  # HNS 1
    write(tmp_path / "c" / "eval.json", record("Pong", [-20.7], run="c"))  # HNS 0
    agg = summarize(find_records([tmp_path]))["aggregate"]
    assert agg["mean"] == pytest.approx(0.375)
    assert agg["median"] == pytest.approx(0.375)
    assert agg["iqm"] == pytest.approx(0.5)  # int(3 / 4) = 0 cut: mean of 0.5, 1, 0
    assert (agg["games"], agg["runs"], agg["superhuman"]) == (2, 3, 0)


def test_discovery_is_recursive_and_reads_each_file_once(runs):
    assert len(find_records([runs])) == 4
    direct = runs / "pong-1" / "eval.json"
    assert [r["run"] for r in find_records([direct])] == ["p1"]
    assert len(find_records([runs, direct, runs / "deep"])) == 4
    other = write(runs.parent / "any-name.json", record("Boxing", [12.1], run="x"))
    assert len(find_records([runs, other])) == 5  # files given directly need not match eval*


def test_random_policy_records_are_filtered(runs):
    write(runs / "breakout-0" / "eval-random.json", record("Breakout", [1.7], policy="random"))
    write(runs / "random-freeway" / "eval.json", record("Freeway", [0.0], policy="random"))
    ours = json.loads(results(ResultsArgs(paths=(runs,), json=True)))
    assert ours["aggregate"]["runs"] == 4
    assert set(ours["games"]) == {"Breakout", "Pong"}
    rand = json.loads(results(ResultsArgs(paths=(runs,), json=True, policy="random")))
    assert rand["policy"] == "random"
    assert rand["aggregate"] == pytest.approx(
        {"mean": 0.0, "median": 0.0, "iqm": 0.0, "games": 2, "runs": 2, "superhuman": 0}
    )


def test_no_records_of_the_policy_suggests_the_other(tmp_path):
    write(tmp_path / "eval.json", record("Breakout", [1.7], policy="random"))
    with pytest.raises(UserError, match="none of the 1 evaluation records .* --policy random"):
        results(ResultsArgs(paths=(tmp_path,)))


def test_unknown_policy_option():
    with pytest.raises(UserError, match="unknown policy 'greedy'; use --policy agent or random"):
        ResultsArgs(paths=(), policy="greedy")


def test_json_output_round_trips(runs):
    out = results(ResultsArgs(paths=(runs,), json=True))
    assert json.loads(out) == summarize(find_records([runs]))


def test_table(runs):
    table = format_table(summarize(find_records([runs])))
    assert re.search(r"Breakout\s+2\s+23\.3 ± 7\.2\s+0\.750", table)
    assert re.search(r"Pong\s+2\s+14\.6 ± 35\.3\s+1\.000", table)
    assert "HNS over 2 games, 4 runs (agent policy): mean 0.875  median 0.875  IQM 0.750" in table
    assert "aggregates over 2 of 26 games are not comparable to the papers' 26-game" in table
    storm = next(line for line in table.splitlines() if line.startswith("STORM"))
    assert storm.split()[1:] == ["1.222", "0.425", "0.561", "9", "15.9", "11.3"]
    ours = next(line for line in table.splitlines() if line.startswith("wmsim agent"))
    assert ours.split()[2:] == ["0.875", "0.875", "0.750", "1", "23.3", "14.6"]
    assert all(name in table for name in PUBLISHED)
    assert "env steps" not in table


def test_table_shows_published_columns_only_for_our_games(tmp_path):
    write(tmp_path / "a" / "eval.json", record("Alien", [227.8], run="a"))
    write(tmp_path / "b" / "eval.json", record("Freeway", [0.0], run="b"))
    table = format_table(summarize(find_records([tmp_path])))
    header = next(line for line in table.splitlines() if line.startswith("method"))
    assert header.split()[-1] == "Freeway" and "Alien" not in header and "Pong" not in header


def test_all_26_games_have_no_note_and_off_budget_runs_are_noted(tmp_path):
    for game in ATARI_100K:
        write(tmp_path / game / "eval.json", record(game, [RANDOM_SCORES[game]], run=game))
    table = format_table(summarize(find_records([tmp_path])))
    assert "not comparable" not in table
    assert "HNS over 26 games, 26 runs" in table
    write(tmp_path / "short" / "eval.json", record("Pong", [0.0], run="s", env_steps=50_000))
    table = format_table(summarize(find_records([tmp_path])))
    assert "note: runs trained for other than 100,000 env steps (Pong 50000, 100000)" in table


def test_published_matches_the_reference_table():
    assert set(PUBLISHED) == {"REM", "STORM", "IRIS", "DreamerV3 2023", "TWM", "SimPLe"}
    storm = PUBLISHED["STORM"]
    assert (storm.mean, storm.median, storm.iqm, storm.superhuman) == (1.222, 0.425, 0.561, 9)
    assert storm.scores == dict(zip(PUBLISHED_GAMES, (15.9, 11.3, 2673.5, 79.7, 0.0), strict=True))
    assert PUBLISHED["REM"].scores["Boxing"] == 87.5


def test_the_run_score_is_recomputed_from_the_episodes(tmp_path):
    write(tmp_path / "eval.json", record("Breakout", [2.0, 4.0], mean=1000.0))
    assert summarize(find_records([tmp_path]))["games"]["Breakout"]["mean"] == 3.0


MALFORMED = [
    ("{not json", r"not valid JSON \(.*line 1\); re-run `wmsim eval`"),
    ([1, 2], r"not a wmsim evaluation record \(kind None, expected 'wmsim-eval'\)"),
    (record(kind="wmsim-replay"), r"not a wmsim evaluation record \(kind 'wmsim-replay', exp"),
    (record(format=2), r"format 2, but this wmsim reads 1"),
    ({k: v for k, v in record().items() if k != "scores"}, r"the record has no scores"),
    (record(game="Breakot"), r"game 'Breakot' \(did you mean Breakout\?\) is not one of the 26"),
    (record(game="Tetris"), r"game 'Tetris' is not one of the 26 Atari 100k games"),
    (record(policy="greedy"), r"policy 'greedy' is neither agent nor random"),
    (record(scores=[]), r"'scores' must be a non-empty list of finite numbers"),
    (record(scores=["3"]), r"'scores' must be a non-empty list"),
    (record(scores=[True]), r"'scores' must be a non-empty list"),
    (record(scores=[float("nan")]), r"'scores' must be a non-empty list"),
    ({**record(), "scores": 5.0}, r"'scores' must be a non-empty list"),
    (record(env_steps="100k"), r"'env_steps' must be a step count or null, not '100k'"),
]


@pytest.mark.parametrize(("content", "message"), MALFORMED)
def test_malformed_records_name_the_file_and_the_problem(tmp_path, content, message):
    write(tmp_path / "run" / "eval.json", record("Pong", [1.0], run="fine"))
    bad = write(tmp_path / "other" / "eval.json", content)
    with pytest.raises(UserError, match=re.escape(str(bad)) + ": " + message):
        find_records([tmp_path])


def test_a_path_that_does_not_exist(tmp_path):
    with pytest.raises(UserError, match=r"nope does not exist; name run directories or eval"):
        find_records([tmp_path / "nope"])


def test_no_records_found_names_the_paths_and_wmsim_eval(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write(tmp_path / "b" / "metrics.json", {})
    with pytest.raises(UserError) as error:
        find_records([tmp_path / "a", tmp_path / "b"])
    message = str(error.value)
    assert f"under {tmp_path / 'a'}, {tmp_path / 'b'}" in message
    assert "`wmsim eval` writes one" in message
    with pytest.raises(UserError, match="no paths given"):
        find_records([])


def test_a_run_counts_once(tmp_path):
    first = write(tmp_path / "r" / "eval.json", record("Pong", [1.0], run="runs/p", seed=3))
    second = write(tmp_path / "r" / "eval-again.json", record("Pong", [2.0], run="runs/p", seed=3))
    with pytest.raises(UserError, match="both evaluate run runs/p") as error:
        find_records([tmp_path])
    assert str(first) in str(error.value) and str(second) in str(error.value)
    # other seeds of one run name, and random-policy records, are separate samples
    write(tmp_path / "r" / "eval-again.json", record("Pong", [2.0], run="runs/p", seed=4))
    write(tmp_path / "s" / "eval.json", record("Pong", [2.0], policy="random", run="runs/p"))
    write(tmp_path / "t" / "eval.json", record("Pong", [2.0], policy="random", run="runs/p"))
    assert len(find_records([tmp_path])) == 4


def test_args_parse_as_the_command_line_gives_them():
    args = tyro.cli(
        ResultsArgs,
        args=["runs/a", "runs/b", "--json", "--policy", "random"],
        config=(tyro.conf.PositionalRequiredArgs,),
    )
    assert [str(p) for p in args.paths] == ["runs/a", "runs/b"]
    assert (args.json, args.policy) == (True, "random")
