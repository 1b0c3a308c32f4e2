"""The ratings database: constraints, concurrent votes, a killed writer, the old file's import."""

from __future__ import annotations

import hashlib
import json
import math
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import REPO, heard, tiny_checkpoint

from musicgen.errors import UserError
from musicgen.listening import Caps, ListeningTest, pool_dir
from musicgen.ratings import RatingsStore

UNCAPPED = Caps(10**6, 10**6, 10**6, 10**6)


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
    vote = "INSERT INTO votes (token, choice, created, seconds_since_served) VALUES (?, ?, ?, ?)"
    bad_rows = [
        (vote, (pair.token, "maybe", 0.0, 1.0)),
        (vote, (pair.token, "a", 0.0, -1.0)),
        (vote, ("f" * 32, "a", 0.0, 1.0)),  # not served
        ("INSERT INTO votes (token, choice, created, seconds_since_served, address) "
         "VALUES (?, ?, ?, ?, ?)", (pair.token, "a", 0.0, 1.0, "10.0.0.1")),  # not a hash
        ("INSERT INTO clip_links VALUES (?, ?, ?, ?)", ("d" * 32, pair.token, "c", None)),
        ("INSERT INTO raters VALUES (?, ?, ?, ?, ?)", ("r", 0.0, 200, None, None)),
        ("INSERT INTO raters VALUES (?, ?, ?, ?, ?)", ("r", 0.0, None, 2, None)),
        ("INSERT INTO raters VALUES (?, ?, ?, ?, ?)", ("r", 0.0, None, None, "")),
        ("INSERT INTO clip_ratings VALUES (?, ?, ?, ?, ?, ?, ?)",
         ("s", "0" * 64, 6, "", "{}", 0.0, 0.0)),
        ("INSERT INTO pairs VALUES (?, ?, ?, ?, ?)",
         ("e" * 32, "rater-1", "0" * 32, "0" * 32, 0.0)),  # a clip against itself
    ]
    for query, values in bad_rows:
        with pytest.raises(sqlite3.IntegrityError):
            raw.execute(query, values)
    raw.close()
    heard(test, pair)
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


def test_a_vote_needs_both_clips_downloaded_and_heard_and_takes_one_vote(store):
    fake_pool(store)
    test = ListeningTest(store, store.path.parent, min_listen_s=0.3)
    pair = test.next_pair("rater-1")
    time.sleep(0.65)  # long enough, but nothing was downloaded
    assert test.wait_left("rater-1", pair.token) == math.inf
    with pytest.raises(UserError, match="listen to both clips first"):
        test.vote("rater-1", pair.token, "a")
    test.heard(pair.links["a"])
    test.heard(pair.links["prompt"])  # the excerpt is not one of the two
    with pytest.raises(UserError, match="listen to both clips first"):
        test.vote("rater-1", pair.token, "a")
    test.heard(pair.links["b"])
    with pytest.raises(UserError, match="listen to both clips first"):
        test.vote("rater-1", pair.token, "a")  # both arrived, but just now
    with pytest.raises(UserError, match="not served to you"):
        test.vote("rater-2", pair.token, "a")  # someone else's pair
    with pytest.raises(UserError, match="not served to you"):
        test.vote("rater-1", "0" * 32, "a")  # a pair never served
    assert 0 < test.wait_left("rater-1", pair.token) <= test.listening_floor() == 0.6
    time.sleep(0.65)
    assert test.wait_left("rater-1", pair.token) == 0.0
    with pytest.raises(UserError, match="a vote is one of"):
        test.vote("rater-1", pair.token, "maybe")
    reveal = test.vote("rater-1", pair.token, "b", musical_a=4, guess_b="human",
                       address="192.0.2.7")
    assert {reveal.condition_a, reveal.condition_b} <= {"lstm", "transformer", "real"}
    assert not reveal.again
    again = test.vote("rater-1", pair.token, "b")  # a retry after a lost answer
    assert again.again and again.text == reveal.text
    with pytest.raises(UserError, match="already has your vote"):
        test.vote("rater-1", pair.token, "a")
    (vote,) = store.votes()
    assert vote["choice"] == "b" and vote["musical_a"] == 4 and vote["guess_b"] == "human"
    assert vote["musical_b"] is None and vote["seconds_since_served"] >= 1.2
    assert 0.6 <= vote["seconds_since_heard"] < vote["seconds_since_served"]
    assert vote["address"] == test.keys.address("192.0.2.7") and "192" not in vote["address"]


