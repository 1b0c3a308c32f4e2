"""Music a person played in the page: notes sent by a browser, checked like a file.

The page's keyboard (mouse, touch, computer keys or a MIDI keyboard) records
notes as `[pitch, velocity, start, end]` rows, times in seconds, and sends them
as JSON. Nothing a browser sends is trusted: `notes_from_page` takes only
what an uploaded MIDI file could hold (`musicgen.prompt.read_seed_file`),
within bounds that a person playing cannot reach, and says in plain words
what is wrong with anything else.

    notes = notes_from_page(json.loads(message)["notes"])
    write_played_midi(notes, "played.mid")
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pretty_midi

from musicgen.errors import MidiError
from musicgen.midi import notes_to_pretty_midi
from musicgen.notes import Notes

# Bounds no person reaches: 20 notes a second for 10 minutes, a key held a minute.
MAX_PLAYED_NOTES = 12_000
MAX_PLAYED_SECONDS = 600.0
MAX_NOTE_SECONDS = 60.0
PLAYED_TEXT = "musicgen: played in the page"  # marks a MIDI file made from playing


def notes_from_page(rows: object, max_notes: int = MAX_PLAYED_NOTES,
                    max_seconds: float = MAX_PLAYED_SECONDS) -> Notes:
    """Notes from what the page sent, or a `MidiError` that says what is wrong.

    Args:
        rows: A list of `[pitch, velocity, start, end]`: pitch an integer 0-127,
            velocity an integer 1-127, times in seconds from the start of the
            playing, `0 <= start < end`, rows in order of their starts.
        max_notes: Most notes taken.
        max_seconds: Latest time a note may end.

    Returns:
        The notes (none for an empty list).

    Raises:
        MidiError: Anything else, with the first thing wrong in plain words.
    """
    if not isinstance(rows, list):
        raise MidiError("the notes from the page did not arrive as a list of notes; "
                        "play them again")
    if len(rows) > max_notes:
        raise MidiError(f"that is {len(rows):,} notes; a played phrase can have up to "
                        f"{max_notes:,}. Clear it and play a shorter one")
    if not rows:
        return Notes.empty()
    for number, row in enumerate(rows, 1):
        if (not isinstance(row, list) or len(row) != 4
                or not all(is_finite_number(value) for value in row)):
            raise MidiError(f"note {number} from the page is not four numbers (pitch, "
                            "velocity, start, end)")
    pitch, velocity, start, end = np.asarray(rows, dtype=np.float64).T
    checks = (
        (pitch != np.round(pitch), "has a pitch that is not a whole number"),
        ((pitch < 0) | (pitch > 127), "has a pitch outside MIDI's 0-127"),
        (velocity != np.round(velocity), "has a velocity that is not a whole number"),
        ((velocity < 1) | (velocity > 127), "has a velocity outside 1-127"),
        (start < 0, "starts before the playing began"),
        (end <= start, "ends before it starts"),
        (end - start > MAX_NOTE_SECONDS, f"is held longer than {MAX_NOTE_SECONDS:.0f} s"),
        (end > max_seconds, f"ends after {max_seconds / 60:.0f} minutes, the longest "
                            "playing taken"),
        (np.diff(start, prepend=0.0) < 0, "starts before the note sent before it"),
    )
    for wrong, saying in checks:
        if wrong.any():
            raise MidiError(f"note {int(np.argmax(wrong)) + 1} from the page {saying}")
    return Notes.from_arrays(pitch.astype(np.int16), velocity.astype(np.int16), start, end)


def is_finite_number(value: object) -> bool:
    """A JSON number a float can hold (not a bool, NaN, infinity, or an int like 10**400)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def notes_to_rows(notes: Notes, shift: float = 0.0) -> list[list]:
    """The notes as the page's rows (times moved by `shift`, rounded to the millisecond)."""
    return [[int(p), int(v), round(float(s) + shift, 3), round(float(e) + shift, 3)]
            for p, v, s, e in zip(notes.pitch, notes.velocity, notes.start, notes.end,
                                  strict=True)]


def write_played_midi(notes: Notes, path: str | os.PathLike) -> Path:
    """A played phrase as a MIDI file (one piano part), marked as played in the page."""
    midi = notes_to_pretty_midi(notes)
    midi.text_events.append(pretty_midi.Text(PLAYED_TEXT, 0.0))
    path = Path(path)
    midi.write(str(path))
    return path
