"""Ratings people give clips, kept in SQLite and never where the app serves files.

The database is, in order: `$MUSICGEN_RATINGS_DB`; `/data/musicgen/ratings.sqlite`
where `/data` is writable (a Hugging Face Space's persistent storage); else
`var/ratings.sqlite` under the project root (git-ignored, and outside `tmp/`,
which `make clean` deletes and the app serves).

Every rating is committed before the caller returns, in WAL mode so readers
never block the writer. One person (a browser session) has one rating per
clip: rating the same clip again replaces it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

from musicgen.errors import UserError
from musicgen.resources import resource_root

RATINGS_ENV = "MUSICGEN_RATINGS_DB"
SPACE_DATA_DIR = Path("/data")
SCHEMA_VERSION = 1
SCHEMA = """
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
"""


def default_ratings_path() -> Path:
    """Where ratings are kept (see the module docstring)."""
    if value := os.environ.get(RATINGS_ENV):
        return Path(value).expanduser()
    if SPACE_DATA_DIR.is_dir() and os.access(SPACE_DATA_DIR, os.W_OK):
        return SPACE_DATA_DIR / "musicgen" / "ratings.sqlite"
    return resource_root() / "var" / "ratings.sqlite"


def clip_id(recipe: dict) -> str:
    """An opaque, stable id for the clip a recipe makes."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


class RatingsStore:
    """The ratings database; safe to share between the app's threads.

    Args:
        path: The SQLite file (created with its folder if missing).
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_ratings_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(self.path, check_same_thread=False,
                                           isolation_level=None)
        with self._lock:
            self._connection.execute("PRAGMA journal_mode=WAL")
            version = self._connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise UserError(f"{self.path} was written by a newer musicgen "
                                f"(schema {version}); use that version or another file")
            self._connection.executescript(SCHEMA)
            self._connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def rate_clip(self, session: str, recipe: dict, score: int, comment: str = "") -> str:
        """Store (or replace) one person's 1-5 rating of a clip.

        Returns:
            The clip's id.

        Raises:
            UserError: A score outside 1-5.
        """
        if not isinstance(score, int) or not 1 <= score <= 5:
            raise UserError(f"scores go from 1 to 5, not {score}")
        identifier = clip_id(recipe)
        now = time.time()
        with self._lock:
            self._connection.execute(
                "INSERT INTO clip_ratings (session, clip_id, score, comment, recipe, created, "
                "updated) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session, clip_id) DO "
                "UPDATE SET score = excluded.score, comment = excluded.comment, "
                "updated = excluded.updated",
                (session, identifier, score, comment[:500], json.dumps(recipe), now, now))
        return identifier

    def clip_ratings(self) -> list[dict]:
        """Every stored clip rating, oldest first (for the CLI and tests, not the browser)."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT session, clip_id, score, comment, recipe, created, updated "
                "FROM clip_ratings ORDER BY created").fetchall()
        names = ("session", "clip_id", "score", "comment", "recipe", "created", "updated")
        return [{**dict(zip(names, row, strict=True)), "recipe": json.loads(row[4])}
                for row in rows]

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._connection.close()
