"""The ratings database: constraints, concurrent votes, a killed writer, the old file's import."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from conftest import REPO, tiny_checkpoint

from musicgen.errors import UserError
from musicgen.listening import ListeningTest, pool_dir
from musicgen.ratings import RatingsStore


def fake_pool(store: RatingsStore, conditions=("lstm", "transformer", "real"), prompts=2,
              pool: str = "pool-1") -> None:
    """A pool in the database only (no audio is needed to serve and vote)."""
    def ids(*parts) -> str:  # 32 hex digits, distinct between pools
        return hashlib.md5("/".join(map(str, (pool, *parts))).encode()).hexdigest()

    prompt_rows = [{"id": ids(k), "source": f"example:{k}", "audio": f"{pool}/p{k}.mp3",
                    "seconds": 10.0} for k in range(prompts)]
    clips = [{"id": ids(k, c), "prompt": ids(k), "condition": name,
              "is_real": name == "real", "recipe": {"condition": name},
              "audio": f"{pool}/{k}-{c}.mp3", "audio_sha256": "0" * 64, "seconds": 20.0}
             for k in range(prompts) for c, name in enumerate(conditions)]
    store.add_pool(pool, {"test": True}, prompt_rows, clips)
    folder = pool_dir(store.path) / pool  # placeholder files, for the studio to link
    folder.mkdir(parents=True, exist_ok=True)
    for row in (*prompt_rows, *clips):
        (pool_dir(store.path) / row["audio"]).touch()


@pytest.fixture
def store(tmp_path):
    store = RatingsStore(tmp_path / "ratings.sqlite")
    yield store
    store.close()


def test_constraints_refuse_values_out_of_range(store):
    fake_pool(store)
    test = ListeningTest(store, store.path.parent, min_listen_s=0)
    pair = test.next_pair("rater-1")
    raw = sqlite3.connect(store.path)
    raw.execute("PRAGMA foreign_keys=ON")
    bad_rows = [
        ("INSERT INTO votes VALUES (?, ?, ?, ?)", (pair.token, "maybe", 0.0, 1.0)),
        ("INSERT INTO votes VALUES (?, ?, ?, ?)", (pair.token, "a", 0.0, -1.0)),
        ("INSERT INTO votes VALUES (?, ?, ?, ?)", ("f" * 32, "a", 0.0, 1.0)),  # not served
        ("INSERT INTO raters VALUES (?, ?, ?, ?)", ("r", 0.0, 200, None)),
        ("INSERT INTO raters VALUES (?, ?, ?, ?)", ("r", 0.0, None, 2)),
        ("INSERT INTO clip_ratings VALUES (?, ?, ?, ?, ?, ?, ?)",
         ("s", "0" * 64, 6, "", "{}", 0.0, 0.0)),
        ("INSERT INTO pairs VALUES (?, ?, ?, ?, ?)",
         ("e" * 32, "rater-1", "0" * 32, "0" * 32, 0.0)),  # a clip against itself
    ]
    for query, values in bad_rows:
        with pytest.raises(sqlite3.IntegrityError):
            raw.execute(query, values)
    raw.close()
    test.vote("rater-1", pair.token, "a")
    raw = sqlite3.connect(store.path)
    raw.execute("PRAGMA foreign_keys=ON")
    with pytest.raises(sqlite3.IntegrityError):  # a score must be 1-5
        raw.execute("INSERT INTO scores VALUES (?, ?, ?, ?)",
                    (pair.token, "0" * 32, 0, None))
    raw.close()
    with pytest.raises(UserError, match="1 to 5"):
        store.rate_clip("s", {"model": "lstm"}, 6)
    with pytest.raises(UserError, match="between 0 and 80"):
        store.add_rater("r", training_years=-1)


def test_a_vote_needs_the_served_pair_once_and_after_listening(store):
    fake_pool(store)
    test = ListeningTest(store, store.path.parent, min_listen_s=0.3)
    pair = test.next_pair("rater-1")
    with pytest.raises(UserError, match="listen to both clips first"):
        test.vote("rater-1", pair.token, "a")
    with pytest.raises(UserError, match="not served to you"):
        test.vote("rater-2", pair.token, "a")  # someone else's pair
    with pytest.raises(UserError, match="not served to you"):
        test.vote("rater-1", "0" * 32, "a")  # a pair never served
    assert test.wait_left("rater-1", pair.token) > 0
    time.sleep(0.35)
    assert test.wait_left("rater-1", pair.token) == 0.0
    with pytest.raises(UserError, match="a vote is one of"):
        test.vote("rater-1", pair.token, "maybe")
    reveal = test.vote("rater-1", pair.token, "b", musical_a=4, guess_b="human")
    assert {reveal.condition_a, reveal.condition_b} <= {"lstm", "transformer", "real"}
    with pytest.raises(UserError, match="already has your vote"):
        test.vote("rater-1", pair.token, "a")
    (vote,) = store.votes()
    assert vote["choice"] == "b" and vote["musical_a"] == 4 and vote["guess_b"] == "human"
    assert vote["musical_b"] is None and vote["seconds_since_served"] >= 0.3


def test_pairs_never_voted_on_are_forgotten_and_the_lookups_are_indexed(store):
    fake_pool(store)
    test = ListeningTest(store, store.path.parent, min_listen_s=0)
    kept, dropped = test.next_pair("rater-1"), test.next_pair("rater-1")
    test.vote("rater-1", kept.token, "a")
    assert store.forget_pairs_not_voted(time.time() - 3600) == 0  # both younger
    assert store.forget_pairs_not_voted(time.time() + 1) == 1  # the unvoted one
    assert store.served_pair(dropped.token) is None and store.served_pair(kept.token)
    assert len(store.votes()) == 1
    with pytest.raises(UserError, match="not served to you"):
        test.vote("rater-1", dropped.token, "a")
    for query, args in (("SELECT clip_a, clip_b FROM pairs WHERE rater = ?", ("r",)),
                        ("SELECT id FROM prompts WHERE pool = ?", ("p",)),
                        ("SELECT token FROM pairs WHERE served < ?", (0.0,))):
        plan = " ".join(str(row) for row in store._read(f"EXPLAIN QUERY PLAN {query}", args))
        assert "USING" in plan and "INDEX" in plan, (query, plan)  # not a full scan


def test_pairs_are_balanced_and_never_replay_a_revealed_clip(store):
    fake_pool(store, conditions=("a", "b", "c", "d"), prompts=3)
    test = ListeningTest(store, store.path.parent, min_listen_s=0)
    skipped = test.next_pair("rater-1")  # served, not voted on: its clips stay unrevealed
    revealed, pairs = set(), []
    while True:
        try:
            pair = test.next_pair("rater-1")
        except UserError as error:
            assert "heard every pair" in str(error)
            break
        served = store.served_pair(pair.token)
        assert not {served["clip_a"], served["clip_b"]} & revealed
        test.vote("rater-1", pair.token, "tie")
        revealed |= {served["clip_a"], served["clip_b"]}
        pairs.append(frozenset((served["condition_a"], served["condition_b"])))
    # 4 conditions: two disjoint pairs per prompt, 3 prompts; one fewer when the pair
    # left over on the skipped pair's prompt is the skipped pair itself.
    assert len(pairs) in (5, 6)
    assert skipped.token not in {v["token"] for v in store.votes()}
    counts = sorted(store.pair_counts("pool-1").values())
    assert sum(counts) == len(pairs) and counts[-1] - counts[0] <= 1  # balanced
    assert test.next_pair("rater-2").token  # another listener starts afresh


def test_no_pool_is_a_plain_message(store):
    with pytest.raises(UserError, match="listening build"):
        ListeningTest(store, store.path.parent).next_pair("rater-1")


def test_twenty_threads_of_fifty_votes_lose_none(tmp_path):
    from musicgen.studio import Studio

    tiny_checkpoint(tmp_path / "checkpoints" / "lstm")
    studio = Studio(tmp_path / "checkpoints", output_dir=tmp_path / "outputs",
                    ratings_path=tmp_path / "var" / "ratings.sqlite", min_listen_s=0)
    fake_pool(studio.ratings, conditions=[f"c{k}" for k in range(11)], prompts=10)  # 50 pairs each
    confirmed, failures = [], []

    def listener(k: int) -> None:
        try:
            for _ in range(50):
                pair = studio.next_pair(f"rater-{k}")
                studio.vote(f"rater-{k}", pair.token, "a", musical_a="3", guess_b="computer")
                confirmed.append(pair.token)
        except Exception as error:  # noqa: BLE001 - reported below
            failures.append(repr(error))

    threads = [threading.Thread(target=listener, args=(k,)) for k in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    votes = studio.ratings.votes()
    assert len(confirmed) == len(votes) == 1000
    assert {vote["token"] for vote in votes} == set(confirmed)
    assert all(vote["musical_a"] == 3 and vote["guess_b"] == "computer" for vote in votes)
    assert studio.ratings.integrity() == "ok"


WRITER = """
import sys
import musicgen  # first: under CI=true pyfluidsynth prints to stdout unless musicgen imports it
sys.path.insert(0, {tests!r})
from test_ratings import fake_pool
from musicgen.listening import ListeningTest, pool_dir
from musicgen.ratings import RatingsStore
store = RatingsStore({db!r})
fake_pool(store, conditions=[f"c{{k}}" for k in range(30)], prompts=20)
test = ListeningTest(store, store.path.parent, min_listen_s=0)
while True:
    pair = test.next_pair("rater-1")
    test.vote("rater-1", pair.token, "a", musical_a=5)
    print(pair.token, flush=True)  # confirmed: vote() returned
