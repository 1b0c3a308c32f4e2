"""What the ratings say: Bradley-Terry strengths with bootstrap intervals, win rates, scores.

    result = summarise(RatingsStore())      # JSON-ready
    print(format_summary(result))
    chart(result, "ratings.png")

Votes of the blind listening test are paired comparisons. Bradley-Terry gives
each condition a strength p with P(i beats j) = p_i / (p_i + p_j); ties, and
"both bad", count as half a win for each side, as in Music Arena. Strengths
are fitted by Hunter's (2004) minorise-maximise iterations and reported on the
Elo scale (1000 for the geometric mean; 400 points = 10:1 odds), with 95%
intervals from resampling the votes. The 1-5 "how musical" scores get a mean
with a t interval per condition; the "human or computer?" guesses a hit rate
against a false-alarm rate with Fisher's exact test. The Generate tab's quick ratings
are not blind and are summarised apart.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
from pathlib import Path

import numpy as np

from musicgen.plots import leaderboard_chart
from musicgen.ratings import CHOICES, VOTE_COLUMNS, RatingsStore, listening_floor

REAL_CONDITION = "real"  # the pianist's continuation (musicgen.listening.REAL)
MIN_VOTES = 30  # below this the leaderboard is not shown in the app (Music Arena's rule)
MIN_CELL = 5  # the app shows a mean score only from this many answers
BOOTSTRAP = 1000
# Virtual games per pair of conditions, split evenly: keeps a strength finite
# when a condition has won (or lost) every vote so far, at the cost of a
# slight pull towards equal strengths that fades as votes come in.
PRIOR_GAMES = 0.5
ELO_SCALE = 400 / np.log(10)
SCORE_SCALE = (1, 5)  # the 1-5 scores: "how musical", and the Generate tab's ratings


# What makes a vote look scripted (`scripted_votes`). A script can open sessions and
# fetch clips as a person does; what it does not do is listen: it votes as soon as the
# server allows, on many pairs, always the same way.
# A group whose median vote comes this close to the floor is a script: a person who
# plays each clip the asked 5 s still needs a moment to switch clips and to click.
NEAR_FLOOR_S = 1.0
NEAR_FLOOR_MIN_VOTES = 3
MAX_VOTES_PER_LISTENER = 40  # votes beyond this many from one listener are not counted
SAME_SIDE_VOTES = 8  # always A (or always B) over this many decisive votes: p < 1% by chance
# Always the same condition whenever it was in the pair, over this many pairs.
SAME_CONDITION_PAIRS = {"rater": 10, "account": 10, "address": 20}
DROP_REASONS = {
    "not_heard": "no record that both clips were downloaded (as for every vote cast before "
                 "the server recorded downloads)",
    "at_the_floor": "votes as soon as the server allowed, again and again",
    "too_many": f"beyond {MAX_VOTES_PER_LISTENER} votes of one listener",
    "same_side": f"always the same side over {SAME_SIDE_VOTES} or more votes",
    "same_condition": "always the same condition whenever it was in the pair",
}


def scripted_votes(votes: list[dict], floor_s: float = listening_floor()) -> dict[str, str]:
    """The votes that look scripted: token -> the reason (a key of `DROP_REASONS`).

    Judged per listener and, where known, per account (one may use many
    browsers) and per network address (a script opens many listeners from one
    address): a vote with no record
    that both clips were downloaded; a listener or address whose median vote
    came within `NEAR_FLOOR_S` of the earliest allowed (`floor_s` after the
    download); a listener's (account's) votes beyond `MAX_VOTES_PER_LISTENER`; a
    listener (account) who chose the same side in all of `SAME_SIDE_VOTES` or more
    decisive votes;
    a listener (address) who chose one condition every time it was in the pair,
    over `SAME_CONDITION_PAIRS` pairs or more, unless it is the pianist's (a
    careful listener may well always pick the real continuation). Votes stored
    before downloads were recorded (schema 2) have no such record either.
    """
    dropped: dict[str, str] = {}
    for vote in votes:
        if vote["seconds_since_heard"] is None:
            dropped[vote["token"]] = "not_heard"
    for key in ("rater", "account", "address"):
        groups: dict[str, list[dict]] = {}
        for vote in votes:
            if vote[key] is not None and vote["token"] not in dropped:
                groups.setdefault(vote[key], []).append(vote)
        for group in groups.values():
            reason = _group_reason(group, floor_s, key)
            for vote in group:
                if reason is not None:
                    dropped.setdefault(vote["token"], reason)
            if key != "address":
                for vote in group[MAX_VOTES_PER_LISTENER:]:  # votes come oldest first
                    dropped.setdefault(vote["token"], "too_many")
    return dropped


def _group_reason(group: list[dict], floor_s: float, key: str) -> str | None:
    """Why a whole listener's (or address's) votes look scripted, or None."""
    waits = [vote["seconds_since_heard"] - floor_s for vote in group]
    if len(waits) >= NEAR_FLOOR_MIN_VOTES and float(np.median(waits)) < NEAR_FLOOR_S:
        return "at_the_floor"
    decisive = [vote["choice"] for vote in group if vote["choice"] in ("a", "b")]
    if key != "address" and len(decisive) >= SAME_SIDE_VOTES and len(set(decisive)) == 1:
        return "same_side"
    present: dict[str, list[bool]] = {}
    for vote in group:
        if vote["choice"] not in ("a", "b"):
            continue
        chosen = vote["condition_a"] if vote["choice"] == "a" else vote["condition_b"]
        for condition in (vote["condition_a"], vote["condition_b"]):
            present.setdefault(condition, []).append(chosen == condition)
    if any(len(picks) >= SAME_CONDITION_PAIRS[key] and all(picks)
           for condition, picks in present.items() if condition != REAL_CONDITION):
        return "same_condition"
    return None


def outcomes(votes: list[dict]) -> list[tuple[str, str, float]]:
    """Each vote as (condition A, condition B, A's share of the win: 1, 0.5 or 0)."""
    share = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}
    return [(v["condition_a"], v["condition_b"], share[v["choice"]]) for v in votes]


