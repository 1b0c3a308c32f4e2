"""musicgen: expressive piano music from performance-event models.

Data flows MIDI -> notes (`midi`, `notes`) -> events (`events`) -> model
(`model`) -> sampler (`sample`) -> events -> MIDI -> audio (`audio`).

The MIDI-facing names are imported on first use, so that training on a
machine with only torch and numpy (`musicgen.train`) never loads symusic or
pretty_midi.
"""

import contextlib
import sys
from importlib import import_module


def _import_fluidsynth_quietly() -> None:
    """Import pyfluidsynth with its stdout sent to stderr.

    pyfluidsynth prints where it found libfluidsynth to *stdout* whenever $CI is
    set, and pretty_midi imports it, which would corrupt `--json` output in CI.
    Importing it first, here, keeps the module cached and stdout clean.
    """
    with contextlib.redirect_stdout(sys.stderr), contextlib.suppress(ImportError, OSError):
        import fluidsynth  # noqa: F401


_import_fluidsynth_quietly()

from musicgen.errors import MidiError, UserError  # noqa: E402
from musicgen.events import VOCAB, DecodeReport, Vocabulary  # noqa: E402
from musicgen.notes import Notes  # noqa: E402

__version__ = "0.1.0"
_FROM_MIDI = ("read_midi",)
__all__ = ["VOCAB", "DecodeReport", "MidiError", "Notes", "UserError", "Vocabulary", *_FROM_MIDI]


def __getattr__(name: str):
    if name in _FROM_MIDI:
        return getattr(import_module("musicgen.midi"), name)
    raise AttributeError(f"module 'musicgen' has no attribute {name!r}")
