"""The seed MIDI as a prompt: the excerpt of music a continuation starts from.

People call the music they start from the *seed MIDI*; in the code it is the
`Prompt`, so that it can never be mistaken for the random seed. A prompt comes
from a MIDI file (with the same checks for the CLI and the app), a built-in
example, or silence; `musicgen.recipe` rebuilds the exact prompt of a recipe.

    prompt = choose_prompt("upload", path="mine.mid", seconds=10)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musicgen.errors import MidiError, SettingsError, UserError
from musicgen.events import STEPS_PER_SECOND, decode_events, encode_notes, event_steps
from musicgen.examples import example_names, example_notes
from musicgen.midi import MidiParts, read_midi_parts
from musicgen.notes import Notes
from musicgen.settings import Limit, to_number

PROMPT_SECONDS = Limit(0, 60, "Excerpt length (seconds)",
                       "how much of the seed MIDI the model hears")
DEFAULT_PROMPT_SECONDS = 10.0
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MIDI_SUFFIXES = (".mid", ".midi")
PROMPT_KINDS = ("example", "upload", "played", "silence")
SHORT_PIECE_SECONDS = 60.0  # up to this long, a seed MIDI is continued from its end


@dataclass(frozen=True)
class Prompt:
    """The music a continuation starts from.

    Attributes:
        tokens: Its events (no BOS); every note in it is closed by its NOTE_OFF.
        notes: Its notes as the tokens give them (10 ms steps, velocity bins),
            starting at time 0, of any length.
        source: "example:<name>", "upload:<file name>", "played:<file name>" (played
            in the page, `musicgen.played`), "silence", or as a recipe recorded it.
        seconds: How long it lasts (to its last event): where the continuation starts.
    """

    tokens: np.ndarray
    notes: Notes
    source: str
    seconds: float

    @property
    def sha256(self) -> str:
        return hashlib.sha256(np.asarray(self.tokens, np.int64).tobytes()).hexdigest()


def prompt_from_tokens(tokens: np.ndarray, source: str) -> Prompt:
    """A prompt from its events (as `prompt_from_notes` encodes them, or a recipe stores them)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    # No 5 s cut here: the prompt is real music, where pedalled notes last longer.
    notes, _ = decode_events(tokens, max_note_seconds=None)
    steps, _ = event_steps(tokens)
    return Prompt(tokens, notes, source, float(steps[-1]) / STEPS_PER_SECOND if len(steps) else 0.0)


def default_start(notes: Notes, seconds: float) -> float:
    """Where an excerpt of `seconds` starts when nobody chose: a part with music in it.

    A short piece (up to a minute, or twice `seconds`) is continued from its end,
    as someone who plays in a few bars expects. A longer one is not: continuing the final
    chord of a whole performance gives silence (measured on MAESTRO files: 0 to
    3 notes/s where the built-in examples give 11). Its excerpt is, on a 1 s
    grid, the window with the most onsets among those that end between a
    quarter and 85% of the way through.
    """
    duration = notes.duration
    if duration <= max(SHORT_PIECE_SECONDS, 2 * seconds):
        return max(0.0, duration - seconds)
    ends = np.arange(max(seconds, 0.25 * duration), 0.85 * duration + 1e-9, 1.0)
    onsets = np.sort(notes.start)
    counts = np.searchsorted(onsets, ends) - np.searchsorted(onsets, ends - seconds)
    best = len(counts) - 1 - int(np.argmax(counts[::-1]))  # the latest of equal windows
    return float(ends[best] - seconds)