def bradley_terry(games: list[tuple[str, str, float]], conditions: list[str],
                  prior_games: float = PRIOR_GAMES) -> np.ndarray:
    """Bradley-Terry log-strengths, centred on 0, fitted by minorise-maximise.

    Args:
        games: (i, j, i's share of the win) per comparison.
        conditions: All conditions, in the order of the result.
        prior_games: Virtual games per pair of conditions, half won by each.

    Returns:
        One log-strength per condition (natural log; differences are log-odds).
    """
    return _fit(*_as_arrays(games, conditions), len(conditions), prior_games)


def _as_arrays(games: list[tuple[str, str, float]],
               conditions: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index of A, index of B, A's share) per game, as numpy arrays."""
    index = {name: k for k, name in enumerate(conditions)}
    return (np.array([index[a] for a, _, _ in games], dtype=np.int64),
            np.array([index[b] for _, b, _ in games], dtype=np.int64),
            np.array([s for _, _, s in games], dtype=float))


def _fit(first: np.ndarray, second: np.ndarray, share: np.ndarray, n: int,
         prior_games: float, iterations: int = 10_000, tolerance: float = 1e-10) -> np.ndarray:
    """`bradley_terry` on index arrays (the bootstrap calls this a thousand times)."""
    wins = (np.bincount(first, share, n) + np.bincount(second, 1.0 - share, n)
            + prior_games * (n - 1) / 2)
    played = np.full((n, n), prior_games)
    np.fill_diagonal(played, 0.0)
    np.add.at(played, (first, second), 1.0)
    np.add.at(played, (second, first), 1.0)
    strength = np.ones(n)
    for _ in range(iterations):
        updated = wins / (played / (strength[:, None] + strength[None, :])).sum(axis=1)
        updated /= np.exp(np.mean(np.log(updated)))
        converged = np.max(np.abs(updated - strength)) < tolerance
        strength = updated
        if converged:
            break
    return np.log(strength)


def leaderboard(votes: list[dict], resamples: int = BOOTSTRAP, seed: int = 0) -> list[dict]:
    """Conditions ranked by Bradley-Terry rating, with bootstrap 95% intervals.

    Returns:
        One dict per condition, best first: condition, rating (Elo scale),
        ci [low, high] (None without resamples), votes (comparisons it took
        part in), win_rate (ties half).
    """
    games = outcomes(votes)
    conditions = sorted({c for a, b, _ in games for c in (a, b)})
    if not conditions:
        return []
    first, second, share = _as_arrays(games, conditions)
    rating = 1000 + ELO_SCALE * _fit(first, second, share, len(conditions), PRIOR_GAMES)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(resamples):
        picked = rng.integers(0, len(games), len(games))
        samples.append(1000 + ELO_SCALE * _fit(first[picked], second[picked], share[picked],
                                               len(conditions), PRIOR_GAMES))
    rows = []
    for k, name in enumerate(conditions):
        taken = np.concatenate((share[first == k], 1.0 - share[second == k]))
        ci = ([round(float(v), 1) for v in np.percentile(np.array(samples)[:, k], [2.5, 97.5])]
              if samples else None)
        rows.append({"condition": name, "rating": round(float(rating[k]), 1), "ci": ci,
                     "votes": int(len(taken)), "win_rate": round(float(taken.mean()), 3)})
    return sorted(rows, key=lambda row: -row["rating"])


def win_matrix(votes: list[dict]) -> dict[str, dict[str, dict]]:
    """Row's share of wins against column (ties half), with the number of votes.

    Returns:
        {row: {column: {"rate": share or None, "n": votes}}} for every pair of conditions.
    """
    games = outcomes(votes)
    conditions = sorted({c for a, b, _ in games for c in (a, b)})
    matrix: dict[str, dict[str, dict]] = {row: {} for row in conditions}
    for row, column in itertools.permutations(conditions, 2):
        shares = [share if a == row else 1 - share for a, b, share in games
                  if {a, b} == {row, column}]
        matrix[row][column] = {"rate": round(float(np.mean(shares)), 3) if shares else None,
                               "n": len(shares)}
    return matrix


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (df >= 1).

    Without scipy (which would be the app's largest dependency, 136 MB, for
    two numbers). Up to 2,000 degrees of freedom, P(|T| <= t) in closed form
    (Abramowitz & Stegun 26.7.3-4), solved for 0.95 by bisection to float
    precision; beyond, where that sum grows long, the expansion of 26.7.5 in
    1/df, whose next term is below 1e-13 there.
    """
    if df > 2000:
        z = 1.959963984540054  # the normal's 97.5% quantile
        terms = ((z ** 3 + z) / 4, (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96,
                 (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384)
        return z + sum(term / df ** (k + 1) for k, term in enumerate(terms))
    def central(t: float) -> float:  # P(|T| <= t)
        theta = math.atan(t / math.sqrt(df))
        cos2 = math.cos(theta) ** 2
        if df % 2:
            term, series = math.cos(theta), 0.0
            for k in range(1, (df - 1) // 2 + 1):
                series += term
                term *= cos2 * (2 * k) / (2 * k + 1)
            return 2 / math.pi * (theta + math.sin(theta) * series) if df > 1 else (
                2 * theta / math.pi)
        term, series = 1.0, 0.0
        for k in range(1, df // 2 + 1):
            series += term
            term *= cos2 * (2 * k - 1) / (2 * k)
        return math.sin(theta) * series

    low, high = 0.0, 1e4
    for _ in range(64):  # 1e4 / 2**64: below a float's resolution
        middle = (low + high) / 2
        low, high = (middle, high) if central(middle) < 0.95 else (low, middle)
    return (low + high) / 2


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """Two-sided p of Fisher's exact test for the table [[a, b], [c, d]].

    The sum of the hypergeometric probabilities, at the table's margins, of
    every table no more likely than the one seen (scipy's definition, with its
    relative tolerance for ties), in exact integer arithmetic.
    """
    row, column, total = a + b, a + c, a + b + c + d
    weights = {k: math.comb(row, k) * math.comb(total - row, column - k)
               for k in range(max(0, column - (total - row)), min(row, column) + 1)}
    seen = weights[a]
    # In integers: the weights of large tables do not fit in a float.
    close = sum(w for w in weights.values() if w * 10**7 <= seen * (10**7 + 1))
    return min(1.0, close / math.comb(total, column))


def mean_with_ci(values: list[float], scale: tuple[float, float] | None = None) -> dict:
    """Mean, 95% t interval (None below 2 values) and n.

    Args:
        values: The scores.
        scale: The scores' range, e.g. (1, 5): the interval is cut to it (with a
            few scores a t interval reaches past the ends of the scale).
    """
    values = np.asarray(values, dtype=float)
    if not len(values):
        return {"mean": None, "ci": None, "n": 0}
    mean = float(values.mean())
    if len(values) < 2:
        return {"mean": round(mean, 3), "ci": None, "n": 1}
    half = t_quantile_975(len(values) - 1) * float(values.std(ddof=1)) / math.sqrt(len(values))
    low, high = mean - half, mean + half
    if scale is not None:
        low, high = max(low, scale[0]), min(high, scale[1])
    return {"mean": round(mean, 3), "ci": [round(low, 3), round(high, 3)],
            "n": int(len(values))}


def musical_scores(votes: list[dict]) -> dict[str, dict]:
    """The 1-5 "how musical" scores per condition: mean, CI, n."""
    by_condition: dict[str, list[int]] = {}
    for vote in votes:
        for side in ("a", "b"):
            if vote[f"musical_{side}"] is not None:
                by_condition.setdefault(vote[f"condition_{side}"], []).append(
                    vote[f"musical_{side}"])
    return {name: mean_with_ci(values, SCORE_SCALE)
            for name, values in sorted(by_condition.items())}


def human_or_computer(votes: list[dict]) -> dict:
    """Can listeners tell the pianist's clips from the models'?

    Real clips are a minority of a pool (a quarter with three models), so the
    share of right answers says little: answering "computer" every time scores
    75%. What counts is whether real clips are judged human more often than
    generated ones: the hit rate against the false-alarm rate, with Fisher's
    exact test on that 2 x 2 table (two-sided). The two answers of one pair come
    from one listener, so the test is somewhat optimistic.

    Returns:
        hit_rate (real clips judged human), false_alarm_rate (generated clips
        judged human), their n, balanced_accuracy, p_value (None without both
        kinds of answer), and per condition the share of its clips judged human.
    """
    real, generated, judged_human = [], [], {}
    for vote in votes:
        for side in ("a", "b"):
            guess = vote[f"guess_{side}"]
            if guess is None:
                continue
            said_human = guess == "human"
            (real if vote[f"real_{side}"] else generated).append(said_human)
            judged_human.setdefault(vote[f"condition_{side}"], []).append(said_human)
    hits, false_alarms = sum(real), sum(generated)
    both = bool(real) and bool(generated)
    p_value = (fisher_exact(hits, len(real) - hits, false_alarms, len(generated) - false_alarms)
               if both else None)
    hit_rate = round(hits / len(real), 3) if real else None
    false_alarm_rate = round(false_alarms / len(generated), 3) if generated else None
    return {"hit_rate": hit_rate, "real_n": len(real), "false_alarm_rate": false_alarm_rate,
            "generated_n": len(generated),
            "balanced_accuracy": (round((hit_rate + 1 - false_alarm_rate) / 2, 3)
                                  if both else None),
            "p_value": p_value,
            "judged_human": {name: {"share": round(float(np.mean(v)), 3), "n": len(v)}
                             for name, v in sorted(judged_human.items())}}


def quick_ratings(rows: list[dict]) -> dict[str, dict]:
    """The Generate tab's 1-5 ratings (not blind) per model: mean, CI, n."""
    by_model: dict[str, list[int]] = {}
    for row in rows:
        by_model.setdefault(str(row["recipe"].get("model", "?")), []).append(row["score"])
    return {name: mean_with_ci(values, SCORE_SCALE) for name, values in sorted(by_model.items())}


