"""Does a dream answer the agent? Fixed policies branched from the same real states, dream and game.

A dream can draw every frame right one step at a time and still pay the same
whatever the agent does; then no agent can learn in it what the game rewards.
This measures it on paired branches. The real game is played by the data's
kind of policy (the ball tracker with 25% random actions) under the bundle's
own settings; at ``branches`` points in mid-play the emulator's state is
saved, and from each, every fixed policy plays ``horizon`` steps twice: in the
real game (the state restored) and in the bundle's dream (its graphs observe
the same ``context`` real frames, then step with each latent's most likely
class, as ``bundle eval`` dreams, or sampled ones, as a dream env does by
default). Rewards and ends (lost lives where the bundle's continue head
learned them, else episode ends; the dream's are its expected ends, the sum of
its end probabilities) are counted per branch.

The policies span what matters in Breakout-like games: ``tracker`` moves the
paddle under the ball, read from the frame (:class:`~wmsim.collect.tracker.TrackerPolicy`;
in the dream it reads the dreamed frame), ``still`` never moves and serves with
probability 0.2, ``random`` acts uniformly. The summary is the share of the
game's difference between the first two policies (following the ball against
standing still, the game's widest gap in rewards and in lost lives) that the
dream reproduces: 1 is a dream that rewards and punishes them as the game
does, 0 one that ignores them. (Comparing against episodes from the start
instead would credit the dream with the rewards its mid-play start states were
about to pay.)

In Breakout the branches also follow the ball to the paddle: of the balls that
reach the paddle's height falling, the share seen rising again within
:data:`RETURN_WINDOW` steps (returned), the share whose life ends first (lost),
and the rest (vanished: neither a return nor an end, a ball the dream forgot);
and of the returned balls, the share that earn a reward within :data:`PAY_WINDOW` steps.
A dream that pays like the game only until its first returned ball has a low
paid share here, whatever its one-step scores.

Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from wmsim.bundle import Bundle
from wmsim.bundle_dream import real_env
from wmsim.collect.tracker import TrackerPolicy, ball_and_paddle
from wmsim.errors import UserError

POLICIES = ("tracker", "still", "random")
SERVE = 0.2
"""How often the ``still`` policy presses FIRE (it serves, then lets the ball fall)."""
SEGMENT = 16
"""Steps per segment of a long branch in the per-segment rows."""
DATA_EPSILON = 0.25
"""Random actions of the tracker that plays up to the branch points, as in the default data."""

RETURN_WINDOW = 16
"""Steps after a ball reaches the paddle within which it rises again or a life ends (Breakout
counts a lost life about 8 steps after the ball leaves the screen)."""
RISE = 2
"""Rows a returned ball must climb above the lowest it reached (a dreamed ball's drawn row
wavers by one)."""
ARRIVAL = 0.8
"""The height, as a share of the screen from its top, where a falling ball reaches the paddle."""
OUTCOMES = ("returned", "lost", "vanished")
PAY_WINDOW = 24
"""Steps after a return within which the ball is expected to have broken a brick."""

Policy = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(frames (n, H, W, 3), is_first (n,)) -> actions (n,)."""


def policies_for(game: str) -> tuple[str, ...]:
    """The policies that play ``game``: the tracker reads Breakout's screen only."""
    return POLICIES if game == "Breakout" else tuple(p for p in POLICIES if p != "tracker")


def make_policy(name: str, meanings: list[str], n: int, seed: int) -> Policy:
    """The fixed policy ``name`` (one of :data:`POLICIES`) for ``n`` envs side by side."""
    rng = np.random.default_rng(seed)
    if name == "tracker":
        trackers = [
            TrackerPolicy(meanings, np.random.default_rng([seed, i]), epsilon=0.0)
            for i in range(n)
        ]  # fmt: skip
        return lambda frames, first: np.array(
            [p(f, bool(s)) for p, f, s in zip(trackers, frames, first, strict=True)]
        )
    if name == "still":
        noop = meanings.index("NOOP")
        fire = meanings.index("FIRE") if "FIRE" in meanings else noop
        return lambda frames, first: np.where(rng.random(len(frames)) < SERVE, fire, noop)
    if name == "random":
        return lambda frames, first: rng.integers(len(meanings), size=len(frames))
    raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {name!r}")


