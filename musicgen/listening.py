"""The blind listening test: a pool of comparable clips, and pairs of them served for votes.

    summary = build_pool(store, models, prompts=20, seconds=20, maestro_dir=...)
    test = ListeningTest(store, pool_dir(store.path))
    pair = test.next_pair(rater)                  # two clips on one prompt, in random order
    reveal = test.vote(rater, pair.token, "a")    # refused before MIN_LISTEN_SECONDS

The design follows Music Arena and listening-test practice: both clips of a
pair continue the same prompt; they are equally long, equally loud (RMS, after
the same soundfont) and faded alike; their order is random and their
conditions stay on the server until the vote; a listener may vote only after
`MIN_LISTEN_SECONDS` (the browser checks each clip's played time, the server
the time since the pair was served); a token ties the vote to the pair that
listener was served, and a pair takes one vote. Besides each shipped model at
its default settings the pool holds a low anchor (the default model's greedy
continuation, which falls into loops) and, with MAESTRO, the real continuation
as the reference. Prompts and variations are fixed by `seed`: nothing is
picked by ear.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musicgen.audio import Renderer, Rendering, fitted, matched, write_compressed
from musicgen.compose import LoadedModel, compose
from musicgen.errors import UserError
from musicgen.examples import example_names, example_notes
from musicgen.midi import notes_to_pretty_midi, read_midi
from musicgen.notes import Notes
from musicgen.prompt import DEFAULT_PROMPT_SECONDS, Prompt, default_start, prompt_from_notes
from musicgen.ratings import RatingsStore
from musicgen.recipe import without_tokens
from musicgen.settings import Settings

COUNTS_RELOAD_S = 600.0  # how stale the balancing counts may grow (other writers)

MIN_LISTEN_SECONDS = 5.0
CLIP_SECONDS = 20.0
PROMPTS = 20
REAL = "real"
ANCHOR_PREFIX = "greedy-"
AUDIO_SUFFIX = ".mp3"  # what every browser plays; 20 s is ~0.24 MB
PROMPT_FADE_SECONDS = 0.3
POOL_FILE_TIME = 1_000_000_000  # every pool file's mtime: hides the order of writing


def pool_dir(ratings_path: str | os.PathLike) -> Path:
    """Where a database's pool audio lives: `listening/` beside it (never served as such:
    the app links each pair's files under new names, `Studio.next_pair`)."""
    return Path(ratings_path).parent / "listening"


def condition_label(condition: str) -> str:
    """A condition in words, for the reveal after a vote."""
    if condition == REAL:
        return "the pianist: what was really played next"
    if condition.startswith(ANCHOR_PREFIX):
        return (f"{_model_words(condition[len(ANCHOR_PREFIX):])}, always taking its likeliest "
                "next note (a deliberately weak reference)")
    return _model_words(condition)


def _model_words(name: str) -> str:
    return {"lstm": "the LSTM model", "transformer": "the Transformer model"}.get(
        name, f"the model {name}")


# --- building the pool ---

@dataclass(frozen=True)
class PoolPrompt:
    """One prompt of the pool, and what really followed it (None for built-in examples)."""

    prompt: Prompt
    real: Notes | None


def pool_prompts(count: int, prompt_seconds: float, seconds: float, seed: int,
                 maestro_dir: str | os.PathLike | None = None) -> list[PoolPrompt]:
    """The pool's prompts: MAESTRO test-split excerpts, or else the built-in examples.

    With MAESTRO, `count` test pieces long enough for an excerpt and its real
    continuation are taken in an order fixed by `seed`; each excerpt is the
    piece's `default_start` window (a lively part), moved back where the real
    continuation would not fit. Without it, each built-in example's end (there
    are fewer than 20, so the pool is smaller).

    Raises:
        UserError: The MAESTRO folder has no test-split pieces long enough.
    """
    if maestro_dir is None:
        return [PoolPrompt(prompt_from_notes(example_notes(name), prompt_seconds,
                                             f"example:{name}"), None)
                for name in example_names()[:count]]
    from musicgen.corpus import list_midi_files  # noqa: PLC0415 - only with MAESTRO

    tests = [path for path, split in list_midi_files(Path(maestro_dir)) if split == "test"]
    chosen = []
    for index in np.random.default_rng(seed).permutation(len(tests)):
        path = tests[index]
        notes = read_midi(path)
        if notes.duration < prompt_seconds + seconds + 1:
            continue
        start = min(default_start(notes, prompt_seconds),
                    notes.duration - prompt_seconds - seconds)
        prompt = prompt_from_notes(notes, prompt_seconds, f"maestro-test:{path.name}", start)
        begin = start + prompt.seconds
        chosen.append(PoolPrompt(prompt, notes.window(begin, begin + seconds)))
        if len(chosen) == count:
            break
    if not chosen:
        raise UserError(f"the MAESTRO folder {maestro_dir} has no test-split pieces of at "
                        f"least {prompt_seconds + seconds + 1:.0f} s")
    return chosen


