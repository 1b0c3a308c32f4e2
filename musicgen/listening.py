"""The blind listening test: a pool of comparable clips, and pairs of them served for votes.

    summary = build_pool(store, models, prompts=20, seconds=20, maestro_dir=...)
    test = ListeningTest(store, pool_dir(store.path))
    pair = test.next_pair(rater)                  # two clips on one prompt, in random order
    reveal = test.vote(rater, pair.token, "a")    # refused before MIN_LISTEN_SECONDS

The design follows Music Arena and listening-test practice: both clips of a
pair continue the same prompt; they are equally long, equally loud (RMS, after
the same soundfont) and faded alike; their order is random and their
conditions stay on the server until the vote; a token ties the vote to the
pair that listener was served, and a pair takes one vote.

What a vote needs is decided on the server, because a script can skip
anything a page does: a pair's audio reaches the browser only through links
made for that pair and that listener (`open_clip`), each serving's bytes differ
(`serving_bytes`: a hash tells nothing), and a vote is taken only when both
clips were downloaded in full and `MIN_LISTEN_SECONDS` per clip has passed
since (server time, so a faster playback rate does not shorten it). Listeners
are a signed id (`ListenerKeys`); pairs and votes per listener and per network
address are capped (`Caps`). `musicgen.leaderboard` then drops votes that look
scripted, and says so. Besides each shipped model at
its default settings the pool holds a low anchor (the default model's greedy
continuation, which falls into loops) and, with MAESTRO, the real continuation
as the reference. Prompts and variations are fixed by `seed`: nothing is
picked by ear.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import math
import os
import random
import secrets
import struct
import threading
import time
from collections import deque
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
from musicgen.ratings import MIN_LISTEN_SECONDS, RatingsStore, listening_floor
from musicgen.recipe import without_tokens
from musicgen.settings import Settings

COUNTS_RELOAD_S = 600.0  # how stale the balancing counts may grow (other writers)

KEY_BYTES = 32
MAX_PARTIAL_DOWNLOADS = 100_000  # links whose bytes went out in part, remembered at once
CLIP_SIDES = ("prompt", "a", "b")  # the files of a pair, each behind a link of its own
CLIP_SECONDS = 20.0
PROMPTS = 20
REAL = "real"
ANCHOR_PREFIX = "greedy-"
AUDIO_SUFFIX = ".mp3"  # what every browser plays; 20 s is ~0.24 MB
PROMPT_FADE_SECONDS = 0.3
POOL_FILE_TIME = 1_000_000_000  # every pool file's mtime: hides the order of writing


def pool_dir(ratings_path: str | os.PathLike) -> Path:
    """Where a database's pool audio lives: `listening/` beside it (never served as such:
    a pair's files go out through its own links, `ListeningTest.serving`)."""
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
    """Two clips on one prompt, as a listener gets them: links only, no conditions.

    Attributes:
        token: Ties the vote to this pair and this listener (stays on the server).
        links: Side ("prompt", "a", "b") -> the ticket its audio is fetched by
            (`ListeningTest.open_clip`): the excerpt both clips continue, A, B.
        min_listen_s: How long each clip must be played before the vote.
        has_real: Whether the pool holds the pianist's continuations (without
            them, "human or computer?" has one answer and is not asked).
    """

    token: str
    links: dict[str, str]
    min_listen_s: float
    has_real: bool


@dataclass(frozen=True)
class Reveal:
    """What a vote was for, told after it is stored."""

    condition_a: str
    condition_b: str
    choice: str
    again: bool = False  # the same vote sent again (a retry): stored once, said truthfully

    @property
    def text(self) -> str:
        return (f"A was {condition_label(self.condition_a)}; "
                f"B was {condition_label(self.condition_b)}.")


@dataclass(frozen=True)
class Caps:
    """How much one listener, and one network address, may ask of the test.

    A classroom shares one address, so its caps are several listeners' worth.
    Change them here, or pass others to `ListeningTest`.
    """

    pairs_per_minute: int = 10
    votes_per_hour: int = 60
    # A class of 30 voting for an hour; a script from one address meets the filter too.
    address_pairs_per_minute: int = 120
    address_votes_per_hour: int = 1000


