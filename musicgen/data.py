"""The token cache: its splits, and training windows with Music Transformer augmentation.

Needs numpy only (no MIDI libraries, no torch), so it runs on any training
machine and wherever samples are evaluated.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musicgen.errors import UserError
from musicgen.events import (
    PITCHES,
    VOCAB,
    Vocabulary,
    event_steps,
    held_after,
    interleave_time_shifts,
)

TRANSPOSE_RANGE = (-3, 3)  # semitones, inclusive
STRETCH_RANGE = (0.95, 1.05)


def load_index(cache_dir: str | os.PathLike) -> dict:
    """Read a cache's index.json.

    Raises:
        NoCacheError: `cache_dir` holds no index.json.
    """
    path = Path(cache_dir) / "index.json"
    if not path.is_file():
        raise NoCacheError(f"there is no token cache in {cache_dir}; make one first with "
                           f"`python -m musicgen prepare --data MIDI_FOLDER --out {cache_dir}`")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


class NoCacheError(UserError):
    """A folder that holds no token cache."""


@dataclass
class TokenCache:
    """A prepared token cache: all tokens and the (offset, length) of each piece.

    Attributes:
        tokens: uint16 array of every piece as [BOS, events..., EOS].
        pieces: One dict per piece (source, split, offset, length, seconds).
    """

    tokens: np.ndarray
    pieces: list[dict]

    @staticmethod
    def load(cache_dir: str | os.PathLike, vocab: Vocabulary = VOCAB) -> TokenCache:
        """Open a cache written by `musicgen prepare` (tokens are memory-mapped)."""
        index = load_index(cache_dir)
        vocab.check_compatible(index["vocab"])
        tokens = np.load(Path(cache_dir) / "tokens.npy", mmap_mode="r")
        return TokenCache(tokens, index["pieces"])

    def split(self, name: str) -> list[np.ndarray]:
        """The token arrays of every piece in one split."""
        return [self.tokens[p["offset"]:p["offset"] + p["length"]]
                for p in self.pieces if p["split"] == name]


def transpose(tokens: np.ndarray, semitones: int, vocab: Vocabulary = VOCAB) -> np.ndarray:
    """Shift every NOTE_ON/NOTE_OFF by `semitones`; other tokens unchanged.

    The caller keeps pitches in 0..127 (see `safe_transpositions`).
    """
    out = np.array(tokens, dtype=np.int64)
    for name in ("note_on", "note_off"):
        event_range = vocab[name]
        is_note = (out >= event_range.offset) & (out < event_range.stop)
        out[is_note] += semitones
    return out


def safe_transpositions(tokens: np.ndarray, vocab: Vocabulary = VOCAB,
                        limits: tuple[int, int] = TRANSPOSE_RANGE) -> tuple[int, int]:
    """The widest (low, high) within `limits` that keeps every pitch in 0..127."""
    pitches = []
    for name in ("note_on", "note_off"):
        event_range = vocab[name]
        is_note = (tokens >= event_range.offset) & (tokens < event_range.stop)
        pitches.append(event_range.value(tokens[is_note]))
    pitches = np.concatenate(pitches)
    if not len(pitches):
        return limits
    return max(limits[0], -int(pitches.min())), min(limits[1], 127 - int(pitches.max()))


def time_stretch(tokens: np.ndarray, factor: float, vocab: Vocabulary = VOCAB) -> np.ndarray:
    """Scale every gap between events by `factor`, re-quantised to 10 ms steps.

    Trailing time shifts after the last event are dropped.
    """
    steps, events = event_steps(tokens, vocab)
    return interleave_time_shifts(np.rint(steps * factor).astype(np.int64), events, vocab)


class WindowSampler:
    """Random fixed-length windows from one split, augmented on the fly.

    Each window is `length + 1` tokens (inputs and shifted targets). Pieces
    are chosen in proportion to their length; a piece shorter than a window is
    padded with PAD, which the loss ignores.
    """

    def __init__(self, pieces: list[np.ndarray], length: int, augment: bool = True,
                 transpose_range: tuple[int, int] = TRANSPOSE_RANGE,
                 stretch_range: tuple[float, float] = STRETCH_RANGE,
                 vocab: Vocabulary = VOCAB):
        if not pieces:
            raise ValueError("no pieces to sample windows from")
        self.pieces, self.length, self.augment = pieces, length, augment
        self.transpose_range, self.stretch_range, self.vocab = transpose_range, stretch_range, vocab
        lengths = np.array([len(p) for p in pieces], dtype=np.float64)
        self.weights = lengths / lengths.sum()

    def window(self, rng: np.random.Generator) -> np.ndarray:
        """One int64 window of `length + 1` tokens."""
        return self._window(rng, held=False)[0]

    def batch(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """int64 array [size, length + 1]."""
        return np.stack([self.window(rng) for _ in range(size)])

    def held_batch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        """`batch`, and which notes sound as each window begins.

        The same windows as `batch` for the same generator state, so that a
        model with held-note input trains on the data another would.

        Returns:
            (tokens [size, length + 1], `events.held_ages` before each window's
            first token [size, 128], transposed and stretched with its window).
        """
        windows, held = zip(*(self._window(rng, held=True) for _ in range(size)), strict=True)
        return np.stack(windows), np.stack(held)

    def future_batch(self, rng: np.random.Generator, size: int, ahead: int,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`held_batch`, and the `ahead` tokens that follow each window in its piece.

        The tokens after a window are augmented with it, so that what a window's
        last tokens are told is coming (`musicgen.controls.future_controls`)
        is the music that really follows, not only the part inside the window.

        Returns:
            (tokens [size, length + 1], held ages [size, 128], the following tokens
            [size, ahead], PAD-padded where the piece ends sooner).
        """
        rows = [self._window(rng, held=True, ahead=ahead) for _ in range(size)]
        windows, held, following = zip(*rows, strict=True)
        return np.stack(windows), np.stack(held), np.stack(following)

    def _window(self, rng: np.random.Generator, held: bool,
                ahead: int = 0) -> tuple[np.ndarray, ...]:
        piece = self.pieces[rng.choice(len(self.pieces), p=self.weights)]
        # Cut extra so that a stretch that shortens the window still fills it.
        need = self.length + 1
        cut = need + ahead + (int((need + ahead) * (1 - self.stretch_range[0])) + 8
                              if self.augment else 0)
        start = int(rng.integers(0, max(1, len(piece) - need + 1)))
        window = np.asarray(piece[start:start + cut], dtype=np.int64)
        ages = held_after(piece[:start], self.vocab) if held else np.full(PITCHES, -1)
        if self.augment:
            window, ages = self._augmented(window, ages, rng)
        window = _padded(window[:need + ahead], need + ahead, self.vocab.pad)
        if ahead:
            return window[:need], ages, window[need:]
        return window, ages

    def _augmented(self, window: np.ndarray, ages: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        low, high = safe_transpositions(window, self.vocab, self.transpose_range)
        semitones = int(rng.integers(low, high + 1)) if low <= high else 0
        factor = float(rng.uniform(*self.stretch_range))
        # A held note the transposition would push off the keyboard is let go.
        moved = np.full(PITCHES, -1)
        kept = slice(max(0, semitones), PITCHES + min(0, semitones))
        moved[kept] = ages[max(0, -semitones):PITCHES - max(0, semitones)]
        moved = np.where(moved >= 0, np.rint(moved * factor), -1).astype(np.int64)
        return time_stretch(transpose(window, semitones, self.vocab), factor, self.vocab), moved


def _padded(tokens: np.ndarray, length: int, pad: int) -> np.ndarray:
    if len(tokens) >= length:
        return tokens
    return np.concatenate((tokens, np.full(length - len(tokens), pad, np.int64)))


def open_cache(data: str | os.PathLike) -> TokenCache:
    """A token cache, or a folder of MIDI files first encoded into one.

    Args:
        data: A token cache (a folder with index.json), or a folder of MIDI
            files (a MAESTRO tree or any folder); the latter is encoded into
            `corpus.default_cache_dir(data)` (unchanged files are reused).

    Returns:
        The cache.
    """
    data = Path(data)
    if not (data / "index.json").is_file():
        # Imported here: training machines have no MIDI libraries, and a cache
        # needs none.
        from musicgen import corpus

        cache_dir = corpus.default_cache_dir(data)
        corpus.prepare(data, cache_dir, progress=False)
        data = cache_dir
    return TokenCache.load(data)


def open_split(data: str | os.PathLike | TokenCache,
               split: str) -> tuple[list[np.ndarray], list[float]]:
    """The pieces of one split and their length in seconds.

    Args:
        data: A `TokenCache`, or what `open_cache` opens.
        split: "train", "validation" or "test".

    Returns:
        (int64 token arrays, each [BOS, events..., EOS]; seconds of each piece).

    Raises:
        UserError: The data has no piece in `split`.
    """
    cache = data if isinstance(data, TokenCache) else open_cache(data)
    records = [p for p in cache.pieces if p["split"] == split]
    if not records:
        found = sorted({p["split"] for p in cache.pieces})
        raise UserError(f"the data has no pieces in the {split} split (it has: "
                        f"{', '.join(found) or 'none'})")
    pieces = [np.asarray(tokens, dtype=np.int64) for tokens in cache.split(split)]
    return pieces, [float(p["seconds"]) for p in records]