def build_pool(store: RatingsStore, models: dict[str, LoadedModel], prompts: int = PROMPTS,
               seconds: float = CLIP_SECONDS, seed: int = 0,
               maestro_dir: str | os.PathLike | None = None,
               soundfont: str | os.PathLike | None = None, renderer: Renderer | None = None,
               on_clip: Callable[[str], None] | None = None) -> dict:
    """Render a listening pool and store it as the test's current one.

    For each prompt: each model's continuation at its default settings, the
    first model's greedy continuation (the anchor) and, with MAESTRO, the real
    continuation; every clip exactly `seconds` long and faded
    (`musicgen.audio.fitted`), a prompt's clips and excerpt at one loudness
    (`musicgen.audio.matched`), as MP3 under `pool_dir(store.path)/<pool id>/`
    with an opaque name. Prompt k uses variation `seed + k` for every model.

    Args:
        store: The ratings database (the pool is recorded there).
        models: Name -> model, the default first.
        prompts: How many prompts.
        seconds: Length of every clip.
        seed: Fixes the prompts and the variations.
        maestro_dir: MAESTRO v3.0.0, for test-split prompts and real continuations.
        soundfont: The soundfont for every clip (None: the default).
        renderer: The renderer to use (None: a new one).
        on_clip: Called with a line per clip written.

    Returns:
        A summary: pool id, folder, prompts, clips, conditions, seconds taken.

    Raises:
        UserError: No models, a bad count or length, or unusable MAESTRO data.
    """
    if not models:
        raise UserError("there are no models to build a listening pool with")
    if not 1 <= prompts <= 500:
        raise UserError(f"a pool has 1 to 500 prompts, not {prompts}")
    if not 5 <= seconds <= 60:
        raise UserError(f"pool clips last 5 to 60 s, not {seconds:g}")
    began = time.perf_counter()
    renderer = renderer or Renderer()
    pool = f"{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}-{secrets.token_hex(3)}"
    folder = pool_dir(store.path) / pool
    folder.mkdir(parents=True)
    default_model = next(iter(models))
    prompt_rows, clip_rows = [], []
    for k, entry in enumerate(pool_prompts(prompts, DEFAULT_PROMPT_SECONDS, seconds, seed,
                                           maestro_dir)):
        prompt_id = secrets.token_hex(16)
        settings = Settings(seconds=seconds, seed=seed + k, include_prompt=False)
        continuations = {name: (model, settings) for name, model in models.items()}
        continuations[ANCHOR_PREFIX + default_model] = (models[default_model],
                                                        settings.but(temperature=0.0))
        parts: dict[str, tuple[Notes, dict]] = {}
        for condition, (model, chosen) in continuations.items():
            (candidate,) = compose(model, entry.prompt, chosen)
            parts[condition] = (candidate.notes, without_tokens(candidate.recipe))
        if entry.real is not None:
            parts[REAL] = (entry.real, {"real": entry.prompt.source,
                                        "after_prompt_s": entry.prompt.seconds})
        # One prompt's clips (and its excerpt) at one loudness: they are heard together.
        excerpt, *clips = matched(
            [_rendered(renderer, entry.prompt.notes, entry.prompt.seconds, soundfont,
                       PROMPT_FADE_SECONDS)]
            + [_rendered(renderer, notes.window(0.0, seconds), seconds, soundfont)
               for notes, _ in parts.values()])
        path = _written(excerpt, folder)
        prompt_rows.append({"id": prompt_id, "source": entry.prompt.source,
                            "audio": f"{pool}/{path.name}", "seconds": entry.prompt.seconds})
        for (condition, (_, recipe)), rendering in zip(parts.items(), clips, strict=True):
            path = _written(rendering, folder)
            clip_rows.append({"id": path.stem, "prompt": prompt_id, "condition": condition,
                              "is_real": condition == REAL, "recipe": recipe,
                              "audio": f"{pool}/{path.name}",
                              "audio_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                              "seconds": seconds})
            if on_clip is not None:
                on_clip(f"prompt {k + 1} ({entry.prompt.source}): {condition}")
    conditions = sorted({row["condition"] for row in clip_rows})
    settings_record = {"prompts": len(prompt_rows), "seconds": seconds, "seed": seed,
                       "prompt_seconds": DEFAULT_PROMPT_SECONDS, "conditions": conditions,
                       "maestro": maestro_dir is not None,
                       "soundfont": Path(soundfont).name if soundfont else (
                           renderer.soundfonts[0].name if renderer.soundfonts else None)}
    store.add_pool(pool, settings_record, prompt_rows, clip_rows)
    return {"pool": pool, "folder": str(folder), "prompts": len(prompt_rows),
            "clips": len(clip_rows), "conditions": conditions,
            "seconds_taken": round(time.perf_counter() - began, 1)}


def _rendered(renderer: Renderer, notes: Notes, seconds: float,
              soundfont: str | os.PathLike | None, fade: float = 0.5) -> Rendering:
    """Notes rendered to exactly `seconds` (`musicgen.audio.fitted`)."""
    return fitted(renderer.render(notes_to_pretty_midi(notes), soundfont), seconds, fade)


def _written(rendering: Rendering, folder: Path) -> Path:
    """A rendering as an MP3 that says nothing of its condition: a random name, a
    constant bitrate (equal sizes for equal lengths) and one modification time."""
    path = write_compressed(folder / f"{secrets.token_hex(16)}{AUDIO_SUFFIX}", rendering, "mp3")
    os.utime(path, (POOL_FILE_TIME, POOL_FILE_TIME))
    return path


# --- serving pairs and taking votes ---

@dataclass(frozen=True)
class ServedPair:
    """Two clips on one prompt, as a listener gets them: files only, no conditions.

    Attributes:
        token: Ties the vote to this pair and this listener.
        prompt_audio: The excerpt both clips continue.
        audio_a, audio_b: The two continuations, in the order shown.
        min_listen_s: How long each must be played before the vote.
        has_real: Whether the pool holds the pianist's continuations (without
            them, "human or computer?" has one answer and is not asked).
    """

    token: str
    prompt_audio: Path
    audio_a: Path
    audio_b: Path
    min_listen_s: float
    has_real: bool


@dataclass(frozen=True)
class Reveal:
    """What a vote was for, told after it is stored."""

    condition_a: str
    condition_b: str
    choice: str

    @property
    def text(self) -> str:
        return (f"A was {condition_label(self.condition_a)}; "
                f"B was {condition_label(self.condition_b)}.")


class ListeningTest:
    """Serves pairs from the current pool and records votes.

    Pairs are balanced: the pair of conditions with the fewest votes so far is
    served next (ties at random), in random order, never with a clip whose
    condition this listener has already been told (so with k conditions a
    listener votes on at most k // 2 pairs per prompt).

    Args:
        store: The ratings database.
        audio_root: `pool_dir(store.path)`, where the pool's files are.
        min_listen_s: Seconds each clip must play before a vote (tests use less).
        rng: Random source for pairs and order (None: seeded from the OS).
    """

    def __init__(self, store: RatingsStore, audio_root: str | os.PathLike,
                 min_listen_s: float = MIN_LISTEN_SECONDS, rng: random.Random | None = None):
        self.store = store
        self.audio_root = Path(audio_root)
        self.min_listen_s = min_listen_s
        self._rng = rng or random.Random()
        # Votes per pair of conditions, by pool: (when read from the database, counts),
        # then kept up to date by `vote`. Counting them in SQL for every pair served
        # took 430 ms at 300,000 served pairs and 30,000 votes (bench/pair_query.py).
        self._counts: dict[str, tuple[float, dict[frozenset[str], int]]] = {}
        self._counts_lock = threading.Lock()

    def pool(self) -> str | None:
        """The current pool's id (None: no pool has been built)."""
        return self.store.latest_pool()

    def next_pair(self, rater: str, training_years: int | None = None,
                  headphones: bool | None = None) -> ServedPair:
        """Serve this listener a pair they have not had.

        Raises:
            UserError: No pool is built, or the listener has heard every pair.
        """
        pool = self.pool()
        if pool is None:
            raise UserError("no listening test is set up yet: run `python -m musicgen "
                            "listening build` first")
        self.store.add_rater(rater, training_years, headphones)
        clips = self.store.pool_clips(pool)
        by_prompt: dict[str, list[dict]] = {}
        for clip in clips:
            by_prompt.setdefault(clip["prompt"], []).append(clip)
        # A clip whose condition was revealed would not be blind a second time.
        served, revealed = self.store.served_to(rater), self.store.revealed_to(rater)
        options = [(a, b) for group in by_prompt.values()
                   for a, b in itertools.combinations(group, 2)
                   if frozenset((a["id"], b["id"])) not in served
                   and a["id"] not in revealed and b["id"] not in revealed]
        if not options:
            raise UserError("you have heard every pair of this listening test: thank you!")
        counts = self._pair_counts(pool)
        fewest = min(counts.get(frozenset((a["condition"], b["condition"])), 0)
                     for a, b in options)
        a, b = self._rng.choice([(a, b) for a, b in options
                                 if counts.get(frozenset((a["condition"], b["condition"])),
                                               0) == fewest])
        if self._rng.random() < 0.5:
            a, b = b, a
        token = secrets.token_hex(16)
        self.store.serve_pair(token, rater, a["id"], b["id"])
        return ServedPair(token, self.audio_root / a["prompt_audio"],
                          self.audio_root / a["audio"], self.audio_root / b["audio"],
                          self.min_listen_s, self.store.pool_has_real(pool))

    def wait_left(self, rater: str, token: str) -> float:
        """Seconds this listener must still wait before voting on the pair (0: may vote).

        Raises:
            UserError: The pair was not served to this listener, or has a vote.
        """
        pair = self._served(rater, token)
        return max(0.0, self.min_listen_s - (time.time() - pair["served"]))

    def vote(self, rater: str, token: str, choice: str, musical_a: int | None = None,
             musical_b: int | None = None, guess_a: str | None = None,
             guess_b: str | None = None) -> Reveal:
        """Store a vote (committed before this returns) and reveal the pair's conditions.

        Args:
            rater: The listener.
            token: The pair's token, as served to them.
            choice: "a", "b", "tie" or "both_bad".
            musical_a, musical_b: Optional 1-5 "how musical" per clip.
            guess_a, guess_b: Optional "human" or "computer" per clip.

        Raises:
            UserError: A pair not served to this listener, a second vote on it,
                a vote sooner than `min_listen_s` after serving, or a value out
                of range.
        """
        pair = self._served(rater, token)
        elapsed = time.time() - pair["served"]
        if elapsed < self.min_listen_s:
            raise UserError(f"listen to both clips first (at least {self.min_listen_s:g} s "
                            "each), then vote")
        self.store.record_vote(token, choice, elapsed,
                               {pair["clip_a"]: (musical_a, guess_a),
                                pair["clip_b"]: (musical_b, guess_b)})
        with self._counts_lock:
            if pair["pool"] in self._counts:
                conditions = frozenset((pair["condition_a"], pair["condition_b"]))
                counts = self._counts[pair["pool"]][1]
                counts[conditions] = counts.get(conditions, 0) + 1
        return Reveal(pair["condition_a"], pair["condition_b"], choice)

    def _pair_counts(self, pool: str) -> dict[frozenset[str], int]:
        """Votes so far per pair of conditions in `pool`, read again from the database every
        `COUNTS_RELOAD_S` (for votes other processes stored)."""
        with self._counts_lock:
            loaded = self._counts.get(pool)
            if loaded is None or time.monotonic() - loaded[0] > COUNTS_RELOAD_S:
                loaded = (time.monotonic(), self.store.pair_counts(pool))
                self._counts[pool] = loaded
            return dict(loaded[1])

    def _served(self, rater: str, token: str) -> dict:
        pair = self.store.served_pair(token) if token else None
        if pair is None or pair["rater"] != rater:
            raise UserError("this pair was not served to you; ask for a new pair")
        if pair["choice"] is not None:
            raise UserError("this pair already has your vote; ask for the next pair")
        return pair