class _SlidingCount:
    """Events per key within the last `seconds`, in memory (one process serves the app)."""

    def __init__(self, limit: int, seconds: float):
        self.limit, self.seconds = limit, seconds
        self._times: dict[str, deque[float]] = {}

    def full(self, key: str, now: float) -> bool:
        times = self._times.get(key)
        while times and times[0] <= now - self.seconds:
            times.popleft()
        return bool(times) and len(times) >= self.limit

    def remove(self, key: str, when: float) -> None:
        times = self._times.get(key)
        if times and when in times:
            times.remove(when)

    def add(self, key: str, now: float) -> None:
        if len(self._times) > 50_000:  # listeners who left: forget their spent windows
            self._times = {key: times for key, times in self._times.items()
                           if times and times[-1] > now - self.seconds}
        self._times.setdefault(key, deque()).append(now)


class ListenerKeys:
    """The server's secret for listener ids and address hashes, kept beside the database.

    A listener is a random id signed with this secret, kept by the browser as a
    cookie: it survives reloads, and a forged or edited one is refused.
    Network addresses are stored only as a keyed hash, enough to tell one
    address's votes from another's.

    Args:
        path: The key file (created, readable by its owner only, if missing).
    """

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written whole under another name, then linked in: a reader never sees a
            # half-written (or empty) key, and of two processes the first link wins.
            draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
            descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(secrets.token_bytes(KEY_BYTES))
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(draft, path)
            except FileExistsError:
                pass
            finally:
                draft.unlink()
        self._secret = path.read_bytes()
        if len(self._secret) != KEY_BYTES:
            raise UserError(f"{path} is not a listener key ({len(self._secret)} bytes, not "
                            f"{KEY_BYTES}); delete it and a new one is made (listeners "
                            "then get new ids)")

    def new_listener(self) -> str:
        """A new listener's cookie value: "<id>.<signature>"."""
        identifier = secrets.token_hex(16)
        return f"{identifier}.{self._sign(identifier)}"

    def listener(self, cookie: str | None) -> str | None:
        """The listener id a cookie value carries, or None if it is missing or forged."""
        identifier, _, signature = (cookie or "").partition(".")
        if len(identifier) != 32 or not hmac.compare_digest(
                signature.encode("utf-8", "replace"), self._sign(identifier).encode()):
            return None
        return identifier

    def address(self, address: str | None) -> str | None:
        """A network address as 16 hex digits of a keyed hash (None stays None)."""
        return None if not address else self._sign("address:" + address)[:16]

    def serving_seed(self, ticket: str) -> bytes:
        """What fixes the bytes of one link's serving (`serving_bytes`)."""
        return hmac.new(self._secret, ("serving:" + ticket).encode(), hashlib.sha256).digest()

    def _sign(self, text: str) -> str:
        return hmac.new(self._secret, text.encode("utf-8", "replace"),
                        hashlib.sha256).hexdigest()[:32]


# MPEG audio frame sizes, for `serving_bytes` (layer III only: what LAME writes).
_L3_KBPS = {1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
            2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}
_RATES = {1: (44100, 48000, 32000), 2: (22050, 24000, 16000), 25: (11025, 12000, 8000)}