def branch_points(spec: dict, *, context: int, branches: int, every: int, seed: int):
    """Real play up to ``branches`` points ``every`` steps apart, each with its context.

    Returns:
        the real env, the emulator snapshots at the points, and the contexts:
        frames (n, context, H, W, 3), actions (n, context - 1), is_first (n, context).
    """
    env = real_env(spec)
    meanings = env.action_meanings
    rng = np.random.default_rng(seed)
    behaviour = (
        TrackerPolicy(meanings, rng, epsilon=DATA_EPSILON)
        if "tracker" in policies_for(spec["game"])
        else (lambda frame, first: int(rng.integers(len(meanings))))
    )  # fmt: skip
    frame, _ = env.reset(seed=seed)
    frames, actions, firsts = [frame], [], [True]
    snapshots, windows = [], []
    for step in range(1, 100 * every * branches):
        action = behaviour(frame, firsts[-1])
        frame, _, terminated, truncated, _ = env.step(action)
        actions.append(action)
        if terminated or truncated:
            frame, _ = env.reset()
        frames.append(frame)
        firsts.append(terminated or truncated)
        if step % every == 0 and not any(firsts[-context:]) and len(frames) > context:
            snapshots.append(env.snapshot())
            windows.append(len(frames) - context)
            if len(snapshots) == branches:
                break
    rows = np.array(windows)[:, None] + np.arange(context)
    frames, actions = np.stack(frames), np.array(actions, np.int64)
    contexts = {
        "frames": frames[rows],
        "actions": actions[rows[:, 1:] - 1],  # the action taken before each later frame
        "is_first": np.zeros(rows.shape, bool),
    }
    contexts["is_first"][:, 0] = True
    return env, snapshots, contexts


def ball_row(frame: np.ndarray) -> float:
    """Breakout's ball row in ``frame``, NaN where none is seen."""
    row = ball_and_paddle(frame)[0]
    return np.nan if row is None else row


def game_branches(env, snapshots, policy: Policy, horizon: int, lives: bool) -> np.ndarray:
    """Rewards, ends and ball rows (n, horizon, 3) of ``horizon`` real steps of ``policy``.

    A branch whose game ends stops there (zeros after, no ball).
    """
    out = np.zeros((len(snapshots), horizon, 3))
    out[..., 2] = np.nan
    for i, snapshot in enumerate(snapshots):
        frame = env.restore(snapshot)
        first = True
        for t in range(horizon):
            frame, reward, terminated, truncated, info = env.step(
                int(policy(frame[None], np.array([first]))[0])
            )
            first = False
            out[i, t] = reward, bool(info["life_loss"]) if lives else terminated, ball_row(frame)
            if terminated or truncated:
                break
    return out


def dream_branches(
    graphs, contexts, policy: Policy, horizon: int, seed: int, sampled: bool
) -> np.ndarray:
    """Rewards, expected ends and ball rows (n, horizon, 3) of ``horizon`` dreamed steps.

    ``sampled`` draws every latent with seeded noise; otherwise each takes its most likely class.
    """
    rng = np.random.default_rng(seed)
    state, latent = graphs.observe(contexts["frames"], contexts["actions"], contexts["is_first"])
    frames = contexts["frames"][:, -1]
    n = len(frames)
    out = np.zeros((n, horizon, 3))
    first = np.ones(n, bool)
    for t in range(horizon):
        noise = graphs.bundle.noise(n, rng if sampled else None)
        state, reward, cont, latent = graphs.step(state, policy(frames, first), noise)
        frames, first = graphs.decode(latent), np.zeros(n, bool)
        out[:, t, 0], out[:, t, 1] = reward, 1.0 - cont
        out[:, t, 2] = [ball_row(frame) for frame in frames]
    return out


def paddle_outcomes(
    rows: np.ndarray, ends: np.ndarray, arrival: float
) -> list[list[tuple[int, int]]]:
    """Per branch, (outcome, step) of each ball reaching the paddle: the index in :data:`OUTCOMES`.

    The step is where the outcome was decided.

    Args:
        rows: (n, T) the ball's row at each step of each branch, NaN where unseen.
        ends: (n, T) lost lives, or end probabilities (an end where over 0.5).
        arrival: the row where a falling ball reaches the paddle.

    A ball arrives at step t when it is at or below ``arrival`` and lower than at t - 1.
    Its outcome is the first of: an end (lost); the ball seen :data:`RISE` rows above
    the lowest it reached since (returned); :data:`RETURN_WINDOW` steps of neither
    (vanished). An arrival whose branch stops before any of them is not counted.
    """
    out = []
    for row, end in zip(rows, ends > 0.5, strict=True):
        outcomes, t = [], 1
        while t < len(row):
            if row[t] >= arrival and row[t] > row[t - 1]:  # NaN compares False
                outcome, t = _outcome(row, end, t)
                if outcome is not None:
                    outcomes.append((outcome, t))
            t += 1
        out.append(outcomes)
    return out


