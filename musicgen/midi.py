"""MIDI files in and out: read into one sustained piano part, write from notes.

symusic does the parsing: it reads all of MAESTRO in about half a second, where
pretty_midi needs over a minute (BENCHMARKS.md), and this is the hot path of
`prepare`. pretty_midi is used only on the way out (`notes_to_pretty_midi`),
where its familiar object model is what callers want.

Every way a file can be unusable ends in one `MidiError` with a plain message,
so callers (the CLI, the app, corpus preparation) need to catch one thing.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi
import symusic

from musicgen.errors import MidiError
from musicgen.notes import Notes

MAX_MIDI_BYTES = 20 * 1024 * 1024
# Tracks a file may have. The parser's cost grows with the tracks as much as
# with the bytes: a valid 1.4 MB file of 65,535 empty tracks took about 250 MB
# to parse, and 16 of them at once 4.25 GB. MAESTRO has 2 a file, General MIDI
# songs one or two a channel, so this refuses nothing real.
MAX_TRACKS = 256
# Beyond these a file is almost certainly broken rather than unusual music.
MIN_QPM, MAX_QPM = 4.0, 2000.0
MAX_DURATION_SECONDS = 6 * 3600.0
SUSTAIN_CC = 64
SUSTAIN_THRESHOLD = 64  # CC64 values >= 64 hold the pedal down (as Magenta does)

MidiSource = str | os.PathLike | bytes | bytearray


@dataclass(frozen=True)
class MidiParts:
    """What reading a file did to it: how many of its tracks were merged into the one
    piano part and how many drum tracks were left out, and its first tempo."""

    pitched_tracks: int
    drum_tracks: int
    tempo_qpm: float | None

    @property
    def text(self) -> str:
        """In words, or "" for a plain one-track piano file."""
        said = []
        if self.pitched_tracks > 1:
            said.append(f"{self.pitched_tracks} tracks merged into one piano part")
        if self.drum_tracks:
            said.append(f"{'drums' if self.drum_tracks == 1 else f'{self.drum_tracks} drum tracks'}"
                        " left out")
        return "; ".join(said)


def read_midi(source: MidiSource) -> Notes:
    """Read a .mid/.midi file into one piano part with the sustain pedal applied.

    All non-drum tracks are merged; drum tracks are dropped. Sustain follows
    Magenta's performance pipeline: while CC64 >= 64 a released key keeps
    sounding until the pedal comes up, and striking a pitch again ends the
    earlier note of that pitch. Overlapping notes of one pitch are then cut at
    the later onset, since a piano key cannot sound twice.

    Args:
        source: A file path or the file's bytes.

    Returns:
        The notes, sorted by onset then pitch.

    Raises:
        MidiError: The file is empty, too large, not a MIDI file, truncated,
            of type 2, has an absurd tempo, or holds no piano notes.
    """
    return read_midi_parts(source)[0]


def read_midi_parts(source: MidiSource) -> tuple[Notes, MidiParts]:
    """`read_midi`, and what it did to the file's tracks (`MidiParts`).

    Raises:
        MidiError: As `read_midi`.
    """
    data = _read_bytes(source)
    _check_structure(data)
    try:
        score = symusic.Score.from_midi(data, ttype="second")
        ticks = symusic.Score.from_midi(data)
    except RuntimeError as error:  # symusic reports every parse failure this way
        raise MidiError(_plain_parse_error(str(error))) from None
    _check_tempo(ticks, score)

    parts = [_sustained_track(track) for track in score.tracks if not track.is_drum]
    parts = [p for p in parts if len(p)]
    if not parts:
        raise MidiError("the MIDI file contains no (non-drum) notes")
    report = MidiParts(len(parts), sum(1 for track in score.tracks
                                       if track.is_drum and len(track.notes)),
                       float(ticks.tempos[0].qpm) if len(ticks.tempos) else None)
    return _resolve_overlaps(Notes.concatenate(*parts)), report


def _read_bytes(source: MidiSource) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise MidiError(f"no such MIDI file: {path}")
        if path.stat().st_size > MAX_MIDI_BYTES:
            raise MidiError(_too_large(path.stat().st_size))
        data = path.read_bytes()
    if len(data) > MAX_MIDI_BYTES:
        raise MidiError(_too_large(len(data)))
    if not data:
        raise MidiError("the file is empty")
    return data


def _too_large(size: int) -> str:
    return (f"the file is {size / 2**20:.1f} MB; MIDI files over "
            f"{MAX_MIDI_BYTES // 2**20} MB are not accepted")


def _check_structure(data: bytes) -> None:
    """Walk the chunk headers so that truncation, type 2 and too many tracks get their own
    message, before the parser spends anything on the file."""
    if data[:4] != b"MThd":
        raise MidiError("this is not a MIDI file (its first bytes are not a MIDI header); "
                        "choose a .mid or .midi file saved by a MIDI program")
    if len(data) < 14:
        raise MidiError("the MIDI file is truncated (its header is incomplete); export it "
                        "again from your MIDI program")
    header_length, midi_format, n_tracks, _ = struct.unpack(">IHHH", data[4:14])
    if midi_format == 2:
        raise MidiError("MIDI type 2 (independent sequences) is not supported; "
                        "save the file as type 0 or 1")
    if midi_format > 2:
        raise MidiError(f"unknown MIDI format {midi_format}")
    if n_tracks > MAX_TRACKS:
        raise MidiError(_too_many_tracks(n_tracks))
    position, found = 8 + header_length, 0
    while found < n_tracks:
        if position + 8 > len(data):
            raise MidiError(f"the MIDI file is truncated: {found} of {n_tracks} "
                            "tracks are complete; export it again from your MIDI program")
        (length,) = struct.unpack(">I", data[position + 4:position + 8])
        if position + 8 + length > len(data):
            raise MidiError(f"the MIDI file is truncated inside track {found + 1} "
                            f"of {n_tracks}; export it again from your MIDI program")
        found += data[position:position + 4] == b"MTrk"
        position += 8 + length
    # Chunks past the header's count: a parser may read those too.
    while position + 8 <= len(data):
        found += data[position:position + 4] == b"MTrk"
        if found > MAX_TRACKS:
            raise MidiError(_too_many_tracks(found))
        position += 8 + struct.unpack(">I", data[position + 4:position + 8])[0]


def _too_many_tracks(tracks: int) -> str:
    return (f"the MIDI file has {tracks:,} tracks; musicgen reads files of up to "
            f"{MAX_TRACKS} (a piano piece has one or two): merge its tracks in your MIDI "
            "program and export it again")


def _plain_parse_error(message: str) -> str:
    """The parser's complaint in words for people (its own text names its internals)."""
    if "Division type" in message:
        return ("this MIDI file counts time in SMPTE frames, which musicgen cannot read; "
                "save it with the usual ticks-per-quarter-note timing")
    return ("the MIDI file is damaged: its events cannot be read (it may be cut short or "
            "not really a MIDI file); export it again from your MIDI program")