def serving_bytes(path: str | os.PathLike, seed: bytes) -> bytes:
    """A pool MP3 as one serving of it, the same audio in other bytes.

    An ID3 tag of random content and length goes in front, and each MPEG
    frame's private bit (which decoders ignore) is set at random, so neither
    the file nor any stretch of frames has the same bytes, hash or size as in
    another serving: telling two servings of a clip apart takes decoding the
    audio. `seed` fixes the serving, so the byte ranges a browser asks for one
    after another come from one file.
    """
    rng = random.Random(seed)
    padding = rng.randbytes(16 + rng.randrange(2048))
    frame = b"PRIV" + struct.pack(">I", 9 + len(padding)) + b"\0\0" + b"musicgen\0" + padding
    size = len(frame)  # ID3v2 tag sizes are "syncsafe": 7 bits per byte
    tag = b"ID3\x03\x00\x00" + bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0)) + frame
    audio = bytearray(Path(path).read_bytes())
    position, first = 0, True
    while position + 4 <= len(audio) and audio[position] == 0xFF and audio[position + 1] >= 0xE0:
        length = _frame_length(audio, position)
        if length is None:
            break
        if not first:  # the first frame may hold LAME's tag, whose CRC covers its header
            audio[position + 2] = (audio[position + 2] & 0xFE) | rng.getrandbits(1)
        position, first = position + length, False
    return tag + bytes(audio)


def _frame_length(audio: bytearray, at: int) -> int | None:
    """The length of the layer III frame whose header starts at `at` (None: not one)."""
    version = {3: 1, 2: 2, 0: 25}.get((audio[at + 1] >> 3) & 3)
    layer = (audio[at + 1] >> 1) & 3
    kbps_index, rate_index = audio[at + 2] >> 4, (audio[at + 2] >> 2) & 3
    if version is None or layer != 1 or kbps_index in (0, 15) or rate_index == 3:
        return None
    kbps = _L3_KBPS[1 if version == 1 else 2][kbps_index]
    per_frame = 144 if version == 1 else 72
    return per_frame * kbps * 1000 // _RATES[version][rate_index] + ((audio[at + 2] >> 1) & 1)