def _outcome(row: np.ndarray, end: np.ndarray, t: int) -> tuple[int | None, int]:
    """The outcome (index in :data:`OUTCOMES`) of the ball arriving at ``t``, and its step."""
    lowest = row[t]
    for u in range(t, min(t + 1 + RETURN_WINDOW, len(row))):
        if end[u]:
            return 1, u
        if row[u] <= lowest - RISE:
            return 0, u
        lowest = np.fmax(lowest, row[u])
    if t + RETURN_WINDOW < len(row):
        return 2, t + RETURN_WINDOW
    return None, len(row)


def policy_table(
    bundle: Bundle, *, lives: bool, branches: int = 512, horizon: int = 32, every: int = 25,
    seed: int = 0, sampled: bool = False, device: str = "cpu",
) -> dict[str, float]:  # fmt: skip
    """Mean rewards and ends per branch of every policy, in the game and in the dream.

    Where ``horizon`` spans more than one :data:`SEGMENT`, also per segment of the branch
    (``tracker_dream_rewards_16to32``, ...): whether the dream keeps paying as it runs on.
    Also the shares of the game's gap between the first two policies that the dream
    reproduces (``rewards_gap_share``, ``ends_gap_share``), NaN where the game shows none.
    In Breakout, the balls that reach the paddle per branch (``tracker_dream_paddle_arrivals``),
    the shares returned, lost and vanished (``tracker_dream_returned``, ...), and whether the
    dream returns or loses each branch's first one as the game does
    (``tracker_first_ball_return_recall``, ``..._loss_recall``; :func:`first_ball_agreement`).
    """
    from wmsim.runtime.graphs import Graphs

    if branches < 1 or horizon < 1 or every < 1:
        raise UserError("branches, horizon and every must be positive")
    env, snapshots, contexts = branch_points(
        bundle.spec, context=bundle.context, branches=branches, every=every, seed=seed
    )
    graphs = Graphs(bundle, device=device)
    meanings, names = list(bundle.spec["actions"]), policies_for(bundle.game)
    height = contexts["frames"].shape[2]
    rates: dict[str, float] = {"branches": len(snapshots), "horizon": horizon, "sampled": sampled}
    dreamed: dict[str, np.ndarray] = {}
    decided: dict[str, list] = {}  # per side, the paddle outcomes of the current policy
    for k, name in enumerate(names):
        game = game_branches(
            env, snapshots, make_policy(name, meanings, 1, seed + k), horizon, lives
        )
        dream = dream_branches(
            graphs, contexts, make_policy(name, meanings, len(snapshots), seed + k), horizon, seed,
            sampled,
        )  # fmt: skip
        for where, branched in (("game", game), ("dream", dream)):
            steps = branched[..., :2]
            rates[f"{name}_{where}_rewards"], rates[f"{name}_{where}_ends"] = steps.sum(1).mean(0)
            if "tracker" in names:  # Breakout: what becomes of the balls that reach the paddle
                decided[where] = paddle_outcomes(
                    branched[..., 2], branched[..., 1], ARRIVAL * height
                )
                rates.update(_returns(f"{name}_{where}", branched, decided[where]))
            if horizon > SEGMENT:
                for start in range(0, horizon, SEGMENT):
                    part = steps[:, start : start + SEGMENT].sum(1).mean(0)
                    for kind, value in zip(("rewards", "ends"), part, strict=True):
                        end = min(start + SEGMENT, horizon)
                        rates[f"{name}_{where}_{kind}_{start}to{end}"] = value
        if "tracker" in names:
            agreement = first_ball_agreement(decided["game"], decided["dream"])
            rates.update({f"{name}_first_ball_{k}": v for k, v in agreement.items()})
        dreamed[name] = dream[..., :2].sum(1)
    env.close()
    first, second = names[:2]  # the pair the game sets furthest apart
    differences = dreamed[first] - dreamed[second]  # (branches, 2), paired
    for column, kind in enumerate(("rewards", "ends")):
        gap = rates[f"{first}_game_{kind}"] - rates[f"{second}_game_{kind}"]
        share = differences[:, column].mean() / gap if gap else float("nan")
        rates[f"{kind}_gap_share"] = share
        # its standard error from the dream's spread over the branches (the game's is left out)
        spread = differences[:, column].std(ddof=1) / np.sqrt(len(differences))
        rates[f"{kind}_gap_share_se"] = spread / abs(gap) if gap else float("nan")
    return rates


