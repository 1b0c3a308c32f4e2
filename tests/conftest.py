"""Shared test helpers: small MIDI files made inside the tests, and MAESTRO access."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pretty_midi
import pytest

REPO = Path(__file__).resolve().parent.parent
MAESTRO = Path(os.environ.get("MUSICGEN_MAESTRO_DIR", REPO.parent / "shared/data/maestro-v3.0.0"))


def midi_bytes(notes, pedal=(), drums=(), program: int = 0, extra_instruments=()) -> bytes:
    """A MIDI file as bytes.

    Args:
        notes: (pitch, velocity, start, end) tuples for a piano track.
        pedal: (time, value) CC64 events on the piano track.
        drums: (pitch, velocity, start, end) tuples for a drum track.
        extra_instruments: lists of note tuples, one more non-drum track each.
    """
    midi = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    tracks = [(notes, pedal, False, program)] + [(n, (), False, 40) for n in extra_instruments]
    if drums:
        tracks.append((drums, (), True, 0))
    for track_notes, track_pedal, is_drum, track_program in tracks:
        instrument = pretty_midi.Instrument(program=track_program, is_drum=is_drum)
        instrument.notes = [pretty_midi.Note(v, p, s, e) for p, v, s, e in track_notes]
        instrument.control_changes = [pretty_midi.ControlChange(64, value, time)
                                      for time, value in track_pedal]
        midi.instruments.append(instrument)
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue()


@pytest.fixture
def maestro_dir() -> Path:
    """The MAESTRO v3.0.0 folder; the test is skipped, with the reason, where it is absent."""
    if not (MAESTRO / "maestro-v3.0.0.csv").is_file():
        reason = f"MAESTRO v3.0.0 not found at {MAESTRO} (set MUSICGEN_MAESTRO_DIR)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    return MAESTRO
