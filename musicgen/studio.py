"""What the demo does, without any UI: the app only wires widgets to a `Studio`.

A `Studio` is made once at start-up. It loads every checkpoint and the
renderer, and never changes afterwards; each request gets its own output
folder, so concurrent users share nothing mutable but the renderer (which
serialises its renders on a lock), the ratings file (appended under a lock)
and the list of MAESTRO test files (read once, on first use).
"""

from __future__ import annotations

import dataclasses
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
from musicgen.audio import Renderer, soundfont_path, write_wav
from musicgen.errors import UserError
from musicgen.examples import example_names, example_notes
from musicgen.midi import notes_to_pretty_midi, read_midi
from musicgen.outputs import write_candidate
from musicgen.plots import confidence, piano_roll
from musicgen.prompt import Prompt, choose_prompt, prompt_from_notes
from musicgen.recipe import recipe_summary
from musicgen.resources import checkpoint_dir as default_checkpoint_dir
from musicgen.settings import Settings

OUTPUT_TTL_S = 3600.0


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

    def __init__(self, checkpoint_dir: str | os.PathLike | None = None,
                 output_dir: str | os.PathLike | None = None,
                 ratings_path: str | os.PathLike | None = None,
                 maestro_dir: str | os.PathLike | None = None):
        found = compose.find_checkpoints(checkpoint_dir)
        if not found:
            raise UserError(f"there are no checkpoints in "
                            f"{checkpoint_dir or default_checkpoint_dir()}")
        self.models = {name: compose.load_model(path, name) for name, path in found.items()}
        self.renderer = Renderer()
        root = Path(output_dir or Path(tempfile.gettempdir()) / "musicgen-outputs")
        self.output_dir = root
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.ratings_path = Path(ratings_path or self.output_dir / "ratings.jsonl")
        self._ratings_lock = threading.Lock()
        self.maestro_dir = Path(maestro_dir) if maestro_dir else None
        self._maestro_tests: list[Path] | None = None
        self._maestro_lock = threading.Lock()
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

    def prompt(self, kind: str, example: str | None, upload: str | None,
               seconds: float | None) -> Prompt:
        """The prompt chosen in the UI (`musicgen.prompt.choose_prompt`).

        Raises:
            UserError: A missing or unusable upload, an unknown example, a bad length.
        """
        return choose_prompt(kind, example=example, path=upload, seconds=seconds)

    def generate(self, model_name: str, prompt: Prompt, settings: Settings,
                 soundfont: str | None = None,
                 on_progress: Callable[[float], None] | None = None,
                 ) -> tuple[list[Clip], list[compose.Candidate]]:
        """Sample, write MIDI, render audio and draw a piano roll per candidate.

        Raises:
            UserError: An unknown model or soundfont (checked before sampling).
        """
        model = self._model(model_name)
        soundfont_path(soundfont)
        candidates = compose.compose(model, prompt, settings, on_progress=on_progress)
        folder = self._request_folder()
        clips = [self._clip(candidate, folder, f"{model_name} #{candidate.index + 1}", soundfont)
                 for candidate in candidates]
        return clips, candidates

    def compare(self, prompt: Prompt, settings: Settings, soundfont: str | None = None,
                on_progress: Callable[[float], None] | None = None) -> list[Clip]:
        """One candidate per model, same prompt, settings and seed, in `model_names` order."""
        names = self.model_names()
        clips = []
        for k, name in enumerate(names):
            def progress(fraction: float, k: int = k) -> None:
                if on_progress is not None:
                    on_progress((k + fraction) / len(names))
            clips.append(self.generate(name, prompt, settings.but(n=1), soundfont,
                                       progress)[0][0])
        return clips

    def greedy_and_sampled(self, model_name: str, prompt: Prompt, settings: Settings,
                           soundfont: str | None = None) -> list[tuple[Clip, str]]:
        """The prompt continued greedily and by sampling, same seed, with confidence plots.

        The sampled clip uses the settings' temperature; where that is 0 (greedy
        itself) it uses the default temperature instead, and its title says so.

        Returns:
            [(greedy clip, its plot), (sampled clip, its plot)].
        """
        temperature = settings.temperature or Settings().temperature
        pairs = []
        for title, value in (("greedy (temperature 0)", 0.0),
                             (f"sampled (temperature {temperature:g}"
                              + (", the default: yours is 0)" if not settings.temperature
                                 else ")"), temperature)):
            clips, candidates = self.generate(model_name, prompt,
                                              settings.but(temperature=value, n=1), soundfont)
            clip = dataclasses.replace(clips[0], title=title)
            pairs.append((clip, self.confidence_plot(candidates[0], title)))
        return pairs

    def confidence_plot(self, candidate: compose.Candidate, title: str) -> str:
        """PNG of per-step entropy and chosen probability for one candidate."""
        path = self._request_folder() / "confidence.png"
        return str(confidence(candidate.entropy, candidate.chosen_probability, path, title))

    def preview_example(self, name: str, soundfont: str | None = None) -> str:
        """A WAV of a built-in example, for the preview player."""
        path = self._request_folder() / "example.wav"
        rendering = self.renderer.render(notes_to_pretty_midi(example_notes(name)), soundfont)
        return str(write_wav(path, rendering))

    def reference(self, piece: int, start: float, prompt_seconds: float,
                  seconds: float, soundfont: str | None = None) -> tuple[Prompt, Clip]:
        """A MAESTRO test-split excerpt: its first part as the prompt, the rest as reference.

        Raises:
            UserError: No MAESTRO folder is configured, or it has no test split.
        """
        path = self._maestro_test_files()[piece % len(self._maestro_test_files())]
        notes = read_midi(path)
        start = min(start, max(0.0, notes.duration - prompt_seconds - seconds))
        prompt = prompt_from_notes(notes.window(start, start + prompt_seconds), prompt_seconds,
                                   f"maestro-test:{path.name}")
        both = notes.window(start, start + prompt_seconds + seconds)
        folder = self._request_folder()
        midi = notes_to_pretty_midi(both)
        midi_path = folder / "reference.mid"
        midi.write(str(midi_path))
        audio = write_wav(folder / "reference.wav", self.renderer.render(midi, soundfont))
        roll = piano_roll(both, prompt_seconds, folder / "reference.png", "human (MAESTRO)")
        stats = compose.note_stats(both, prompt_seconds)
        recipe = {"reference": path.name, "start_s": round(start, 2)}
        return prompt, Clip("human performance (MAESTRO test split)", str(audio),
                            str(midi_path), str(roll), compose.describe_stats(stats),
                            f"{path.name} from {start:.1f} s (CC BY-NC-SA 4.0)", recipe)

    def _maestro_test_files(self) -> list[Path]:
        """The test split's files, listed once (the tree is large and does not change)."""
        if self.maestro_dir is None:
            raise UserError("no MAESTRO folder is configured; set MUSICGEN_MAESTRO_DIR to "
                            "use test-split excerpts")
        from musicgen.corpus import list_midi_files  # noqa: PLC0415 - only with MAESTRO

        with self._maestro_lock:
            if self._maestro_tests is None:
                self._maestro_tests = [path for path, split in list_midi_files(self.maestro_dir)
                                       if split == "test"]
        if not self._maestro_tests:
            raise UserError(f"the MAESTRO folder {self.maestro_dir} has no test-split files")
        return self._maestro_tests

    def rate(self, session: str, clip: dict, score: int | None, comment: str = "") -> str:
        """Append one rating (1-5) of a clip's recipe to the ratings file."""
        if score is None:
            raise UserError("pick a score from 1 to 5 first")
        if not 1 <= int(score) <= 5:
            raise UserError(f"scores go from 1 to 5, not {score}")
        record = {"time": time.time(), "session": session, "score": int(score),
                  "comment": comment[:500], "recipe": clip}
        with self._ratings_lock, open(self.ratings_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        return f"Thanks: rated {int(score)}/5."

    # --- helpers ---

    def _model(self, name: str) -> compose.LoadedModel:
        if name not in self.models:
            raise UserError(f"there is no model called {name}; choose one of: "
                            f"{', '.join(self.models)}")
        return self.models[name]

    def _clip(self, candidate: compose.Candidate, folder: Path, title: str,
              soundfont: str | None) -> Clip:
        stem = folder / f"candidate-{candidate.index + 1}-variation{candidate.recipe['seed']}"
        files = write_candidate(candidate, stem.with_suffix(".mid"), stem.with_suffix(".wav"),
                                stem.with_suffix(".png"), renderer=self.renderer,
                                soundfont=soundfont, title=title)
        recipe = {k: v for k, v in candidate.recipe.items() if k != "prompt_tokens"}
        note = ("" if files.rendering.engine == "fluidsynth"
                else f"Audio: {files.rendering.note}")
        return Clip(title, str(files.audio), str(files.midi), str(files.piano_roll),
                    compose.describe_stats(candidate.stats), recipe_summary(candidate.recipe),
                    recipe, note)

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

