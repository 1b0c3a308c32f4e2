"""The listening pool, and the statistics of the votes against hand-computed values."""

from __future__ import annotations

import csv
import hashlib
import json
import time

import numpy as np
import pytest
from conftest import StepClock, heard, tiny_checkpoint
from test_ratings import fake_pool

from musicgen import cli, leaderboard
from musicgen.compose import load_model
from musicgen.listening import ListeningTest, build_pool, pool_dir, pool_prompts
from musicgen.ratings import RatingsStore
from musicgen.settings import Settings


def vote(a: str, b: str, choice: str, **extra) -> dict:
    return {"condition_a": a, "condition_b": b, "choice": choice, "musical_a": None,
            "musical_b": None, "guess_a": None, "guess_b": None, "real_a": a == "real",
            "real_b": b == "real", **extra}


# --- the pool ---

def test_a_pool_holds_equal_opaque_clips_and_keeps_conditions_on_the_server(tmp_path):
    import soundfile

    models = {name: load_model(tiny_checkpoint(tmp_path / "ckpt" / name, kind), name)
              for name, kind in (("lstm", "lstm"), ("transformer", "transformer"))}
    store = RatingsStore(tmp_path / "db" / "ratings.sqlite")
    summary = build_pool(store, models, prompts=2, seconds=6, seed=3)
    assert summary["prompts"] == 2 and summary["clips"] == 6
    assert summary["conditions"] == ["greedy-lstm", "lstm", "transformer"]
    clips = store.pool_clips(summary["pool"])
    root = pool_dir(store.path)
    assert root == tmp_path / "db" / "listening"
    levels: dict[str, list[float]] = {}
    for clip in clips:
        path = root / clip["audio"]
        audio, rate = soundfile.read(path)
        assert abs(len(audio) / rate - 6.0) < 0.1  # one length for all (MP3 frames aside)
        assert clip["condition"] not in path.name and len(path.stem) == 32
        rms = float(np.sqrt(np.mean(audio ** 2)))
        if rms > 1e-4:
            levels.setdefault(clip["prompt"], []).append(20 * np.log10(rms))
    for prompt_levels in levels.values():  # the clips of a pair are equally loud
        assert max(prompt_levels) - min(prompt_levels) < 0.5
    digests = dict(store._read("SELECT id, audio_sha256 FROM clips"))
    for clip in clips:
        assert hashlib.sha256((root / clip["audio"]).read_bytes()).hexdigest() == \
            digests[clip["id"]]
    recipes = [json.loads(r) for (r,) in store._read("SELECT recipe FROM clips")]
    assert {r.get("temperature") for r in recipes} == {0.0, Settings().temperature}  # greedy anchor
    assert all("prompt_tokens" not in r for r in recipes)

    test = ListeningTest(store, root)
    pair = test.next_pair("rater")
    files = {test.open_clip("rater", ticket) for ticket in pair.links.values()}
    assert len(files) == 3 and all(path.is_file() for path in files)
    assert not pair.has_real  # built-in examples: no pianist's continuation
    assert not store.path.resolve().is_relative_to(root.resolve())  # the database is beside it
    sizes = {(root / c["audio"]).stat().st_size for c in clips}
    times = {(root / c["audio"]).stat().st_mtime for c in clips}
    assert len(times) == 1 and max(sizes) - min(sizes) < 2000  # constant bitrate, one mtime


def test_the_same_seed_gives_the_same_prompts(maestro_dir):
    first = pool_prompts(3, 10, 20, seed=5, maestro_dir=maestro_dir)
    again = pool_prompts(3, 10, 20, seed=5, maestro_dir=maestro_dir)
    other = pool_prompts(3, 10, 20, seed=6, maestro_dir=maestro_dir)
    assert [p.prompt.source for p in first] == [p.prompt.source for p in again]
    assert [p.prompt.source for p in first] != [p.prompt.source for p in other]
    for entry, repeated in zip(first, again, strict=True):
        assert entry.prompt.source.startswith("maestro-test:")
        assert len(entry.real) and entry.real.duration <= 20.0
        assert np.array_equal(entry.prompt.tokens, repeated.prompt.tokens)


# --- the statistics ---