class ListeningTest:
    """Serves pairs from the current pool, their audio, and records votes.

    Pairs are balanced: the pair of conditions with the fewest votes so far is
    served next (ties at random), in random order, never with a clip whose
    condition this listener has already been told (so with k conditions a
    listener votes on at most k // 2 pairs per prompt).

    Args:
        store: The ratings database.
        audio_root: `pool_dir(store.path)`, where the pool's files are.
        min_listen_s: Seconds each clip must play before a vote (tests use less).
        rng: Random source for pairs and order (None: seeded from the OS).
        caps: Pairs and votes allowed per listener and per address.
        clock: The time of serving, downloads and votes (tests pass a fake one).
        require_account: Serve pairs and take votes only from listeners signed in
            with an account (on a Space: Hugging Face); the caps then count per
            account, however many browsers it uses.
    """

    def __init__(self, store: RatingsStore, audio_root: str | os.PathLike,
                 min_listen_s: float = MIN_LISTEN_SECONDS, rng: random.Random | None = None,
                 caps: Caps = Caps(), clock: Callable[[], float] = time.time,
                 require_account: bool = False):
        self.store = store
        self.clock = clock
        self.require_account = require_account
        self.audio_root = Path(audio_root)
        self.min_listen_s = min_listen_s
        self.keys = ListenerKeys(Path(store.path).parent / "listener.key")
        self._rng = rng or random.Random()
        # Votes per pair of conditions, by pool: (when read from the database, counts),
        # then kept up to date by `vote`. Counting them in SQL for every pair served
        # took 430 ms at 300,000 served pairs and 30,000 votes (bench/pair_query.py).
        self._counts: dict[str, tuple[float, dict[frozenset[str], int]]] = {}
        self._counts_lock = threading.Lock()
        self._caps_lock = threading.Lock()
        self._sent: dict[str, list[tuple[int, int]]] = {}  # ticket -> byte spans sent
        self._sent_lock = threading.Lock()
        self._pairs = {"listener": _SlidingCount(caps.pairs_per_minute, 60.0),
                       "address": _SlidingCount(caps.address_pairs_per_minute, 60.0)}
        self._votes = {"listener": _SlidingCount(caps.votes_per_hour, 3600.0),
                       "address": _SlidingCount(caps.address_votes_per_hour, 3600.0)}

    def pool(self) -> str | None:
        """The current pool's id (None: no pool has been built)."""
        return self.store.latest_pool()

    def next_pair(self, rater: str, training_years: int | None = None,
                  headphones: bool | None = None, address: str | None = None,
                  account: str | None = None) -> ServedPair:
        """Serve this listener a pair they have not had.

        Args:
            rater: The listener's id (`ListenerKeys.listener`).
            training_years, headphones: Optional self-report.
            address: The listener's network address, for the caps (None: not capped).
            account: The account they signed in with (None: none).

        Raises:
            UserError: No pool is built, an account is required and missing, the
                listener has heard every pair, or the listener or their address
                asked for too many pairs this minute.
        """
        pool = self.pool()
        if pool is None:
            raise UserError("no listening test is set up yet: run `python -m musicgen "
                            "listening build` first")
        self._signed_in(account)
        counted = self._reserve(self._pairs, account or rater, address, (
            "you asked for many pairs in the last minute: listen to these, then try again",
            "many pairs were asked for from your network in the last minute; try again in a "
            "minute"))
        try:
            return self._serve(pool, rater, training_years, headphones, account)
        except BaseException:
            self._release(self._pairs, account or rater, address, counted)
            raise

    def _serve(self, pool: str, rater: str, training_years: int | None,
               headphones: bool | None, account: str | None) -> ServedPair:
        self.store.add_rater(rater, training_years, headphones, account)
        clips = self.store.pool_clips(pool)
        by_prompt: dict[str, list[dict]] = {}
        for clip in clips:
            by_prompt.setdefault(clip["prompt"], []).append(clip)
        # A clip whose condition was revealed would not be blind a second time (to this
        # listener, or to this account in any browser).
        served = self.store.served_to(rater, account)
        revealed = self.store.revealed_to(rater, account)
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
        links = {side: secrets.token_hex(16) for side in CLIP_SIDES}
        self.store.serve_pair(token, rater, a["id"], b["id"], links, self.clock())
        return ServedPair(token, links, self.min_listen_s, self.store.pool_has_real(pool))

    def open_clip(self, rater: str | None, ticket: str) -> Path:
        """The file behind a pair's link, for the listener it was made for only.

        Raises:
            UserError: No such link, or it belongs to another listener.
        """
        link = self.store.clip_link(ticket) if len(ticket) == 32 else None
        if link is None or rater is None or link["rater"] != rater:
            raise UserError("this clip is not yours to hear; ask for a new pair")
        return self.audio_root / link["audio"]

    def serving(self, rater: str | None, ticket: str) -> bytes:
        """The bytes of a link's serving (`serving_bytes`), for its own listener only.

        Raises:
            UserError: As `open_clip`.
        """
        return serving_bytes(self.open_clip(rater, ticket), self.keys.serving_seed(ticket))

    def sent(self, ticket: str, start: int, end: int, total: int) -> None:
        """Record that bytes `start`..`end` (exclusive) of a link's `total`-byte serving
        went out; once every byte has (in one response or in ranges), it is `heard`."""
        with self._sent_lock:
            if len(self._sent) > MAX_PARTIAL_DOWNLOADS:  # abandoned downloads: forget them
                self._sent = dict(list(self._sent.items())[len(self._sent) // 2:])
            spans = sorted([*self._sent.get(ticket, []), (start, end)])
            merged = [spans[0]]
            for low, high in spans[1:]:
                if low <= merged[-1][1]:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], high))
                else:
                    merged.append((low, high))
            whole = merged[0][0] <= 0 and merged[0][1] >= total
            if whole:
                self._sent.pop(ticket, None)
            else:
                self._sent[ticket] = merged
        if whole:
            self.heard(ticket)

    def heard(self, ticket: str) -> None:
        """Record that a link's file reached its listener in full."""
        self.store.mark_fetched(ticket, self.clock())

    def listening_floor(self) -> float:
        """Seconds from the later clip's full download to the earliest vote."""
        return listening_floor(self.min_listen_s)

    def wait_left(self, rater: str, token: str) -> float:
        """Seconds this listener must still wait before voting on the pair (0: may vote;
        infinite while a clip has not been downloaded in full).

        Raises:
            UserError: The pair was not served to this listener, or has a vote.
        """
        heard = self._heard(self._served(rater, token))
        if heard is None:
            return math.inf
        return max(0.0, self.listening_floor() - (self.clock() - heard))

    def vote(self, rater: str, token: str, choice: str, musical_a: int | None = None,
             musical_b: int | None = None, guess_a: str | None = None,
             guess_b: str | None = None, address: str | None = None,
             account: str | None = None) -> Reveal:
        """Store a vote (committed before this returns) and reveal the pair's conditions.

        The same vote sent again (a retry after a lost answer) is recognised by
        its pair: nothing more is stored, and the reveal says it was saved.

        Args:
            rater: The listener.
            token: The pair's token, as served to them.
            choice: "a", "b", "tie" or "both_bad".
            musical_a, musical_b: Optional 1-5 "how musical" per clip.
            guess_a, guess_b: Optional "human" or "computer" per clip.
            address: The listener's network address, for the caps (None: not capped).
            account: The account they signed in with (None: none).

        Raises:
            UserError: An account required and missing, a pair not served to this
                listener, another vote on it, a
                clip not downloaded in full, a vote sooner than `listening_floor`
                after that, a cap reached, or a value out of range.
        """
        pair = self.store.served_pair(token) if token else None
        if pair is not None and pair["rater"] == rater and pair["choice"] == choice:
            return Reveal(pair["condition_a"], pair["condition_b"], choice, again=True)
        self._signed_in(account)
        pair = self._served(rater, token)
        heard = self._heard(pair)
        now = self.clock()
        if heard is None or now - heard < self.listening_floor():
            raise UserError(f"listen to both clips first (at least {self.min_listen_s:g} s "
                            "each), then vote")
        counted = self._reserve(self._votes, account or rater, address, (
            "you have voted many times in the last hour: thank you! Come back later",
            "many votes came from your network in the last hour; try again later"))
        try:
            self.store.record_vote(token, choice, now - pair["served"],
                                   {pair["clip_a"]: (musical_a, guess_a),
                                    pair["clip_b"]: (musical_b, guess_b)},
                                   now - heard, self.keys.address(address))
        except BaseException:
            self._release(self._votes, account or rater, address, counted)
            raise
        with self._counts_lock:
            if pair["pool"] in self._counts:
                conditions = frozenset((pair["condition_a"], pair["condition_b"]))
                counts = self._counts[pair["pool"]][1]
                counts[conditions] = counts.get(conditions, 0) + 1
        return Reveal(pair["condition_a"], pair["condition_b"], choice)

    def _signed_in(self, account: str | None) -> None:
        if self.require_account and not account:
            raise UserError("sign in with Hugging Face first (the button above): this "
                            "listening test counts one voice per account")

    def _reserve(self, windows: dict[str, _SlidingCount], rater: str,
                 address: str | None, messages: tuple[str, str]) -> float:
        """Count one more pair (or vote) for the listener and address, or raise UserError
        if either is at its cap; check and count under one lock, so that requests at
        the same moment cannot all slip under it. Returns the time counted (`_release`)."""
        now = self.clock()
        with self._caps_lock:
            if windows["listener"].full(rater, now):
                raise UserError(messages[0])
            if address is not None and windows["address"].full(address, now):
                raise UserError(messages[1])
            windows["listener"].add(rater, now)
            if address is not None:
                windows["address"].add(address, now)
        return now

    def _release(self, windows: dict[str, _SlidingCount], rater: str,
                 address: str | None, when: float) -> None:
        """Take back a count `_reserve` made, for a request that failed after it."""
        with self._caps_lock:
            windows["listener"].remove(rater, when)
            if address is not None:
                windows["address"].remove(address, when)

    @staticmethod
    def _heard(pair: dict) -> float | None:
        """When the later of the two clips was downloaded in full (None: not both yet)."""
        if pair["fetched_a"] is None or pair["fetched_b"] is None:
            return None
        return max(pair["fetched_a"], pair["fetched_b"])

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