"""


def test_a_writer_killed_mid_run_leaves_a_sound_database_with_every_confirmed_vote(tmp_path):
    db = tmp_path / "ratings.sqlite"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(tests=str(REPO / "tests"), db=str(db))],
        stdout=subprocess.PIPE, text=True, cwd=REPO)
    confirmed = []
    try:
        for line in writer.stdout:
            confirmed.append(line.strip())
            if len(confirmed) == 200:
                break
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL and len(confirmed) == 200
    confirmed += [line.strip() for line in writer.stdout]  # printed before the kill landed
    store = RatingsStore(db)
    assert store.integrity() == "ok"
    stored = {vote["token"] for vote in store.votes()}
    assert set(confirmed) <= stored  # nothing confirmed is lost
    assert len(stored - set(confirmed)) <= 1  # at most the vote committed as the kill came


def test_the_old_ratings_file_is_imported_once(tmp_path):
    old = tmp_path / "outputs" / "ratings.jsonl"
    old.parent.mkdir()
    records = [{"time": 1.0, "session": "s1", "score": 4, "comment": "nice",
                "recipe": {"model": "lstm", "seed": 1}},
               {"time": 2.0, "session": "s2", "score": 2, "recipe": {"model": "transformer"}}]
    old.write_text("\n".join(json.dumps(r) for r in records) + "\nnot json\n")
    store = RatingsStore(tmp_path / "var" / "ratings.sqlite")
    assert store.import_jsonl(old) == 2
    assert store.import_jsonl(old) == 0  # once
    rows = store.clip_ratings()
    assert [(r["session"], r["score"], r["comment"]) for r in rows] == [
        ("s1", 4, "nice"), ("s2", 2, "")]
    assert rows[0]["recipe"] == {"model": "lstm", "seed": 1}


def test_the_studio_moves_the_old_file_out_of_the_served_folder(tmp_path):
    from musicgen.studio import Studio

    tiny_checkpoint(tmp_path / "checkpoints" / "lstm")
    old = tmp_path / "outputs" / "ratings.jsonl"
    old.parent.mkdir()
    old.write_text(json.dumps({"time": 1.0, "session": "s1", "score": 5, "recipe": {}}) + "\n")
    studio = Studio(tmp_path / "checkpoints", output_dir=tmp_path / "outputs",
                    ratings_path=tmp_path / "var" / "ratings.sqlite")
    assert not old.exists()
    assert [r["score"] for r in studio.ratings.clip_ratings()] == [5]


def test_a_database_from_schema_1_is_upgraded_in_place(tmp_path):
    path = tmp_path / "ratings.sqlite"
    raw = sqlite3.connect(path)
    raw.executescript("""CREATE TABLE clip_ratings (session TEXT NOT NULL, clip_id TEXT NOT
        NULL, score INTEGER NOT NULL, comment TEXT NOT NULL DEFAULT '', recipe TEXT NOT NULL,
        created REAL NOT NULL, updated REAL NOT NULL, PRIMARY KEY (session, clip_id));
        INSERT INTO clip_ratings VALUES ('s', '""" + "a" * 64 + """', 3, '', '{}', 1, 1);
        PRAGMA user_version=1;""")
    raw.close()
    store = RatingsStore(path)
    assert [r["score"] for r in store.clip_ratings()] == [3]
    assert store.vote_count() == 0


def test_a_file_that_is_not_a_database_is_a_plain_message(tmp_path):
    path = tmp_path / "ratings.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UserError, match="not a usable ratings database"):
        RatingsStore(path)
