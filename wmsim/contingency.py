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

Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from wmsim.bundle import Bundle
from wmsim.bundle_dream import real_env
from wmsim.collect.tracker import TrackerPolicy
from wmsim.errors import UserError

POLICIES = ("tracker", "still", "random")
SERVE = 0.2
"""How often the ``still`` policy presses FIRE (it serves, then lets the ball fall)."""
SEGMENT = 16
"""Steps per segment of a long branch in the per-segment rows."""
DATA_EPSILON = 0.25
"""Random actions of the tracker that plays up to the branch points, as in the default data."""

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


def game_branches(env, snapshots, policy: Policy, horizon: int, lives: bool) -> np.ndarray:
    """Rewards and ends (n, horizon, 2) of ``horizon`` real steps of ``policy`` per snapshot.

    A branch whose game ends stops there (zeros after).
    """
    out = np.zeros((len(snapshots), horizon, 2))
    for i, snapshot in enumerate(snapshots):
        frame = env.restore(snapshot)
        first = True
        for t in range(horizon):
            frame, reward, terminated, truncated, info = env.step(
                int(policy(frame[None], np.array([first]))[0])
            )
            first = False
            out[i, t] = reward, bool(info["life_loss"]) if lives else terminated
            if terminated or truncated:
                break
    return out


def dream_branches(
    graphs, contexts, policy: Policy, horizon: int, seed: int, sampled: bool
) -> np.ndarray:
    """Rewards and expected ends (n, horizon, 2) of ``horizon`` dreamed steps of ``policy``.

    ``sampled`` draws every latent with seeded noise; otherwise each takes its most likely class.
    """
    rng = np.random.default_rng(seed)
    state, latent = graphs.observe(contexts["frames"], contexts["actions"], contexts["is_first"])
    frames = contexts["frames"][:, -1]
    n = len(frames)
    out = np.zeros((n, horizon, 2))
    first = np.ones(n, bool)
    for t in range(horizon):
        noise = graphs.bundle.noise(n, rng if sampled else None)
        state, reward, cont, latent = graphs.step(state, policy(frames, first), noise)
        out[:, t, 0], out[:, t, 1] = reward, 1.0 - cont
        frames, first = graphs.decode(latent), np.zeros(n, bool)
    return out


def policy_table(
    bundle: Bundle, *, lives: bool, branches: int = 512, horizon: int = 32, every: int = 25,
    seed: int = 0, sampled: bool = False, device: str = "cpu",
) -> dict[str, float]:  # fmt: skip
    """Mean rewards and ends per branch of every policy, in the game and in the dream.

    Where ``horizon`` spans more than one :data:`SEGMENT`, also per segment of the branch
    (``tracker_dream_rewards_16to32``, ...): whether the dream keeps paying as it runs on.
    Also the shares of the game's gap between the first two policies that the dream
    reproduces (``rewards_gap_share``, ``ends_gap_share``), NaN where the game shows none.
    """
    from wmsim.runtime.graphs import Graphs

    if branches < 1 or horizon < 1 or every < 1:
        raise UserError("branches, horizon and every must be positive")
    env, snapshots, contexts = branch_points(
        bundle.spec, context=bundle.context, branches=branches, every=every, seed=seed
    )
    graphs = Graphs(bundle, device=device)
    meanings, names = list(bundle.spec["actions"]), policies_for(bundle.game)
    rates: dict[str, float] = {"branches": len(snapshots), "horizon": horizon, "sampled": sampled}
    dreamed: dict[str, np.ndarray] = {}
    for k, name in enumerate(names):
        game = game_branches(
            env, snapshots, make_policy(name, meanings, 1, seed + k), horizon, lives
        )
        dream = dream_branches(
            graphs, contexts, make_policy(name, meanings, len(snapshots), seed + k), horizon, seed,
            sampled,
        )  # fmt: skip
        for where, steps in (("game", game), ("dream", dream)):
            rates[f"{name}_{where}_rewards"], rates[f"{name}_{where}_ends"] = steps.sum(1).mean(0)
            if horizon > SEGMENT:
                for start in range(0, horizon, SEGMENT):
                    part = steps[:, start : start + SEGMENT].sum(1).mean(0)
                    for kind, value in zip(("rewards", "ends"), part, strict=True):
                        end = min(start + SEGMENT, horizon)
                        rates[f"{name}_{where}_{kind}_{start}to{end}"] = value
        dreamed[name] = dream.sum(1)
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
    prefix = f"{names[0]}_game_rewards_"
    spans = [key.removeprefix(prefix) for key in rates if key.startswith(prefix)]
    if spans:
        lines += [f"{names[0]}, per {SEGMENT} steps of the branch:", f"{'steps':8} {header}"]
        lines += [row(span.replace("to", "-"), names[0], f"_{span}") for span in spans]
    return "\n".join(lines)