def _returns(prefix: str, branched: np.ndarray, outcomes: list) -> dict[str, float]:
    """Balls reaching the paddle per branch, and the share of each of :data:`OUTCOMES`.

    ``outcomes`` are :func:`paddle_outcomes` of ``branched``.

    Also the share of returned balls that earn a reward within :data:`PAY_WINDOW` steps
    (``paid``), over the returns whose window fits in the branch.
    """
    decided = [o for branch in outcomes for o, _ in branch]
    counts = np.bincount(np.array(decided, np.int64), minlength=len(OUTCOMES))
    arrivals = counts.sum()
    out = {f"{prefix}_paddle_arrivals": arrivals / len(branched)}
    for outcome, count in zip(OUTCOMES, counts, strict=True):
        out[f"{prefix}_{outcome}"] = count / arrivals if arrivals else float("nan")
    paid = []  # of the returns whose window fits in the branch: a reward within it or not
    for steps, branch in zip(branched, outcomes, strict=True):
        for outcome, u in branch:
            if outcome == 0 and u + PAY_WINDOW < len(steps):
                paid.append(bool((steps[u + 1 : u + 1 + PAY_WINDOW, 0] > 0.5).any()))
    out[f"{prefix}_paid"] = float(np.mean(paid)) if paid else float("nan")
    return out


def first_ball_agreement(game: list, dream: list) -> dict[str, float]:
    """How often the dream decides the first ball to reach the paddle as the game does.

    ``game`` and ``dream`` are :func:`paddle_outcomes` of the same branches.

    Over the branches where both the game and the dream see one arrive: of those the game
    returns, the share the dream returns (``return_recall``); of those the game loses, the
    share the dream loses (``loss_recall``); and the counts of each.
    """
    game_first, dream_first = (
        np.array([o[0][0] if o else -1 for o in side]) for side in (game, dream)
    )
    both = (game_first >= 0) & (dream_first >= 0)
    out: dict[str, float] = {}
    for index, name in ((0, "return"), (1, "loss")):
        real = both & (game_first == index)
        out[f"{name}_events"] = int(real.sum())
        out[f"{name}_recall"] = (
            float((dream_first[real] == index).mean()) if real.any() else float("nan")
        )
    return out


def policy_lines(rates: dict[str, float], lives: bool) -> str:
    """The table as text: per policy, the gap shares, then the first policy per segment.

    The segment rows appear where the branches were long enough to have several.
    """
    ends = "lives lost" if lives else "episode ends"
    names = [p for p in POLICIES if f"{p}_game_rewards" in rates]
    header = f"{'rewards: game':>14} {'dream':>6}   {ends + ': game':>18} {'dream':>6}"

    def row(label: str, name: str, span: str = "") -> str:
        game, dream, lost, dreamt = (
            rates[f"{name}_{where}_{kind}{span}"]
            for kind in ("rewards", "ends")
            for where in ("game", "dream")
        )
        return f"{label:8} {game:14.2f} {dream:6.2f}   {lost:18.2f} {dreamt:6.2f}"

    lines = [
        f"fixed policies from {int(rates['branches'])} mid-play states, {int(rates['horizon'])} "
        f"steps each ({'sampled' if rates['sampled'] else 'most likely'} latents), per branch:",
        f"{'policy':8} {header}",
        *(row(name, name) for name in names),
        f"share of the game's {names[0]}-{names[1]} gap the dream reproduces: rewards "
        f"{rates['rewards_gap_share']:.2f} ± {rates['rewards_gap_share_se']:.2f}, {ends} "
        f"{rates['ends_gap_share']:.2f} ± {rates['ends_gap_share_se']:.2f} (1: as the game)",
    ]
    if f"{names[0]}_game_returned" in rates:
        lines += [
            f"balls reaching the paddle ({names[0]}): " + "; ".join(
                f"{where} {rates[f'{names[0]}_{where}_paddle_arrivals']:.2f} per branch, "
                + ", ".join(f"{rates[f'{names[0]}_{where}_{o}']:.0%} {o}" for o in OUTCOMES)
                + f" ({rates[f'{names[0]}_{where}_paid']:.0%} of returns paid within "
                f"{PAY_WINDOW} steps)"
                for where in ("game", "dream")
            )
        ]  # fmt: skip
    if f"{names[0]}_first_ball_return_recall" in rates:
        lines.append(
            "each branch's first ball at the paddle (where both see one): " + "; ".join(
                f"{name}: of {rates[f'{name}_first_ball_return_events']} the game returns, the "
                f"dream returns {rates[f'{name}_first_ball_return_recall']:.0%}, of "
                f"{rates[f'{name}_first_ball_loss_events']} it loses, the dream loses "
                f"{rates[f'{name}_first_ball_loss_recall']:.0%}"
                for name in names
            )
        )  # fmt: skip
    prefix = f"{names[0]}_game_rewards_"
    spans = [key.removeprefix(prefix) for key in rates if key.startswith(prefix)]
    if spans:
        lines += [f"{names[0]}, per {SEGMENT} steps of the branch:", f"{'steps':8} {header}"]
        lines += [row(span.replace("to", "-"), names[0], f"_{span}") for span in spans]
    return "\n".join(lines)