def test_bradley_terry_matches_hand_computed_strengths():
    # x beat y in 3 of 4: p_x / p_y = 3.
    games = [("x", "y", 1.0)] * 3 + [("x", "y", 0.0)]
    strengths = leaderboard.bradley_terry(games, ["x", "y"], prior_games=0)
    assert np.allclose(strengths, [np.log(3) / 2, -np.log(3) / 2])
    # A tie is half a win: 2 wins, 1 tie, 1 loss -> 2.5 : 1.5.
    games = [("x", "y", 1.0)] * 2 + [("x", "y", 0.5), ("y", "x", 1.0)]
    strengths = leaderboard.bradley_terry(games, ["x", "y"], prior_games=0)
    assert np.isclose(strengths[0] - strengths[1], np.log(2.5 / 1.5))
    # Three conditions: the fit solves the likelihood equations
    # wins_i = sum_j n_ij p_i / (p_i + p_j).
    games = ([("x", "y", 1.0)] * 4 + [("y", "x", 1.0)] + [("y", "z", 1.0)] * 3
             + [("z", "y", 1.0)] * 2 + [("x", "z", 1.0)] * 2 + [("z", "x", 0.5)])
    names = ["x", "y", "z"]
    p = np.exp(leaderboard.bradley_terry(games, names, prior_games=0))
    for i, name in enumerate(names):
        wins = sum(s if a == name else 1 - s for a, b, s in games if name in (a, b))
        expected = sum(p[i] / (p[i] + p[names.index(b if a == name else a)])
                       for a, b, s in games if name in (a, b))
        assert np.isclose(wins, expected)


def test_a_condition_that_always_wins_stays_finite():
    votes = [vote("real", "lstm", "a")] * 5
    board = leaderboard.leaderboard(votes, resamples=50)
    assert board[0]["condition"] == "real" and np.isfinite(board[0]["rating"])
    assert board[0]["win_rate"] == 1.0 and board[0]["votes"] == 5


def test_the_leaderboard_orders_and_brackets_its_estimates():
    votes = ([vote("real", "lstm", "a")] * 30 + [vote("real", "lstm", "b")] * 10
             + [vote("lstm", "greedy-lstm", "a")] * 30 + [vote("lstm", "greedy-lstm", "tie")] * 10)
    board = leaderboard.leaderboard(votes, resamples=200, seed=1)
    assert [row["condition"] for row in board] == ["real", "lstm", "greedy-lstm"]
    assert np.isclose(np.mean([row["rating"] for row in board]), 1000)  # geometric mean
    for row in board:
        assert row["ci"][0] < row["rating"] < row["ci"][1]
    assert board == leaderboard.leaderboard(votes, resamples=200, seed=1)  # seeded


def test_win_matrix_counts_ties_as_half():
    votes = [vote("x", "y", "a"), vote("y", "x", "a"), vote("x", "y", "tie"),
             vote("x", "y", "both_bad"), vote("x", "z", "b")]
    matrix = leaderboard.win_matrix(votes)
    assert matrix["x"]["y"] == {"rate": 0.5, "n": 4}  # 1 + 0 + 0.5 + 0.5 of 4
    assert matrix["z"]["x"] == {"rate": 1.0, "n": 1}
    assert matrix["y"]["z"] == {"rate": None, "n": 0}


def test_the_t_quantile_and_fisher_s_test_are_scipy_s():
    stats = pytest.importorskip("scipy.stats")  # a training dependency; the app has neither
    for df in (1, 2, 3, 4, 5, 9, 10, 30, 101, 2000):
        assert leaderboard.t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df),
                                                               rel=1e-12)
    rng = np.random.default_rng(0)
    for a, b, c, d in rng.integers(0, 25, (200, 4)):
        if a + b and c + d:
            assert leaderboard.fisher_exact(a, b, c, d) == pytest.approx(
                stats.fisher_exact([[a, b], [c, d]])[1], abs=1e-12)


def test_mean_scores_and_guesses_match_hand_computed_values():
    scores = leaderboard.mean_with_ci([3, 4, 5])
    # mean 4, sd 1, t(0.975, 2) = 4.302653: 4 -+ 4.302653 / sqrt(3)
    assert scores == {"mean": 4.0, "ci": [1.516, 6.484], "n": 3}
    assert leaderboard.mean_with_ci([3, 4, 5], scale=(1, 5))["ci"] == [1.516, 5.0]
    assert leaderboard.mean_with_ci([2])["ci"] is None
    # Real clips judged human 4 of 5, generated ones 1 of 5: Fisher's exact test on
    # [[4, 1], [1, 4]], two-sided: (2 * (C(5,4) C(5,1) + C(5,5) C(5,0))) / C(10,5) = 52 / 252.
    votes = ([vote("real", "lstm", "a", guess_a="human", guess_b="computer")] * 4
             + [vote("real", "lstm", "a", guess_a="computer", guess_b="human")]
             + [vote("lstm", "transformer", "a")])
    result = leaderboard.human_or_computer(votes)
    assert (result["hit_rate"], result["real_n"]) == (0.8, 5)
    assert (result["false_alarm_rate"], result["generated_n"]) == (0.2, 5)
    assert result["balanced_accuracy"] == 0.8
    assert np.isclose(result["p_value"], 52 / 252)
    assert result["judged_human"]["real"] == {"share": 0.8, "n": 5}
    assert result["judged_human"]["lstm"] == {"share": 0.2, "n": 5}
    # Always answering "computer" is right 75% of the time in a pool of 3 models and the
    # pianist, and tells nothing: no difference between the rates.
    always = [vote("real", "lstm", "a", guess_a="computer", guess_b="computer"),
              vote("transformer", "greedy-lstm", "a", guess_a="computer", guess_b="computer")]
    result = leaderboard.human_or_computer(always * 10)
    assert result["balanced_accuracy"] == 0.5 and result["p_value"] == 1.0
    assert leaderboard.human_or_computer([vote("lstm", "transformer", "a", guess_a="human")]
                                         )["p_value"] is None  # no real clip: no test


