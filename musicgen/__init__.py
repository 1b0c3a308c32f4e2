"""musicgen: expressive piano music from performance-event models.

Data flows MIDI -> notes (`midi`, `notes`) -> events (`events`) -> model
(`model`) -> sampler (`sample`) -> events -> MIDI -> audio (`audio`).

The MIDI-facing names are imported on first use, so that training on a
machine with only torch and numpy (`musicgen.train`) never loads symusic or
pretty_midi.
"""

from importlib import import_module

from musicgen.events import VOCAB, DecodeReport, Vocabulary
from musicgen.notes import Notes

__version__ = "0.1.0"
_FROM_MIDI = ("MidiError", "decode_tokens", "encode_midi", "read_midi")
__all__ = ["VOCAB", "DecodeReport", "Notes", "Vocabulary", *_FROM_MIDI]


def __getattr__(name: str):
    if name in _FROM_MIDI:
        return getattr(import_module("musicgen.midi"), name)
    raise AttributeError(f"module 'musicgen' has no attribute {name!r}")
