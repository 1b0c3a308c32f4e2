"""Piano samples for the page's keyboard, rendered by FluidSynth from the app's soundfont.

A key pressed in the page must sound at once, so the browser cannot wait for
the server: it plays samples it loaded beforehand, pitch-shifting the nearest
one (at most a semitone away) and scaling its level between two velocity
layers. The samples are one MP3 of `BANK_PITCHES` x `BANK_VELOCITIES`
notes, one every `SLOT_SECONDS` (one download instead of sixty), rendered in
one go so their relative loudness is the soundfont's, and a JSON manifest
that says where each one is. Made once per soundfont and bank version and
kept; nothing but FluidSynth's output is served (without FluidSynth there is
no bank, and the keyboard records without sound).

    bank = make_sample_bank(renderer, cache_dir / "piano")   # None without FluidSynth
    bank.audio, bank.manifest                                 # the two files to serve
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pretty_midi

from musicgen.audio import Renderer, write_audio

BANK_VERSION = 1
BANK_PITCHES = tuple(range(22, 108, 3))  # every third key from A#0: none more than a semitone away
BANK_VELOCITIES = (48, 100)
NOTE_SECONDS = 1.6  # how long each sample's key is held; the page fades a longer note out
SLOT_SECONDS = 2.0  # room for the release and reverb before the next sample


@dataclass(frozen=True)
class SampleBank:
    """The files of a bank: `audio` (MP3) and `manifest` (JSON: pitches, velocities,
    slot seconds, and the slot of each (pitch, velocity), in that order)."""

    audio: Path
    manifest: Path


def make_sample_bank(renderer: Renderer, folder: str | os.PathLike,
                     soundfont: str | os.PathLike | None = None) -> SampleBank | None:
    """The bank for `soundfont` (the renderer's default if None), made if not kept yet.

    Args:
        renderer: Renders the notes.
        folder: Where banks are kept.
        soundfont: The soundfont to sample.

    Returns:
        The bank's files, or None where FluidSynth cannot render (the numpy
        fallback's tones are no piano to play).
    """
    chosen = Path(soundfont) if soundfont else (renderer.soundfonts or [None])[0]
    if chosen is None:
        return None
    stat = chosen.stat()
    key = hashlib.sha256(f"{BANK_VERSION} {chosen.resolve()} {stat.st_size} {stat.st_mtime_ns} "
                         f"{BANK_PITCHES} {BANK_VELOCITIES}".encode()).hexdigest()[:16]
    folder = Path(folder)
    bank = SampleBank(folder / f"piano-{key}.mp3", folder / f"piano-{key}.json")
    if bank.audio.is_file() and bank.manifest.is_file():
        return bank
    slots = [(pitch, velocity) for pitch in BANK_PITCHES for velocity in BANK_VELOCITIES]
    midi = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    piano = pretty_midi.Instrument(program=0, name="Piano")
    piano.notes = [pretty_midi.Note(velocity, pitch, i * SLOT_SECONDS,
                                    i * SLOT_SECONDS + NOTE_SECONDS)
                   for i, (pitch, velocity) in enumerate(slots)]
    midi.instruments.append(piano)
    rendering = renderer.render(midi, chosen)
    if rendering.engine != "fluidsynth":
        return None
    folder.mkdir(parents=True, exist_ok=True)
    # Written under temporary names and renamed: two processes starting at once
    # each make a whole bank, and neither serves the other's half-written file.
    partial = bank.audio.with_suffix(f".{os.getpid()}.mp3")
    write_audio(partial, rendering, mono=True)
    partial.replace(bank.audio)
    manifest = {"version": BANK_VERSION, "pitches": list(BANK_PITCHES),
                "velocities": list(BANK_VELOCITIES), "slot_seconds": SLOT_SECONDS,
                "note_seconds": NOTE_SECONDS, "soundfont": chosen.name}
    partial = bank.manifest.with_suffix(f".{os.getpid()}.json")
    partial.write_text(json.dumps(manifest))
    partial.replace(bank.manifest)
    return bank