def test_ratings_summary_and_export_through_the_cli(tmp_path, capsys):
    db = tmp_path / "ratings.sqlite"
    store = RatingsStore(db)
    fake_pool(store)
    test = ListeningTest(store, tmp_path, min_listen_s=0, clock=StepClock())
    for k in range(12):
        pair = test.next_pair(f"rater-{k % 6}")  # 2 disjoint pairs per listener here
        heard(test, pair)
        test.vote(f"rater-{k % 6}", pair.token, "a", musical_a=4, musical_b=2,
                  guess_a="human")
    store.rate_clip("someone", {"model": "lstm"}, 5)
    chart = tmp_path / "board.svg"
    assert cli.main(["ratings", "summary", "--db", str(db), "--json", "--bootstrap", "100",
                     "--chart", str(chart)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["votes"] == 12 and result["raters"] == 6 and result["pool"] == "pool-1"
    assert sum(row["votes"] for row in result["leaderboard"]) == 24
    assert result["quick_ratings"] == {"lstm": {"mean": 5.0, "ci": None, "n": 1}}
    assert chart.stat().st_size > 1000
    assert "rater-0" not in json.dumps(result)  # aggregates only
    assert cli.main(["ratings", "summary", "--db", str(db)]) == 0
    text = capsys.readouterr().out
    assert "Pool pool-1: 12 votes from 6 listeners" in text and "Fewer than 30 votes" in text
    out, quick = tmp_path / "votes.csv", tmp_path / "quick.csv"
    assert cli.main(["ratings", "export", "--db", str(db), "--csv", str(out),
                     "--quick", str(quick)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 12 and {row["choice"] for row in rows} == {"a"}
    assert {row["musical_a"] for row in rows} == {"4"} and {row["pool"] for row in rows} == {
        "pool-1"}
    (quick_row,) = csv.DictReader(quick.open())
    assert quick_row["score"] == "5" and json.loads(quick_row["recipe"]) == {"model": "lstm"}


def test_listening_build_through_the_cli(tmp_path, capsys):
    tiny_checkpoint(tmp_path / "ckpt" / "lstm")
    db = tmp_path / "ratings.sqlite"
    assert cli.main(["listening", "build", "--checkpoints", str(tmp_path / "ckpt"),
                     "--prompts", "1", "--seconds", "5", "--db", str(db), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["conditions"] == ["greedy-lstm", "lstm"] and summary["clips"] == 2
    assert cli.main(["listening", "build", "--checkpoints", str(tmp_path / "ckpt"),
                     "--seconds", "500", "--db", str(db)]) == 1
    assert "pool clips last 5 to 60 s" in capsys.readouterr().err


def test_the_summary_counts_the_latest_pool_unless_asked_for_all(tmp_path):
    store = RatingsStore(tmp_path / "ratings.sqlite")
    test = ListeningTest(store, tmp_path, min_listen_s=0, clock=StepClock())
    fake_pool(store, pool="old")
    for k in range(3):
        pair = test.next_pair(f"r{k}")
        heard(test, pair)
        test.vote(f"r{k}", pair.token, "a")
    time.sleep(0.01)
    fake_pool(store, pool="new")  # rebuilt: other clips, maybe other models
    pair = test.next_pair("r9")
    heard(test, pair)
    test.vote("r9", pair.token, "b")
    assert leaderboard.summarise(store, resamples=0)["votes"] == 1
    assert leaderboard.summarise(store, resamples=0, all_pools=True)["votes"] == 4


@pytest.mark.parametrize("choice", ["a", "b"])
def test_a_vote_moves_the_leaderboard_its_way(choice):
    votes = [vote("x", "y", "tie")] * 4 + [vote("x", "y", choice)] * 4
    board = {row["condition"]: row["rating"] for row in
             leaderboard.leaderboard(votes, resamples=0)}
    assert (board["x"] > board["y"]) == (choice == "a")


def test_the_statistics_hold_for_large_samples():
    stats = pytest.importorskip("scipy.stats")
    # 1,200 judgments: the hypergeometric weights no longer fit in a float.
    assert leaderboard.fisher_exact(300, 300, 300, 300) == pytest.approx(1.0)
    assert leaderboard.fisher_exact(900, 300, 320, 800) == pytest.approx(
        stats.fisher_exact([[900, 300], [320, 800]])[1], rel=1e-9)
    for df in (2000, 2001, 5000, 200_000):  # either side of the switch to the expansion
        assert leaderboard.t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df),
                                                               rel=1e-12)


def _voter(rater: str, k: int, a: str, b: str, choice: str, waited: float | None = 20.0,
           address: str | None = None, account: str | None = None) -> dict:
    return vote(a, b, choice, token=f"{rater}-{k}", rater=rater, address=address,
                account=account, seconds_since_heard=None if waited is None else 10.0 + waited)


def test_votes_that_look_scripted_are_dropped_with_their_reason():
    rng = np.random.default_rng(0)
    people = [_voter(f"person-{p}", k, "lstm", "greedy-lstm", str(rng.choice(["a", "b"])),
                     waited=float(rng.uniform(5, 60)), address="class")
              for p in range(12) for k in range(5)]  # a classroom behind one address
    conditions = ["lstm", "greedy-lstm", "transformer"]
    scripts = {
        "not_heard": [_voter("skipper", k, "lstm", "transformer", "a", waited=None)
                      for k in range(3)],
        "at_the_floor": [_voter("fast", k, "lstm", "transformer", ["a", "b"][k % 2],
                                waited=0.4) for k in range(4)],
        "same_side": [_voter("lefty", k, conditions[k % 3], conditions[(k + 1) % 3], "a")
                      for k in range(8)],
        "same_condition": [_voter("anchor-fan", k, *(("greedy-lstm", "lstm") if k % 2 else
                                                     ("transformer", "greedy-lstm")),
                                  "a" if k % 2 else "b") for k in range(10)],
    }
    # Many listeners from one address, one or two votes each, always for the anchor.
    swarm = [_voter(f"bot-{k}", 0, "greedy-lstm", "lstm", "a", waited=30.0, address="bot-net")
             for k in range(20)]
    busy = [_voter("busy", k, "lstm", "transformer", ["a", "b", "tie"][k % 3])
            for k in range(45)]
    # One account from ten browsers, always the same side.
    account = [_voter(f"browser-{k}", 0, "lstm", "transformer", "b", account="hf:someone",
                      address=f"net-{k}") for k in range(10)]
    dropped = leaderboard.scripted_votes(
        people + busy + swarm + account + [v for group in scripts.values() for v in group],
        floor_s=10.0)
    assert {dropped.get(v["token"]) for v in account} == {"same_side"}
    assert not {v["token"] for v in people} & set(dropped)  # people are counted
    for reason, group in scripts.items():
        assert {dropped.get(v["token"]) for v in group} == {reason}, reason
    assert {dropped.get(v["token"]) for v in swarm} == {"same_condition"}
    assert [dropped.get(v["token"]) for v in busy] == [None] * 40 + ["too_many"] * 5
    # The same listener with fewer votes, or more varied ones, is counted.
    assert not leaderboard.scripted_votes(scripts["same_side"][:7], floor_s=10.0)
    assert not leaderboard.scripted_votes(scripts["at_the_floor"][:2], floor_s=10.0)


def test_the_summary_leaves_scripted_votes_out_and_says_how_many_and_why(tmp_path):
    store = RatingsStore(tmp_path / "ratings.sqlite")
    fake_pool(store, conditions=("lstm", "transformer", "greedy-lstm", "real"), prompts=8)
    honest = ListeningTest(store, tmp_path, min_listen_s=0, clock=StepClock(step=15.0))
    hasty = ListeningTest(store, tmp_path, min_listen_s=0, clock=StepClock(step=0.1))
    for k in range(6):
        pair = honest.next_pair(f"person-{k}")
        heard(honest, pair)
        honest.vote(f"person-{k}", pair.token, "tie")
    for _ in range(5):
        pair = hasty.next_pair("script")
        heard(hasty, pair)
        hasty.vote("script", pair.token, "a")
    result = leaderboard.summarise(store, resamples=0, floor_s=0.0, unfiltered=True)
    assert result["votes"] == 6 and result["dropped"] == {"at_the_floor": 5}
    assert result["unfiltered"]["votes"] == 11
    assert sum(row["votes"] for row in result["leaderboard"]) == 12
    text = leaderboard.format_summary(result)
    assert "Not counted, as they look scripted: 5 votes (5 votes as soon as the server" in text
    assert "Every vote, scripted-looking ones included (11)" in text