def summarise(store: RatingsStore, resamples: int = BOOTSTRAP, seed: int = 0,
              all_pools: bool = False, floor_s: float = listening_floor(),
              unfiltered: bool = False) -> dict:
    """Everything the ratings say, JSON-ready (aggregates only, no rater ids).

    Votes that look scripted (`scripted_votes`) are left out of every figure;
    how many, and why, is part of the result.

    Args:
        store: The ratings database.
        resamples, seed: The bootstrap.
        all_pools: Pool the votes of every pool ever built; by default only the
            latest pool's count (a rebuilt pool may hold other models or lengths).
        floor_s: The earliest a vote was allowed after both clips were downloaded.
        unfiltered: Also give the leaderboard of every vote, filtered or not.
    """
    pool = None if all_pools else store.latest_pool()
    every = store.votes(pool) if (pool or all_pools) else []
    dropped = scripted_votes(every, floor_s)
    votes = [vote for vote in every if vote["token"] not in dropped]
    choices = {choice: sum(v["choice"] == choice for v in votes) for choice in CHOICES}
    result = {"pool": "all" if all_pools else pool, "votes": len(votes),
              "raters": len({v["rater"] for v in votes}), "choices": choices,
              "min_votes": MIN_VOTES,
              "dropped": {reason: sum(why == reason for why in dropped.values())
                          for reason in DROP_REASONS if reason in dropped.values()},
              "leaderboard": leaderboard(votes, resamples, seed),
              "win_matrix": win_matrix(votes), "musical": musical_scores(votes),
              "human_or_computer": human_or_computer(votes),
              "quick_ratings": quick_ratings(store.clip_ratings())}
    if unfiltered:
        result["unfiltered"] = {"votes": len(every),
                                "leaderboard": leaderboard(every, resamples, seed)}
    return result


