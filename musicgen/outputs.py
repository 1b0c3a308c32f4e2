"""A candidate to files: its MIDI (with the recipe) and its audio.

Both front ends write through `write_candidate`, with one `Renderer` that
lives as long as they do (the CLI's process, the app's `Studio`), so a
soundfont is loaded once however many candidates are rendered.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from musicgen.audio import LiveRender, Renderer, Rendering, default_renderer, write_audio
from musicgen.compose import Candidate
from musicgen.errors import UserError


@dataclass(frozen=True)
class CandidateFiles:
    """What `write_candidate` wrote.

    Attributes:
        midi: The MIDI file (it carries the recipe).
        audio: The audio file, or None when none was asked for.
        rendering: How the audio was made (engine, soundfont, loudness), or None.
        rendering_s: Seconds spent rendering and encoding the audio.
    """

    midi: Path
    audio: Path | None = None
    rendering: Rendering | None = None
    rendering_s: float = 0.0


def check_output(path: str | os.PathLike) -> Path:
    """Refuse, before any sampling, a file that cannot be written.

    Raises:
        UserError: Its folder does not exist, or it is a folder itself.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; give a file name, such as {path / 'out.mid'}")
    if not path.parent.is_dir():
        raise UserError(f"the folder {path.parent} does not exist; create it first")
    return path


def numbered(path: str | os.PathLike, index: int, count: int) -> Path:
    """`out.mid` for a single candidate; `out-1.mid`, `out-2.mid`, ... for several."""
    path = Path(path)
    return path if count == 1 else path.with_name(f"{path.stem}-{index + 1}{path.suffix}")


def write_candidate(candidate: Candidate, midi_path: str | os.PathLike,
                    audio_path: str | os.PathLike | None = None, *,
                    renderer: Renderer | None = None,
                    soundfont: str | None = None, mono: bool = False,
                    live: LiveRender | None = None) -> CandidateFiles:
    """Write a candidate's MIDI, and its audio where a path is given.

    Args:
        candidate: From `musicgen.compose.compose`.
        midi_path: The .mid file to write.
        audio_path: Audio file; its suffix picks the format (`write_audio`).
        renderer: Renders the audio (default: the process's shared one).
        soundfont: Soundfont path; None or "" for the renderer's default.
        mono: Compressed audio in one channel (`musicgen.audio.write_compressed`).
        live: Where the audio was begun while the candidate was sampled
            (`musicgen.audio.LiveRender`, of `renderer`).

    Returns:
        The paths written and how the audio was made.

    Raises:
        UserError: The soundfont does not exist.
    """
    midi = Path(midi_path)
    candidate.midi.write(str(midi))
    audio = rendering = None
    began = time.perf_counter()
    if audio_path is not None:
        rendering = (renderer or default_renderer()).render(candidate.midi, soundfont,
                                                            live=live)
        audio = write_audio(audio_path, rendering, mono=mono)
    return CandidateFiles(midi, audio, rendering, time.perf_counter() - began)