def test_a_clip_link_serves_its_own_listener_only_and_every_serving_differs(store):
    from musicgen.listening import serving_bytes

    fake_pool(store)
    test = ListeningTest(store, pool_dir(store.path), min_listen_s=0)
    pair = test.next_pair("rater-1")
    paths = {side: test.open_clip("rater-1", ticket) for side, ticket in pair.links.items()}
    assert len(set(paths.values())) == 3 and all(path.is_file() for path in paths.values())
    for rater, ticket in (("rater-2", pair.links["a"]), (None, pair.links["a"]),
                          ("rater-1", "0" * 32), ("rater-1", "../" * 10)):
        with pytest.raises(UserError, match="not yours to hear"):
            test.open_clip(rater, ticket)
    paths["a"].write_bytes(bytes(range(256)) * 40)  # the fake pool's files are empty
    servings = [serving_bytes(paths["a"], test.keys.serving_seed(ticket))
                for ticket in [pair.links["a"]] * 2 + [f"{k:032x}" for k in range(20)]]
    assert servings[0] == servings[1]  # one link, one file: its byte ranges fit together
    assert len({hashlib.sha256(serving).digest() for serving in servings}) == 21
    assert len({len(serving) for serving in servings}) > 10  # the size says nothing either


def test_a_serving_sounds_the_same_in_other_bytes_all_through(tmp_path):
    import soundfile

    from musicgen.audio import Rendering, write_compressed
    from musicgen.listening import serving_bytes

    rate = 44100
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * rate) / rate)
    clip = write_compressed(tmp_path / "clip.mp3", Rendering(
        np.stack([tone, tone], axis=1).astype(np.float32), rate, "numpy-fallback", None, 3.0,
        -10.0), "mp3", mono=True)
    one, two = serving_bytes(clip, b"one"), serving_bytes(clip, b"two")
    tags = [sum(byte << shift for byte, shift in zip(serving[6:10], (21, 14, 7, 0),
                                                      strict=True)) + 10
            for serving in (one, two)]
    original = clip.read_bytes()
    body_one, body_two = one[tags[0]:], two[tags[1]:]
    assert one[:3] == two[:3] == b"ID3" and len(body_one) == len(original)
    # Not just the tag: frames all through the file differ, so no stretch hashes alike.
    differ = [i for i in range(len(original)) if body_one[i] != body_two[i]]
    assert len(differ) > 20 and differ[-1] > len(original) * 0.9
    decoded = []
    for name, serving in (("one", one), ("two", two), ("original", original)):
        (tmp_path / f"{name}.mp3").write_bytes(serving)
        decoded.append(soundfile.read(tmp_path / f"{name}.mp3")[0])
    assert np.array_equal(decoded[0], decoded[2]) and np.array_equal(decoded[1], decoded[2])


def test_a_clip_counts_as_heard_once_every_byte_went_out_in_any_ranges(store):
    fake_pool(store)
    test = ListeningTest(store, pool_dir(store.path), min_listen_s=0)
    pair = test.next_pair("rater-1")
    ticket = pair.links["a"]
    test.sent(ticket, 0, 2, 1000)  # Safari's probe
    test.sent(ticket, 500, 1000, 1000)
    assert store.clip_link(ticket)["fetched"] is None
    test.sent(ticket, 1, 600, 1000)
    assert store.clip_link(ticket)["fetched"] is not None
    other = pair.links["b"]
    test.sent(other, 0, 999, 1000)  # cut short by one byte
    assert store.clip_link(other)["fetched"] is None


def test_pairs_and_votes_are_capped_per_listener_and_per_address(store):
    from conftest import StepClock

    fake_pool(store, conditions=[f"c{k}" for k in range(8)], prompts=4)
    clock = StepClock(step=0.5)
    test = ListeningTest(store, store.path.parent, min_listen_s=0,
                         caps=Caps(pairs_per_minute=3, votes_per_hour=4,
                                   address_pairs_per_minute=5, address_votes_per_hour=6),
                         clock=clock)
    pairs = [test.next_pair("one", address="a1") for _ in range(3)]
    with pytest.raises(UserError, match="many pairs in the last minute"):
        test.next_pair("one", address="a1")
    pairs += [test.next_pair("two", address="a1") for _ in range(2)]
    with pytest.raises(UserError, match="from your network"):
        test.next_pair("three", address="a1")
    assert test.next_pair("three", address="a2")  # another address is not held up
    clock.now += 61
    pairs += [test.next_pair("one", address="a1") for _ in range(3)]
    for pair in pairs[:4]:
        heard(test, pair)
    for pair in pairs[:3]:
        test.vote("one", pair.token, "a", address="a1")
    pair_of_one = pairs[5]
    heard(test, pair_of_one)
    test.vote("one", pair_of_one.token, "b", address="a1")  # the fourth in the hour
    heard(test, pairs[6])
    with pytest.raises(UserError, match="voted many times in the last hour"):
        test.vote("one", pairs[6].token, "a", address="a1")
    test.vote("two", pairs[3].token, "a", address="a1")
    heard(test, pairs[4])
    test.vote("two", pairs[4].token, "a", address="a1")  # the address's sixth
    extra = test.next_pair("two", address="a1")
    heard(test, extra)
    with pytest.raises(UserError, match="many votes came from your network"):
        test.vote("two", extra.token, "a", address="a1")
    assert test.vote("two", extra.token, "a", address="a4")  # from elsewhere: taken
    assert store.vote_count() == 7