def prompt_from_notes(notes: Notes, seconds: float, source: str,
                      start: float | None = None) -> Prompt:
    """An excerpt of some notes as a prompt (0 seconds, or no notes in it: silence).

    Args:
        notes: The seed music.
        seconds: The excerpt's length.
        source: What to call it in recipes.
        start: Where the excerpt begins; None: `default_start`.

    Raises:
        SettingsError: `seconds` is outside `PROMPT_SECONDS`, or `start` is
            outside the music.
    """
    PROMPT_SECONDS.check(seconds)
    if start is None:
        start = default_start(notes, seconds)
    elif not 0 <= start < max(notes.duration, 1e-9):
        raise SettingsError(f"the excerpt must start within the music (0-"
                            f"{notes.duration:.1f} s), not at {start:g} s")
    excerpt = notes.window(start, start + seconds)
    if seconds == 0 or not len(excerpt):
        return silence()
    return prompt_from_tokens(encode_notes(excerpt), source)


def prompt_from_file(path: str | os.PathLike, seconds: float,
                     start: float | None = None) -> Prompt:
    """An excerpt of a .mid/.midi file, with the checks every front end applies.

    Raises:
        MidiError: Not a .mid/.midi name, larger than `MAX_UPLOAD_BYTES`, or
            not usable MIDI (the message says why).
        SettingsError: `seconds` is out of range.
    """
    return prompt_from_notes(read_seed_file(path), seconds, f"upload:{Path(path).name}", start)


def read_seed_file(path: str | os.PathLike) -> Notes:
    """The notes of a seed MIDI file, after the checks of `prompt_from_file`."""
    return read_seed_file_parts(path)[0]


def read_seed_file_parts(path: str | os.PathLike) -> tuple[Notes, MidiParts]:
    """`read_seed_file`, and what reading it did to the file's tracks."""
    path = Path(path)
    if path.suffix.lower() not in MIDI_SUFFIXES:
        raise MidiError(f"{path.name} is not a MIDI file name; choose a .mid or .midi file")
    if not path.is_file():
        raise MidiError(f"there is no file {path}")
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise MidiError(f"{path.name} is {size / 2**20:.1f} MB; seed MIDI files are limited "
                        f"to {MAX_UPLOAD_BYTES // 2**20} MB")
    return read_midi_parts(path)


def prompt_from_example(name: str, seconds: float) -> Prompt:
    """The last `seconds` of a built-in example (`musicgen.examples`)."""
    return prompt_from_notes(example_notes(name), seconds, f"example:{name}")


def silence() -> Prompt:
    """No seed music: the model starts from BOS alone."""
    return Prompt(np.zeros(0, np.int64), Notes.empty(), "silence", 0.0)


def choose_prompt(kind: str, *, example: str | None = None,
                  path: str | os.PathLike | None = None,
                  seconds: float | None = None, start: float | None = None) -> Prompt:
    """The prompt a person chose: an example, an uploaded file, or silence.

    Args:
        kind: One of `PROMPT_KINDS`.
        example: The example's name (kind "example"; default: the first).
        path: The MIDI file (kind "upload"; kind "played": the one
            `musicgen.played.write_played_midi` wrote).
        seconds: The excerpt's length (default `DEFAULT_PROMPT_SECONDS`).
        start: Where the excerpt begins (None: `default_start`).

    Raises:
        UserError: An unknown kind, a missing file, or any error of the
            functions above.
    """
    seconds = (DEFAULT_PROMPT_SECONDS if seconds in (None, "")
               else to_number(PROMPT_SECONDS.label, seconds))
    start = None if start in (None, "") else to_number("The excerpt's start", start)
    if kind == "silence":
        return silence()
    if kind == "upload":
        if not path:
            raise MidiError("upload a .mid or .midi file first, or choose another kind of seed")
        return prompt_from_file(path, seconds, start)
    if kind == "played":
        if not path:
            raise MidiError("play something on the keyboard first, or choose another kind "
                            "of seed")
        return prompt_from_notes(read_seed_file(path), seconds, f"played:{Path(path).name}",
                                 start)
    if kind == "example":
        name = example_names()[0] if example is None else example
        return prompt_from_notes(example_notes(name), seconds, f"example:{name}", start)
    raise UserError(f"there is no kind of seed called {kind}; choose one of: "
                    f"{', '.join(PROMPT_KINDS)}")
