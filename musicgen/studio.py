"""What the demo does, without any UI: the app only wires widgets to a `Studio`.

A `Studio` is made once at start-up. It loads every checkpoint and the
renderer, and never changes afterwards; each request gets its own output
folder, so concurrent users share nothing mutable but the renderer (which
serialises its renders on a lock) and the ratings file (appended under a lock).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from musicgen import compose
from musicgen.audio import Renderer, write_wav
from musicgen.examples import example_names, example_notes
from musicgen.midi import MidiError, notes_to_pretty_midi, read_midi
from musicgen.plots import confidence, piano_roll

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
OUTPUT_TTL_S = 3600.0
SILENCE = "Start from silence"
UPLOAD = "Upload a MIDI file"


@dataclass
class Clip:
    """One playable result for the UI: files and words."""

    title: str
    audio: str
    midi: str
    piano_roll: str
    stats: str
    recipe: str
    recipe_data: dict
    engine_note: str = ""


class Studio:
    """Loaded models, the renderer, and the demo's operations.

    Args:
        checkpoint_dir: Folder of checkpoint folders (each with model.safetensors).
        output_dir: Where per-request folders go (old ones are pruned).
        ratings_path: JSON-lines file that `rate` appends to.
        maestro_dir: Optional MAESTRO tree for human reference continuations.
    """

    def __init__(self, checkpoint_dir: str | os.PathLike = compose.CHECKPOINT_DIR,
                 output_dir: str | os.PathLike | None = None,
                 ratings_path: str | os.PathLike | None = None,
                 maestro_dir: str | os.PathLike | None = None):
        found = compose.find_checkpoints(checkpoint_dir)
        if not found:
            raise FileNotFoundError(f"no checkpoints found in {checkpoint_dir}")
        self.models = {name: compose.load_model(path, name) for name, path in found.items()}
        self.renderer = Renderer()
        root = Path(output_dir or Path(tempfile.gettempdir()) / "musicgen-outputs")
        self.output_dir = root
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.ratings_path = Path(ratings_path or self.output_dir / "ratings.jsonl")
        self._ratings_lock = threading.Lock()
        self.maestro_dir = Path(maestro_dir) if maestro_dir else None
        self.examples = example_names()

    # --- choices for the UI ---

    def model_names(self) -> list[str]:
        """Shipped models, the default (LSTM) first."""
        return list(self.models)

    def soundfont_names(self) -> list[str]:
        """Soundfonts found, by path (the first is the default)."""
        return [str(path) for path in self.renderer.soundfonts]

    def cards(self) -> list[dict]:
        """The model cards, for the About tab."""
        return [model.card for model in self.models.values()]

    # --- operations ---

    def primer(self, source: str, example: str | None, upload: str | None,
               primer_seconds: float) -> compose.Primer:
        """The primer chosen in the UI: an example, an upload, or silence.

        Raises:
            MidiError: The upload is missing, too large, or not usable MIDI.
            ValueError: Bad primer length or unknown example.
        """
        if source == SILENCE:
            return compose.silence()
        if source == UPLOAD:
            if not upload:
                raise MidiError("please upload a .mid or .midi file first")
            path = Path(upload)
            if path.suffix.lower() not in (".mid", ".midi"):
                raise MidiError(f"{path.name} is not a .mid/.midi file")
            if path.stat().st_size > MAX_UPLOAD_BYTES:
                raise MidiError(f"{path.name} is {path.stat().st_size / 2**20:.1f} MB; "
                                f"uploads are limited to {MAX_UPLOAD_BYTES // 2**20} MB")
            return compose.primer_from_midi(path, primer_seconds, path.name)
        if example not in self.examples:
            raise ValueError(f"unknown example {example!r}")
        return compose.primer_from_example(example, primer_seconds)

    def generate(self, model_name: str, primer: compose.Primer, settings: compose.Settings,
                 soundfont: str | None = None,
                 on_progress: Callable[[float], None] | None = None,
                 ) -> tuple[list[Clip], list[compose.Candidate]]:
        """Sample, write MIDI, render audio and draw a piano roll per candidate."""
        model = self._model(model_name)
        candidates = compose.compose(model, primer, settings, on_progress=on_progress)
        folder = self._request_folder()
        clips = [self._clip(candidate, folder, f"{model_name} #{candidate.index + 1}", soundfont)
                 for candidate in candidates]
        return clips, candidates

    def confidence_plot(self, candidate: compose.Candidate, title: str) -> str:
        """PNG of per-step entropy and chosen probability for one candidate."""
        path = self._request_folder() / "confidence.png"
        return str(confidence(candidate.entropy, candidate.chosen_probability, path, title))

    def preview_example(self, name: str, soundfont: str | None = None) -> str:
        """A WAV of a built-in example, for the preview player."""
        if name not in self.examples:
            raise ValueError(f"unknown example {name!r}")
        path = self._request_folder() / "example.wav"
        rendering = self.renderer.render(notes_to_pretty_midi(example_notes(name)), soundfont)
        return str(write_wav(path, rendering))

    def reference(self, piece: int, start: float, primer_seconds: float,
                  seconds: float, soundfont: str | None = None,
                  ) -> tuple[compose.Primer, Clip]:
        """A MAESTRO test-split excerpt: its first part as the primer, the rest as reference.

        Raises:
            FileNotFoundError: No MAESTRO folder is configured.
        """
        if self.maestro_dir is None:
            raise FileNotFoundError("no MAESTRO folder configured (set MUSICGEN_MAESTRO_DIR)")
        from musicgen.corpus import list_midi_files  # noqa: PLC0415 - only with MAESTRO

        tests = [path for path, split in list_midi_files(self.maestro_dir) if split == "test"]
        path = tests[piece % len(tests)]
        notes = read_midi(path)
        start = min(start, max(0.0, notes.duration - primer_seconds - seconds))
        primer_notes = notes.window(start, start + primer_seconds)
        primer = compose.primer_from_notes(primer_notes, primer_seconds,
                                           f"maestro-test:{path.name}")
        both = notes.window(start, start + primer_seconds + seconds)
        folder = self._request_folder()
        midi = notes_to_pretty_midi(both)
        midi_path = folder / "reference.mid"
        midi.write(str(midi_path))
        rendering = self.renderer.render(midi, soundfont)
        audio = write_wav(folder / "reference.wav", rendering)
        roll = piano_roll(both, primer_seconds, folder / "reference.png", "human (MAESTRO)")
        stats = compose.note_stats(both, primer_seconds)
        recipe = {"reference": path.name, "start_s": round(start, 2)}
        return primer, Clip("human performance (MAESTRO test split)", str(audio), str(midi_path),
                            str(roll), compose.describe_stats(stats),
                            f"{path.name} from {start:.1f} s (CC BY-NC-SA 4.0)", recipe)

    def rate(self, session: str, clip: dict, score: int | None, comment: str = "") -> str:
        """Append one rating (1-5) of a clip's recipe to the ratings file."""
        if score is None:
            raise ValueError("pick a score from 1 to 5 first")
        if not 1 <= int(score) <= 5:
            raise ValueError(f"scores go from 1 to 5, not {score}")
        record = {"time": time.time(), "session": session, "score": int(score),
                  "comment": comment[:500], "recipe": clip}
        with self._ratings_lock, open(self.ratings_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        return f"Thanks: rated {int(score)}/5."

    # --- helpers ---

    def _model(self, name: str) -> compose.LoadedModel:
        if name not in self.models:
            raise ValueError(f"unknown model {name!r}; choose one of {', '.join(self.models)}")
        return self.models[name]

    def _clip(self, candidate: compose.Candidate, folder: Path, title: str,
              soundfont: str | None) -> Clip:
        stem = f"candidate-{candidate.index + 1}-seed{candidate.recipe['seed']}"
        midi_path = compose.write_midi(candidate, folder / f"{stem}.mid")
        rendering = self.renderer.render(candidate.midi, soundfont or None)
        audio = write_wav(folder / f"{stem}.wav", rendering)
        roll = piano_roll(candidate.notes, candidate.primer_end, folder / f"{stem}.png", title)
        recipe = {k: v for k, v in candidate.recipe.items() if k != "primer_tokens"}
        note = "" if rendering.engine == "fluidsynth" else f"Audio: {rendering.note}"
        return Clip(title, str(audio), str(midi_path), str(roll),
                    compose.describe_stats(candidate.stats),
                    compose.recipe_summary(candidate.recipe), recipe, note)

    def _request_folder(self) -> Path:
        self._prune()
        folder = self.output_dir / uuid.uuid4().hex
        folder.mkdir(parents=True)
        return folder

    def _prune(self) -> None:
        """Delete request folders older than an hour (the app's temp files)."""
        cutoff = time.time() - OUTPUT_TTL_S
        for folder in self.output_dir.iterdir():
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)

