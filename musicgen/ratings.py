"""The ratings database: listeners, the listening pool, pairs served, votes and scores.

Everything people say about clips is kept here, in one SQLite file at, in order:
`$MUSICGEN_RATINGS_DB`; `/data/musicgen/ratings.sqlite` where `/data` is
writable (a Hugging Face Space's persistent storage); else `var/ratings.sqlite`
under the project root (git-ignored, and outside `tmp/`, which `make clean`
deletes and the app serves). The app never serves this file.

Two kinds of judgement live side by side and are never mixed:
- the *blind listening test* (`musicgen.listening`): raters, the clips of a
  pool with their conditions, the pairs each rater was served, one vote per
  pair and optional 1-5 "how musical" scores and "human or computer?" guesses;
- the *quick ratings* under the Generate tab's clips (`clip_ratings`): not
  blind, since the rater chose the model, so reported apart.

Every write is one transaction, committed before the method returns (WAL mode,
`synchronous=FULL`), so a confirmed vote survives the process being killed.
Only parameterised queries are used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from musicgen.errors import UserError
from musicgen.resources import resource_root

log = logging.getLogger(__name__)

RATINGS_ENV = "MUSICGEN_RATINGS_DB"
SPACE_DATA_DIR = Path("/data")
SCHEMA_VERSION = 3
CHOICES = ("a", "b", "tie", "both_bad")
# Seconds each clip of a pair must play before a vote; a vote waits for both, one after
# the other, from the later one's full download (`musicgen.listening`).
MIN_LISTEN_SECONDS = 5.0


def listening_floor(min_listen_s: float = MIN_LISTEN_SECONDS) -> float:
    """Seconds from the later clip's full download to the earliest vote: each clip's
    `min_listen_s`, one after the other."""
    return 2 * min_listen_s
GUESSES = ("human", "computer")
SCHEMA = """
CREATE TABLE IF NOT EXISTS raters (
    id TEXT PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 100),
    created REAL NOT NULL,
    training_years INTEGER CHECK (training_years IS NULL OR training_years BETWEEN 0 AND 80),
    headphones INTEGER CHECK (headphones IS NULL OR headphones IN (0, 1)),
    -- The Hugging Face account signed in with, where the app asks for one.
    account TEXT CHECK (account IS NULL OR length(account) BETWEEN 1 AND 100)
);
CREATE TABLE IF NOT EXISTS pools (
    id TEXT PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 64),
    created REAL NOT NULL,
    settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS prompts (
    id TEXT PRIMARY KEY CHECK (length(id) = 32),
    pool TEXT NOT NULL REFERENCES pools (id),
    source TEXT NOT NULL CHECK (length(source) BETWEEN 1 AND 300),
    audio TEXT NOT NULL,
    seconds REAL NOT NULL CHECK (seconds >= 0)
);
CREATE TABLE IF NOT EXISTS clips (
    id TEXT PRIMARY KEY CHECK (length(id) = 32),
    prompt TEXT NOT NULL REFERENCES prompts (id),
    condition TEXT NOT NULL CHECK (length(condition) BETWEEN 1 AND 64),
    is_real INTEGER NOT NULL CHECK (is_real IN (0, 1)),
    recipe TEXT NOT NULL,
    audio TEXT NOT NULL,
    audio_sha256 TEXT NOT NULL CHECK (length(audio_sha256) = 64),
    seconds REAL NOT NULL CHECK (seconds > 0),
    UNIQUE (prompt, condition)
);
CREATE TABLE IF NOT EXISTS pairs (
    token TEXT PRIMARY KEY CHECK (length(token) = 32),
    rater TEXT NOT NULL REFERENCES raters (id),
    clip_a TEXT NOT NULL REFERENCES clips (id),
    clip_b TEXT NOT NULL REFERENCES clips (id),
    served REAL NOT NULL,
    CHECK (clip_a <> clip_b)
);
CREATE TABLE IF NOT EXISTS votes (
    token TEXT PRIMARY KEY REFERENCES pairs (token),
    choice TEXT NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'both_bad')),
    created REAL NOT NULL,
    seconds_since_served REAL NOT NULL CHECK (seconds_since_served >= 0),
    -- From the later of the two clips' full download to the vote (NULL before schema 3).
    seconds_since_heard REAL CHECK (seconds_since_heard IS NULL OR seconds_since_heard >= 0),
    -- A keyed hash of the voter's network address (never the address itself).
    address TEXT CHECK (address IS NULL OR length(address) = 16)
);
-- One link per file of a served pair: the only way its audio reaches a browser.
CREATE TABLE IF NOT EXISTS clip_links (
    ticket TEXT PRIMARY KEY CHECK (length(ticket) = 32),
    token TEXT NOT NULL REFERENCES pairs (token) ON DELETE CASCADE,
    side TEXT NOT NULL CHECK (side IN ('prompt', 'a', 'b')),
    fetched REAL,
    UNIQUE (token, side)
);
CREATE TABLE IF NOT EXISTS scores (
    token TEXT NOT NULL REFERENCES votes (token),
    clip TEXT NOT NULL REFERENCES clips (id),
    musical INTEGER CHECK (musical IS NULL OR musical BETWEEN 1 AND 5),
    guess TEXT CHECK (guess IS NULL OR guess IN ('human', 'computer')),
    PRIMARY KEY (token, clip),
    CHECK (musical IS NOT NULL OR guess IS NOT NULL)
);
CREATE TABLE IF NOT EXISTS clip_ratings (
    session TEXT NOT NULL CHECK (length(session) BETWEEN 1 AND 100),
    clip_id TEXT NOT NULL CHECK (length(clip_id) = 64),
    score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
    comment TEXT NOT NULL DEFAULT '' CHECK (length(comment) <= 500),
    recipe TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (session, clip_id)
);
-- What the pair and vote paths look up: a listener's pairs, a pool's prompts, old pairs.
CREATE INDEX IF NOT EXISTS pairs_by_rater ON pairs (rater);
CREATE INDEX IF NOT EXISTS pairs_by_served ON pairs (served);
CREATE INDEX IF NOT EXISTS prompts_by_pool ON prompts (pool);
CREATE INDEX IF NOT EXISTS clip_links_by_token ON clip_links (token);
CREATE TABLE IF NOT EXISTS imports (
    source_sha256 TEXT PRIMARY KEY CHECK (length(source_sha256) = 64),
    source TEXT NOT NULL,
    rows INTEGER NOT NULL,
    created REAL NOT NULL
);
"""
VOTE_COLUMNS = ("token", "rater", "pool", "prompt", "source", "condition_a", "condition_b",
                "choice", "seconds_since_served", "voted", "musical_a", "musical_b",
                "guess_a", "guess_b", "real_a", "real_b", "training_years", "headphones",
                "seconds_since_heard", "address", "account")
# Columns added to existing tables since schema 2 (CREATE TABLE IF NOT EXISTS keeps old ones).
ADDED_COLUMNS = {"raters": ("account TEXT CHECK (account IS NULL OR length(account) BETWEEN 1 "
                            "AND 100)",),
                 "votes": ("seconds_since_heard REAL CHECK (seconds_since_heard IS NULL OR "
                           "seconds_since_heard >= 0)",
                           "address TEXT CHECK (address IS NULL OR length(address) = 16)")}


def default_ratings_path() -> Path:
    """Where ratings are kept (see the module docstring)."""
    if value := os.environ.get(RATINGS_ENV):
        return Path(value).expanduser()
    if SPACE_DATA_DIR.is_dir() and os.access(SPACE_DATA_DIR, os.W_OK):
        return SPACE_DATA_DIR / "musicgen" / "ratings.sqlite"
    return resource_root() / "var" / "ratings.sqlite"


def recipe_id(recipe: dict) -> str:
    """An opaque, stable id for the clip a recipe makes (the quick ratings' clip_id)."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


class RatingsStore:
    """The ratings database; one connection, safe to share between threads.

    Args:
        path: The SQLite file (created with its folder if missing); None:
            `default_ratings_path()`.

    Raises:
        UserError: The file was written by a newer schema, or is not a database.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_ratings_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Autocommit mode: transactions are opened explicitly in `_write`.
        self._connection = sqlite3.connect(self.path, check_same_thread=False,
                                           isolation_level=None, timeout=30)
        try:
            with self._lock:
                mode = self._connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode != "wal":  # e.g. on a network file system
                    log.warning("%s: SQLite would not use WAL (journal mode %s); readers "
                                "may wait for writers", self.path, mode)
                self._connection.execute("PRAGMA synchronous=FULL")
                self._connection.execute("PRAGMA foreign_keys=ON")
                version = self._connection.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise UserError(f"{self.path} was written by a newer musicgen "
                                    f"(schema {version}); use that version or another file")
                # v1 had clip_ratings only; v2 adds the listening test's tables; v3 the
                # clips' links and what each vote's listener fetched.
                self._connection.executescript(SCHEMA)
                # One transaction: of two processes opening an old file at once, the second
                # finds the columns the first added.
                self._connection.execute("BEGIN IMMEDIATE")
                for table, columns in ADDED_COLUMNS.items():
                    have = {row[1] for row in self._connection.execute(
                        f"PRAGMA table_info({table})")}
                    for column in columns:
                        if column.split()[0] not in have:
                            self._connection.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
                self._connection.execute("CREATE INDEX IF NOT EXISTS raters_by_account ON "
                                         "raters (account)")  # a column old files lacked
                self._connection.execute("COMMIT")
                self._connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as error:
            self._connection.close()
            raise UserError(f"{self.path} is not a usable ratings database ({error})") from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction, committed on leaving (rolled back on an exception)."""
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
                self._connection.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (disk full) leaves the transaction open, which would
                # refuse every later BEGIN; SQLite may also have rolled back already.
                if self._connection.in_transaction:
                    self._connection.execute("ROLLBACK")
                raise

    def _read(self, query: str, parameters: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._connection.execute(query, parameters).fetchall()

    # --- listeners ---

    def add_rater(self, rater: str, training_years: int | None = None,
                  headphones: bool | None = None, account: str | None = None) -> None:
        """Record a listener (again: their self-report and account are updated where given).

        Raises:
            UserError: Years of training outside 0-80.
        """
        if training_years is not None and not 0 <= training_years <= 80:
            raise UserError(f"Years of musical training must be between 0 and 80, not "
                            f"{training_years}")
        with self._write() as db:
            db.execute("INSERT INTO raters (id, created, training_years, headphones, account) "
                       "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                       "training_years = coalesce(excluded.training_years, training_years), "
                       "headphones = coalesce(excluded.headphones, headphones), "
                       "account = coalesce(excluded.account, account)",
                       (rater, time.time(), training_years,
                        None if headphones is None else int(headphones), account))

    # --- the listening pool ---

    def add_pool(self, pool: str, settings: dict, prompts: list[dict],
                 clips: list[dict]) -> None:
        """Store a whole listening pool in one transaction (all of it or nothing).

        Args:
            pool: Its id.
            settings: How it was built (recorded as JSON).
            prompts: Dicts with id, source, audio (file name), seconds.
            clips: Dicts with id, prompt, condition, is_real, recipe (dict),
                audio (file name), audio_sha256, seconds.
        """
        with self._write() as db:
            db.execute("INSERT INTO pools (id, created, settings) VALUES (?, ?, ?)",
                       (pool, time.time(), json.dumps(settings)))
            db.executemany("INSERT INTO prompts (id, pool, source, audio, seconds) "
                           "VALUES (?, ?, ?, ?, ?)",
                           [(p["id"], pool, p["source"], p["audio"], p["seconds"])
                            for p in prompts])
            db.executemany("INSERT INTO clips (id, prompt, condition, is_real, recipe, audio, "
                           "audio_sha256, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           [(c["id"], c["prompt"], c["condition"], int(c["is_real"]),
                             json.dumps(c["recipe"]), c["audio"], c["audio_sha256"],
                             c["seconds"]) for c in clips])

    def latest_pool(self) -> str | None:
        """The id of the pool built last, or None."""
        rows = self._read("SELECT id FROM pools ORDER BY created DESC, rowid DESC LIMIT 1")
        return rows[0][0] if rows else None

    def pool_clips(self, pool: str) -> list[dict]:
        """The clips of a pool with their prompts (conditions included: server side only)."""
        rows = self._read(
            "SELECT c.id, c.prompt, c.condition, c.is_real, c.audio, c.seconds, p.source, "
            "p.audio FROM clips c JOIN prompts p ON p.id = c.prompt WHERE p.pool = ? "
            "ORDER BY p.rowid, c.rowid", (pool,))
        names = ("id", "prompt", "condition", "is_real", "audio", "seconds", "source",
                 "prompt_audio")
        return [dict(zip(names, row, strict=True)) for row in rows]

    # --- pairs and votes ---

    def serve_pair(self, token: str, rater: str, clip_a: str, clip_b: str,
                   links: dict[str, str], served: float | None = None) -> float:
        """Record that `rater` was served clips A and B under `token` at `served` (None:
        now), with the links (side -> ticket: "prompt", "a", "b") their audio is
        fetched by; returns the time."""
        served = time.time() if served is None else served
        with self._write() as db:
            db.execute("INSERT INTO pairs (token, rater, clip_a, clip_b, served) "
                       "VALUES (?, ?, ?, ?, ?)", (token, rater, clip_a, clip_b, served))
            db.executemany("INSERT INTO clip_links (ticket, token, side) VALUES (?, ?, ?)",
                           [(ticket, token, side) for side, ticket in links.items()])
        return served

    def served_pair(self, token: str) -> dict | None:
        """A served pair with its conditions, when each clip was fetched in full (or None)
        and whether it has a vote; None if there is no such pair."""
        rows = self._read(
            "SELECT p.rater, p.clip_a, p.clip_b, p.served, a.condition, b.condition, "
            "a.is_real, b.is_real, v.choice, q.pool, "
            "(SELECT fetched FROM clip_links WHERE token = p.token AND side = 'a'), "
            "(SELECT fetched FROM clip_links WHERE token = p.token AND side = 'b') FROM pairs p "
            "JOIN clips a ON a.id = p.clip_a JOIN clips b ON b.id = p.clip_b "
            "JOIN prompts q ON q.id = a.prompt LEFT JOIN votes v ON v.token = p.token "
            "WHERE p.token = ?", (token,))
        if not rows:
            return None
        names = ("rater", "clip_a", "clip_b", "served", "condition_a", "condition_b",
                 "real_a", "real_b", "choice", "pool", "fetched_a", "fetched_b")
        return dict(zip(names, rows[0], strict=True))

    def clip_link(self, ticket: str) -> dict | None:
        """What a link serves: its pair's token and listener, the side, the file (relative
        to the pool folder) and when it was first fetched in full; None if unknown."""
        rows = self._read(
            "SELECT l.token, l.side, l.fetched, p.rater, CASE l.side WHEN 'a' THEN a.audio "
            "WHEN 'b' THEN b.audio ELSE q.audio END FROM clip_links l "
            "JOIN pairs p ON p.token = l.token JOIN clips a ON a.id = p.clip_a "
            "JOIN clips b ON b.id = p.clip_b JOIN prompts q ON q.id = a.prompt "
            "WHERE l.ticket = ?", (ticket,))
        if not rows:
            return None
        return dict(zip(("token", "side", "fetched", "rater", "audio"), rows[0], strict=True))

    def mark_fetched(self, ticket: str, when: float | None = None) -> None:
        """Record that a link's file reached its listener in full at `when` (None: now);
        the first time counts."""
        with self._write() as db:
            db.execute("UPDATE clip_links SET fetched = ? WHERE ticket = ? AND fetched IS NULL",
                       (time.time() if when is None else when, ticket))

    def forget_pairs_not_voted(self, served_before: float) -> int:
        """Delete pairs served before this time that have no vote; returns how many."""
        with self._write() as db:
            return db.execute("DELETE FROM pairs WHERE served < ? AND NOT EXISTS "
                              "(SELECT 1 FROM votes v WHERE v.token = pairs.token)",
                              (served_before,)).rowcount

    def served_to(self, rater: str, account: str | None = None) -> set[frozenset[str]]:
        """The pairs of clips (unordered) a rater has been served, and with an account,
        those served to any listener signed in with it."""
        rows = self._read("SELECT clip_a, clip_b FROM pairs WHERE rater = ?", (rater,))
        if account is not None:
            rows += self._read("SELECT p.clip_a, p.clip_b FROM raters r JOIN pairs p "
                               "ON p.rater = r.id WHERE r.account = ?", (account,))
        return {frozenset(row) for row in rows}

    def revealed_to(self, rater: str, account: str | None = None) -> set[str]:
        """The clips whose condition a rater (or, with an account, any listener signed in
        with it) has been told: those of the pairs they voted on."""
        rows = self._read("SELECT p.clip_a, p.clip_b FROM pairs p JOIN votes v "
                          "ON v.token = p.token WHERE p.rater = ?", (rater,))
        if account is not None:
            rows += self._read("SELECT p.clip_a, p.clip_b FROM raters r JOIN pairs p "
                               "ON p.rater = r.id JOIN votes v ON v.token = p.token "
                               "WHERE r.account = ?", (account,))
        return {clip for row in rows for clip in row}

    def pair_counts(self, pool: str) -> dict[frozenset[str], int]:
        """Votes so far per unordered pair of conditions in a pool.

        From the votes (CROSS JOIN keeps SQLite from scanning every served pair
        instead: 280 -> 109 ms at 300,000 pairs and 30,000 votes).
        """
        rows = self._read(
            "SELECT a.condition, b.condition, count(*) FROM votes v "
            "CROSS JOIN pairs p ON p.token = v.token JOIN clips a ON a.id = p.clip_a "
            "JOIN clips b ON b.id = p.clip_b JOIN prompts q ON q.id = a.prompt "
            "WHERE q.pool = ? GROUP BY a.condition, b.condition", (pool,))
        counts: dict[frozenset[str], int] = {}
        for first, second, count in rows:
            key = frozenset((first, second))
            counts[key] = counts.get(key, 0) + count
        return counts

    def record_vote(self, token: str, choice: str, seconds_since_served: float,
                    scores: dict[str, tuple[int | None, str | None]],
                    seconds_since_heard: float | None = None,
                    address: str | None = None) -> None:
        """Store a vote and its optional scores in one transaction.

        Args:
            token: The served pair.
            choice: One of `CHOICES`.
            seconds_since_served: Time from serving to the vote.
            scores: Clip id -> (1-5 "how musical" or None, "human"/"computer" or None).
            seconds_since_heard: Time from the later clip's full download to the vote.
            address: A keyed hash of the voter's network address (16 hex digits).

        Raises:
            UserError: The pair already has a vote, or a value is out of range.
        """
        if choice not in CHOICES:
            raise UserError(f"a vote is one of {', '.join(CHOICES)}, not {choice}")
        for musical, guess in scores.values():
            if musical is not None and not (isinstance(musical, int) and 1 <= musical <= 5):
                raise UserError(f"'how musical' goes from 1 to 5, not {musical}")
            if guess is not None and guess not in GUESSES:
                raise UserError(f"the guess is 'human' or 'computer', not {guess}")
        try:
            with self._write() as db:
                db.execute("INSERT INTO votes (token, choice, created, seconds_since_served, "
                           "seconds_since_heard, address) VALUES (?, ?, ?, ?, ?, ?)",
                           (token, choice, time.time(), seconds_since_served,
                            seconds_since_heard, address))
                db.executemany("INSERT INTO scores (token, clip, musical, guess) "
                               "VALUES (?, ?, ?, ?)",
                               [(token, clip, musical, guess)
                                for clip, (musical, guess) in scores.items()
                                if musical is not None or guess is not None])
        except sqlite3.IntegrityError as error:
            if "votes.token" in str(error):
                raise UserError("this pair already has your vote; ask for the next pair") \
                    from None
            if "FOREIGN KEY" in str(error):  # the pair expired while the vote was on its way
                raise UserError("this pair has expired; ask for a new pair") from None
            raise

    def votes(self, pool: str | None = None) -> list[dict]:
        """The votes with their conditions, scores and the rater's self-report, oldest first.

        For the CLI (`ratings summary`, `ratings export`) and tests: raw rows
        never reach the browser.

        Args:
            pool: Only this pool's votes (None: every pool's).
        """
        rows = self._read(
            "SELECT v.token, p.rater, q.pool, a.prompt, q.source, a.condition, b.condition, "
            "v.choice, "
            "v.seconds_since_served, v.created, sa.musical, sb.musical, sa.guess, sb.guess, "
            "a.is_real, b.is_real, r.training_years, r.headphones, v.seconds_since_heard, "
            "v.address, r.account FROM votes v "
            "JOIN pairs p ON p.token = v.token JOIN clips a ON a.id = p.clip_a "
            "JOIN clips b ON b.id = p.clip_b JOIN prompts q ON q.id = a.prompt "
            "JOIN raters r ON r.id = p.rater "
            "LEFT JOIN scores sa ON sa.token = v.token AND sa.clip = p.clip_a "
            "LEFT JOIN scores sb ON sb.token = v.token AND sb.clip = p.clip_b "
            "WHERE ? IS NULL OR q.pool = ? ORDER BY v.created, v.rowid", (pool, pool))
        return [dict(zip(VOTE_COLUMNS, row, strict=True)) for row in rows]

    def vote_count(self, pool: str | None = None) -> int:
        """How many listening-test votes there are (in one pool, or in all: None)."""
        return self._read("SELECT count(*) FROM votes v JOIN pairs p ON p.token = v.token "
                          "JOIN clips c ON c.id = p.clip_a JOIN prompts q ON q.id = c.prompt "
                          "WHERE ? IS NULL OR q.pool = ?", (pool, pool))[0][0]

    def pool_has_real(self, pool: str) -> bool:
        """Whether a pool holds real continuations (only then is "human or computer?" asked)."""
        return bool(self._read("SELECT 1 FROM clips c JOIN prompts q ON q.id = c.prompt "
                               "WHERE q.pool = ? AND c.is_real = 1 LIMIT 1", (pool,)))

    # --- quick ratings (Generate tab) ---

    def rate_clip(self, session: str, recipe: dict, score: int, comment: str = "") -> str:
        """Store (or replace) one person's 1-5 rating of a clip they generated.

        Returns:
            The clip's id.

        Raises:
            UserError: A score outside 1-5.
        """
        if not isinstance(score, int) or not 1 <= score <= 5:
            raise UserError(f"scores go from 1 to 5, not {score}")
        identifier = recipe_id(recipe)
        now = time.time()
        with self._write() as db:
            db.execute(
                "INSERT INTO clip_ratings (session, clip_id, score, comment, recipe, created, "
                "updated) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session, clip_id) DO "
                "UPDATE SET score = excluded.score, comment = excluded.comment, "
                "updated = excluded.updated",
                (session, identifier, score, comment[:500], json.dumps(recipe), now, now))
        return identifier

    def clip_ratings(self) -> list[dict]:
        """Every stored quick rating, oldest first (for the CLI and tests, not the browser)."""
        rows = self._read("SELECT session, clip_id, score, comment, recipe, created, updated "
                          "FROM clip_ratings ORDER BY created, rowid")
        names = ("session", "clip_id", "score", "comment", "recipe", "created", "updated")
        return [{**dict(zip(names, row, strict=True)), "recipe": json.loads(row[4])}
                for row in rows]

    def import_jsonl(self, path: str | os.PathLike) -> int:
        """Move the ratings of the old JSON-lines file (before the database) in, once.

        Each line was {"time", "session", "score", "comment", "recipe"}. The
        file's hash is recorded, so importing it again adds nothing; lines that
        are not such records are skipped.

        Returns:
            How many ratings were added.
        """
        data = Path(path).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        rows = []
        for line in data.decode("utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
                score, recipe = int(record["score"]), record["recipe"]
                session, created = str(record["session"])[:100], float(record["time"])
            except (ValueError, KeyError, TypeError):
                continue
            if 1 <= score <= 5 and session and isinstance(recipe, dict):
                rows.append((session, recipe_id(recipe), score,
                             str(record.get("comment", ""))[:500], json.dumps(recipe),
                             created, created))
        with self._write() as db:
            if db.execute("SELECT 1 FROM imports WHERE source_sha256 = ?",
                          (digest,)).fetchone():
                return 0
            before = db.total_changes
            # The file was appended to, so a later line is the rating that held.
            db.executemany("INSERT INTO clip_ratings (session, clip_id, score, comment, "
                           "recipe, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?) "
                           "ON CONFLICT (session, clip_id) DO UPDATE SET score = excluded.score, "
                           "comment = excluded.comment, updated = excluded.updated", rows)
            added = db.total_changes - before
            db.execute("INSERT INTO imports (source_sha256, source, rows, created) "
                       "VALUES (?, ?, ?, ?)", (digest, str(path), added, time.time()))
        return added

    def integrity(self) -> str:
        """SQLite's own check of the file: "ok" when it is sound."""
        return self._read("PRAGMA integrity_check")[0][0]

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._connection.close()