def for_the_public(result: dict, min_n: int = MIN_CELL) -> dict:
    """The summary without cells of fewer than `min_n` answers (one person's score is
    not an aggregate), for the app's page."""
    def kept(table: dict) -> dict:
        return {name: cell for name, cell in table.items() if cell["n"] >= min_n}

    guesses = result["human_or_computer"]
    return {**result, "musical": kept(result["musical"]),
            "quick_ratings": kept(result["quick_ratings"]),
            "human_or_computer": {**guesses, "judged_human": kept(guesses["judged_human"])}}


def format_summary(result: dict) -> str:
    """The summary as text for a terminal (Markdown tables)."""
    lines = [f"Pool {result['pool']}: {result['votes']} votes from {result['raters']} listeners "
             f"(A {result['choices']['a']}, B {result['choices']['b']}, "
             f"tie {result['choices']['tie']}, both bad {result['choices']['both_bad']})."]
    if result["dropped"]:
        lines.append(f"Not counted, as they look scripted: {sum(result['dropped'].values())} "
                     "votes (" + "; ".join(f"{count} {DROP_REASONS[reason]}" for reason, count
                                          in result["dropped"].items()) + ").")
    if result["votes"] < result["min_votes"]:
        lines.append(f"Fewer than {result['min_votes']} votes: the app does not show the "
                     "leaderboard yet, and its intervals are wide.")
    if result["leaderboard"]:
        lines += ["", "| rank | condition | rating [95% CI] | votes | win rate |",
                  "|---:|---|---:|---:|---:|"]
        lines += _board_rows(result["leaderboard"])
        names = list(result["win_matrix"])
        lines += ["", "Win rate of the row against the column (votes):", "",
                  "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for row in names:
            cells = [("-" if row == column else _rate(result["win_matrix"][row][column]))
                     for column in names]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    if "unfiltered" in result:
        lines += ["", f"Every vote, scripted-looking ones included ({result['unfiltered']['votes']}"
                      "):", "", "| rank | condition | rating [95% CI] | votes | win rate |",
                  "|---:|---|---:|---:|---:|"]
        lines += _board_rows(result["unfiltered"]["leaderboard"])
    for title, table in (("How musical (1-5), blind", result["musical"]),
                         ("Quick ratings on the Generate tab (1-5, not blind)",
                          result["quick_ratings"])):
        if table:
            lines += ["", f"{title}:", "", "| condition | mean [95% CI] | n |", "|---|---:|---:|"]
            lines += [f"| {name} | {_mean(cell)} | {cell['n']} |" for name, cell in table.items()]
    guesses = result["human_or_computer"]
    if guesses["p_value"] is not None:
        lines += ["", f"Human or computer: the pianist's clips judged human "
                      f"{guesses['hit_rate']:.0%} of {guesses['real_n']}, the models' "
                      f"{guesses['false_alarm_rate']:.0%} of {guesses['generated_n']} "
                      f"(balanced accuracy {guesses['balanced_accuracy']:.0%}; Fisher's "
                      f"exact test p = {guesses['p_value']:.3g}). Judged human: " + ", ".join(
                          f"{name} {cell['share']:.0%} of {cell['n']}"
                          for name, cell in guesses["judged_human"].items()) + "."]
    return "\n".join(lines)


def _board_rows(board: list[dict]) -> list[str]:
    rows = []
    for rank, row in enumerate(board, 1):
        ci = f" [{row['ci'][0]:.0f}, {row['ci'][1]:.0f}]" if row["ci"] else ""
        rows.append(f"| {rank} | {row['condition']} | {row['rating']:.0f}{ci} | "
                    f"{row['votes']} | {row['win_rate']:.2f} |")
    return rows


def _rate(cell: dict) -> str:
    return f"{cell['rate']:.2f} ({cell['n']})" if cell["rate"] is not None else "(0)"


def _mean(cell: dict) -> str:
    ci = f" [{cell['ci'][0]:.2f}, {cell['ci'][1]:.2f}]" if cell["ci"] else ""
    return f"{cell['mean']:.2f}{ci}"


def chart(result: dict, path: str | os.PathLike) -> Path:
    """An SVG of the leaderboard: each condition's rating with its 95% interval."""
    return leaderboard_chart(result["leaderboard"], f"Blind listening test: {result['votes']} "
                             f"votes, {result['raters']} listeners", path)


QUICK_COLUMNS = ("session", "clip_id", "score", "comment", "recipe", "created", "updated")


def export_csv(store: RatingsStore, path: str | os.PathLike,
               quick_path: str | os.PathLike | None = None) -> int:
    """Every vote (of every pool) as a CSV row; raw data leaves only through the CLI.

    Args:
        store: The ratings database.
        path: The votes' CSV.
        quick_path: Also write the Generate tab's quick ratings here.

    Returns:
        Votes written.
    """
    votes = store.votes()
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=VOTE_COLUMNS)
        writer.writeheader()
        writer.writerows(votes)
    if quick_path is not None:
        with open(quick_path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=QUICK_COLUMNS)
            writer.writeheader()
            writer.writerows({**row, "recipe": json.dumps(row["recipe"])}
                             for row in store.clip_ratings())
    return len(votes)