def test_listener_ids_are_signed_and_outlive_the_process(tmp_path):
    from musicgen.listening import ListenerKeys

    keys = ListenerKeys(tmp_path / "listener.key")
    cookie = keys.new_listener()
    listener = keys.listener(cookie)
    assert listener is not None and len(listener) == 32 and cookie.startswith(listener)
    assert ListenerKeys(tmp_path / "listener.key").listener(cookie) == listener  # a restart
    assert (tmp_path / "listener.key").stat().st_mode & 0o077 == 0  # the owner's only
    forged = ("f" * 32) + cookie[32:]
    for bad in (forged, cookie[:-1] + ("0" if cookie[-1] != "0" else "1"), listener, "", None,
                "x" * 500):
        assert keys.listener(bad) is None
    assert ListenerKeys(tmp_path / "other.key").listener(cookie) is None
    assert keys.listener(listener + ".é" + cookie[34:]) is None  # not ASCII: refused, not 500
    (tmp_path / "empty.key").write_bytes(b"")  # a key file cut short would sign with nothing
    with pytest.raises(UserError, match="is not a listener key"):
        ListenerKeys(tmp_path / "empty.key")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty.key", "listener.key",
                                                                 "other.key"]  # no drafts
    assert keys.address("192.0.2.1") == keys.address("192.0.2.1") != keys.address("192.0.2.2")


def test_pairs_never_voted_on_are_forgotten_and_the_lookups_are_indexed(store):
    fake_pool(store)
    test = ListeningTest(store, store.path.parent, min_listen_s=0)
    kept, dropped = test.next_pair("rater-1"), test.next_pair("rater-1")
    heard(test, kept)
    heard(test, dropped)
    test.vote("rater-1", kept.token, "a")
    assert store.forget_pairs_not_voted(time.time() - 3600) == 0  # both younger
    assert store.forget_pairs_not_voted(time.time() + 1) == 1  # the unvoted one
    assert store.served_pair(dropped.token) is None and store.served_pair(kept.token)
    assert store.clip_link(dropped.links["a"]) is None  # its links went with it
    assert store.clip_link(kept.links["a"])["side"] == "a"
    assert len(store.votes()) == 1
    with pytest.raises(UserError, match="not served to you"):
        test.vote("rater-1", dropped.token, "a")
    for query, args in (("SELECT clip_a, clip_b FROM pairs WHERE rater = ?", ("r",)),
                        ("SELECT id FROM prompts WHERE pool = ?", ("p",)),
                        ("SELECT token FROM pairs WHERE served < ?", (0.0,)),
                        ("SELECT ticket FROM clip_links WHERE token = ?", ("t",))):
        plan = " ".join(str(row) for row in store._read(f"EXPLAIN QUERY PLAN {query}", args))
        assert "USING" in plan and "INDEX" in plan, (query, plan)  # not a full scan


def test_pairs_are_balanced_and_never_replay_a_revealed_clip(store):
    fake_pool(store, conditions=("a", "b", "c", "d"), prompts=3)
    test = ListeningTest(store, store.path.parent, min_listen_s=0, caps=UNCAPPED)
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
        heard(test, pair)
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
                    ratings_path=tmp_path / "var" / "ratings.sqlite", min_listen_s=0,
                    caps=UNCAPPED)
    fake_pool(studio.ratings, conditions=[f"c{k}" for k in range(11)], prompts=10)  # 50 pairs each
    confirmed, failures = [], []

    def listener(k: int) -> None:
        try:
            for _ in range(50):
                pair = studio.next_pair(f"rater-{k}")
                heard(studio.listening, pair)
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
from conftest import heard
from test_ratings import UNCAPPED, fake_pool
from musicgen.listening import ListeningTest, pool_dir
from musicgen.ratings import RatingsStore
store = RatingsStore({db!r})
fake_pool(store, conditions=[f"c{{k}}" for k in range(30)], prompts=20)
test = ListeningTest(store, store.path.parent, min_listen_s=0, caps=UNCAPPED)
while True:
    pair = test.next_pair("rater-1")
    heard(test, pair)
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


def test_where_sign_in_is_required_only_accounts_get_pairs_and_their_caps_span_browsers(store):
    fake_pool(store, conditions=[f"c{k}" for k in range(6)], prompts=3)
    test = ListeningTest(store, store.path.parent, min_listen_s=0, require_account=True,
                         caps=Caps(pairs_per_minute=2, votes_per_hour=60))
    with pytest.raises(UserError, match="sign in with Hugging Face first"):
        test.next_pair("browser-1")
    first = test.next_pair("browser-1", account="hf:ana")
    test.next_pair("browser-2", account="hf:ana")  # the same person in another browser
    with pytest.raises(UserError, match="many pairs in the last minute"):
        test.next_pair("browser-3", account="hf:ana")
    assert test.next_pair("browser-3", account="hf:ben")
    heard(test, first)
    with pytest.raises(UserError, match="sign in with Hugging Face first"):
        test.vote("browser-1", first.token, "a")
    test.vote("browser-1", first.token, "a", account="hf:ana")
    (vote,) = store.votes()
    assert vote["account"] == "hf:ana" and vote["rater"] == "browser-1"