def _check_tempo(ticks: symusic.Score, seconds: symusic.Score) -> None:
    tempos = ticks.tempos.numpy()
    if len(tempos["mspq"]):
        qpm = 60e6 / np.maximum(tempos["mspq"].astype(np.float64), 1.0)
        bad = qpm[(qpm < MIN_QPM) | (qpm > MAX_QPM)]
        if len(bad):
            raise MidiError(f"the MIDI file's tempo is broken ({bad[0]:,.0f} beats per "
                            f"minute; music lies between {MIN_QPM:g} and {MAX_QPM:g}); "
                            "set a normal tempo in your MIDI program and export it again")
    if seconds.end() > MAX_DURATION_SECONDS:
        raise MidiError(f"the MIDI file would last {seconds.end() / 3600:.1f} hours; "
                        "its timing is broken")


def _sustained_track(track) -> Notes:
    notes = track.notes.numpy()
    start = notes["time"].astype(np.float64)
    end = start + np.maximum(notes["duration"].astype(np.float64), 0.0)
    controls = track.controls.numpy()
    is_sustain = controls["number"] == SUSTAIN_CC
    end = apply_sustain(start, end, controls["time"][is_sustain].astype(np.float64),
                        controls["value"][is_sustain])
    return Notes.from_arrays(notes["pitch"], notes["velocity"], start, end)


def apply_sustain(start: np.ndarray, end: np.ndarray, pedal_time: np.ndarray,
                  pedal_value: np.ndarray) -> np.ndarray:
    """Lengthen notes released while the sustain pedal is down.

    A note whose key is released at time e with the pedal down since d
    (d <= e) sounds until the pedal comes up at u > e. A release at exactly u
    is not held: Magenta orders pedal events before note-offs at equal times.
    A pedal never released holds to the last event of the track.

    Args:
        start: Note onsets in seconds.
        end: Key releases in seconds.
        pedal_time: Times of CC64 events, in file order.
        pedal_value: Their values 0..127.

    Returns:
        The new offsets (a new array; re-strikes are resolved separately).
    """
    down = pedal_value >= SUSTAIN_THRESHOLD
    changed = down != np.concatenate(([False], down[:-1]))
    change_time, change_down = pedal_time[changed], down[changed]
    if not change_down.any():
        return end.copy()
    presses = change_time[change_down]
    releases = change_time[~change_down]
    # Changes alternate press, release, press, ...: press i ends at release i,
    # and a final press never released lasts to the end of the track.
    last_time = max(end.max(initial=0.0), pedal_time.max(initial=0.0))
    held_until = np.append(releases, last_time)[: len(presses)]
    k = np.searchsorted(presses, end, side="right") - 1
    valid = k >= 0
    sustained = np.zeros_like(valid)
    sustained[valid] = end[valid] < held_until[k[valid]]
    new_end = end.copy()
    new_end[sustained] = held_until[k[sustained]]
    return new_end


def _resolve_overlaps(notes: Notes) -> Notes:
    """Cut each note at the next onset of its pitch; drop notes left empty."""
    order = np.lexsort((notes.start, notes.pitch))
    pitch, start, end = notes.pitch[order], notes.start[order], notes.end[order]
    next_same = np.append(pitch[1:] == pitch[:-1], False)
    next_start = np.append(start[1:], np.inf)
    end = np.where(next_same, np.minimum(end, next_start), end)
    keep = end > start
    return Notes.from_arrays(pitch[keep], notes.velocity[order][keep], start[keep], end[keep])


def notes_to_pretty_midi(notes: Notes, program: int = 0) -> pretty_midi.PrettyMIDI:
    """Put notes into a new one-instrument PrettyMIDI (acoustic grand by default)."""
    midi = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    piano = pretty_midi.Instrument(program=program, name="Piano")
    piano.notes = [pretty_midi.Note(int(v), int(p), float(s), float(e)) for p, v, s, e in
                   zip(notes.pitch, notes.velocity, notes.start, notes.end, strict=True)]
    midi.instruments.append(piano)
    return midi
