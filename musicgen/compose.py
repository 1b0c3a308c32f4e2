"""Seed in, continuations out: the one path that the CLI and the app both call.

    primer = primer_from_midi(upload_bytes, seconds=10)    # or _from_example / silence
    candidates = compose(model, primer, Settings(seconds=30, n=2))
    write_midi(candidates[0], "out.mid")                    # carries its recipe

Every written MIDI carries a recipe (model and weights hash, sampling
settings, seed, the primer's tokens and hash) in a text meta event;
`read_recipe`, `model_for_recipe`, `primer_from_recipe` and
`settings_from_recipe` turn it back into the same call, which gives the same
notes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mido
import numpy as np
import pretty_midi

from musicgen.checkpoint import load_checkpoint, read_card
from musicgen.events import (
    STEPS_PER_SECOND,
    VOCAB,
    DecodeReport,
    decode_events,
    encode_notes,
    event_steps,
)
from musicgen.examples import example_notes
from musicgen.midi import MidiError, MidiSource, notes_to_pretty_midi, read_midi
from musicgen.notes import Notes
from musicgen.sample import generate

RECIPE_PREFIX = "musicgen-recipe:"
CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
MAX_SECONDS = 120.0
MAX_PRIMER_SECONDS = 60.0


@dataclass
class LoadedModel:
    """A model ready to sample from, with what identifies it."""

    name: str
    model: object
    card: dict

    @property
    def weights_sha256(self) -> str:
        return self.card.get("weights_sha256", "")


def find_checkpoints(directory: str | os.PathLike = CHECKPOINT_DIR) -> dict[str, Path]:
    """Checkpoint folders (holding model.safetensors) under `directory`, by name.

    The LSTM comes first, as the default model.
    """
    directory = Path(directory)
    found = {p.parent.name: p.parent for p in sorted(directory.glob("*/model.safetensors"))}
    return dict(sorted(found.items(), key=lambda item: (not item[0].startswith("lstm"), item[0])))


def load_model(path: str | os.PathLike, name: str | None = None) -> LoadedModel:
    """Load one checkpoint for sampling on the CPU."""
    model, card = load_checkpoint(path)
    return LoadedModel(name or card.get("name") or Path(path).name, model, card)


@dataclass
class Primer:
    """The music a continuation starts from.

    Attributes:
        tokens: Its events (no BOS).
        notes: Its notes, shifted to start at time 0.
        source: "example:<name>", "upload:<file name>" or "silence".
        seconds: How long it lasts (to its last event).
    """

    tokens: np.ndarray
    notes: Notes
    source: str
    seconds: float

    @property
    def sha256(self) -> str:
        return hashlib.sha256(np.asarray(self.tokens, np.int64).tobytes()).hexdigest()


def primer_from_notes(notes: Notes, seconds: float, source: str) -> Primer:
    """The last `seconds` of some notes as a primer (0 seconds: silence)."""
    if not 0 <= seconds <= MAX_PRIMER_SECONDS:
        raise ValueError(f"primer length must be 0-{MAX_PRIMER_SECONDS:g} s, not {seconds:g}")
    if seconds == 0 or not len(notes):
        return silence()
    window = notes.window(max(0.0, notes.end.max() - seconds))
    tokens = encode_notes(window)
    steps, _ = event_steps(tokens)
    return Primer(tokens, window, source,
                  float(steps[-1]) / STEPS_PER_SECOND if len(steps) else 0.0)


def primer_from_midi(source: MidiSource, seconds: float, name: str = "upload") -> Primer:
    """The last `seconds` of a MIDI file (path or bytes) as a primer.

    Raises:
        MidiError: The file cannot be used (the message says why).
        ValueError: `seconds` is outside 0..60.
    """
    return primer_from_notes(read_midi(source), seconds, f"upload:{name}")


def primer_from_example(name: str, seconds: float) -> Primer:
    """The last `seconds` of a built-in example (`musicgen.examples`)."""
    return primer_from_notes(example_notes(name), seconds, f"example:{name}")


def silence() -> Primer:
    """No primer: the model starts from BOS alone."""
    return Primer(np.zeros(0, np.int64), Notes.empty(), "silence", 0.0)


@dataclass
class Settings:
    """How to sample; every field goes into the recipe."""

    seconds: float = 30.0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.95
    seed: int = 0
    n: int = 1
    include_primer: bool = True

    def check(self) -> None:
        """Raise ValueError, in plain words, for settings out of range."""
        if not 1 <= self.seconds <= MAX_SECONDS:
            raise ValueError(f"length must be 1-{MAX_SECONDS:g} seconds, not {self.seconds:g}")
        if not 1 <= self.n <= 4:
            raise ValueError(f"number of candidates must be 1-4, not {self.n}")
        if not 0 <= self.seed < 2**31:
            raise ValueError(f"seed must be between 0 and {2**31 - 1}, not {self.seed}")


@dataclass
class Candidate:
    """One continuation, ready to write, render and show."""

    index: int
    midi: pretty_midi.PrettyMIDI
    notes: Notes
    primer_end: float  # seconds: where the continuation starts in `notes` (0 without primer)
    recipe: dict
    entropy: np.ndarray
    chosen_probability: np.ndarray
    report: DecodeReport
    stats: dict = field(default_factory=dict)


def compose(model: LoadedModel, primer: Primer, settings: Settings,
            on_progress: Callable[[float], None] | None = None) -> list[Candidate]:
    """Continue a primer `settings.n` times.

    Args:
        model: The model to sample from.
        primer: Where to start.
        settings: Length, sampling controls, seed, number of candidates.
        on_progress: Called with a fraction in [0, 1] while sampling.

    Returns:
        One `Candidate` per sequence; candidate i used seed `settings.seed + i`.

    Raises:
        ValueError: A setting is out of range (plain-words message).
    """
    settings.check()
    began = time.perf_counter()
    generation = generate(model.model, primer.tokens, seconds=settings.seconds,
                          temperature=settings.temperature, top_k=settings.top_k,
                          top_p=settings.top_p, seed=settings.seed, n=settings.n,
                          on_progress=on_progress)
    sampling_s = time.perf_counter() - began
    candidates = []
    for i, continuation in enumerate(generation.tokens):
        notes, report = decode_events(np.concatenate((primer.tokens, continuation)))
        primer_end = primer.seconds
        if not settings.include_primer:
            notes, primer_end = notes.window(primer_end), 0.0
        recipe = make_recipe(model, primer, settings, index=i)
        candidate = Candidate(i, notes_to_pretty_midi(notes), notes, primer_end, recipe,
                              generation.entropy[i], generation.chosen_probability[i], report)
        candidate.stats = {**note_stats(notes, primer_end), "tokens": len(continuation),
                           "stop": generation.stop_reasons[i],
                           "sampling_s": round(sampling_s, 3)}
        candidate.midi.text_events.append(pretty_midi.Text(RECIPE_PREFIX + json.dumps(recipe), 0))
        candidates.append(candidate)
    return candidates


def note_stats(notes: Notes, primer_end: float = 0.0) -> dict:
    """Notes, seconds, pitch range and notes per second of the continuation part."""
    new = notes.start >= primer_end - 1e-9
    count = int(new.sum())
    span = float(notes.end[new].max() - primer_end) if count else 0.0
    pitches = notes.pitch[new]
    return {"notes": count, "seconds": round(span, 2),
            "pitch_range": [int(pitches.min()), int(pitches.max())] if count else None,
            "notes_per_second": round(count / span, 2) if span > 0 else 0.0}


def describe_stats(stats: dict) -> str:
    """One line for people: '143 notes, 30.1 s, pitches 36-84, 4.8 notes/s'."""
    if not stats["notes"]:
        return "no notes in the continuation"
    low, high = stats["pitch_range"]
    low_name = pretty_midi.note_number_to_name(low)
    high_name = pretty_midi.note_number_to_name(high)
    return (f"{stats['notes']} notes, {stats['seconds']:.1f} s, pitches {low_name}-{high_name}, "
            f"{stats['notes_per_second']:.1f} notes/s")


def make_recipe(model: LoadedModel, primer: Primer, settings: Settings, index: int = 0) -> dict:
    """Everything needed to sample candidate `index` again."""
    return {"version": 1, "model": model.name, "weights_sha256": model.weights_sha256,
            "temperature": settings.temperature, "top_k": settings.top_k,
            "top_p": settings.top_p, "seed": settings.seed + index, "seconds": settings.seconds,
            "include_primer": settings.include_primer, "primer_source": primer.source,
            "primer_sha256": primer.sha256, "primer_seconds": primer.seconds,
            "primer_tokens": [int(t) for t in primer.tokens], "vocab": VOCAB.version}


def write_midi(candidate: Candidate, path: str | os.PathLike) -> Path:
    """Write a candidate (with its recipe meta event) to a .mid file."""
    candidate.midi.write(str(path))
    return Path(path)


def read_recipe(source: str | os.PathLike) -> dict:
    """The recipe stored in a MIDI file written by `write_midi`.

    Raises:
        MidiError: The file has no musicgen recipe or cannot be read.
    """
    try:
        midi = mido.MidiFile(str(source))
    except (OSError, ValueError, EOFError) as error:
        raise MidiError(f"could not read {source}: {error}") from None
    for track in midi.tracks:
        for message in track:
            if message.is_meta and message.type == "text" and message.text.startswith(
                    RECIPE_PREFIX):
                return json.loads(message.text[len(RECIPE_PREFIX):])
    raise MidiError(f"{source} has no musicgen recipe (was it written by musicgen?)")


def primer_from_recipe(recipe: dict) -> Primer:
    """Rebuild the exact primer of a recipe (checked against its hash)."""
    tokens = np.asarray(recipe["primer_tokens"], dtype=np.int64)
    notes, _ = decode_events(tokens)
    primer = Primer(tokens, notes, recipe["primer_source"], float(recipe["primer_seconds"]))
    if primer.sha256 != recipe["primer_sha256"]:
        raise ValueError("the recipe's primer tokens do not match its primer hash")
    return primer


def settings_from_recipe(recipe: dict) -> Settings:
    """The sampling settings of a recipe, as one candidate (n=1)."""
    return Settings(seconds=recipe["seconds"], temperature=recipe["temperature"],
                    top_k=recipe["top_k"], top_p=recipe["top_p"], seed=recipe["seed"], n=1,
                    include_primer=recipe["include_primer"])


def model_for_recipe(recipe: dict, directory: str | os.PathLike = CHECKPOINT_DIR) -> Path:
    """The checkpoint whose weights hash matches the recipe (by name first)."""
    candidates = find_checkpoints(directory)
    ordered = sorted(candidates.items(), key=lambda item: item[0] != recipe["model"])
    for _, path in ordered:
        if read_card(path).get("weights_sha256") == recipe["weights_sha256"]:
            return path
    raise FileNotFoundError(f"no checkpoint in {directory} has the weights of this recipe "
                            f"({recipe['model']}, sha256 {recipe['weights_sha256'][:12]}...)")


def recipe_summary(recipe: dict) -> str:
    """The recipe in one line for people."""
    return (f"{recipe['model']} ({recipe['weights_sha256'][:8]}), T={recipe['temperature']}, "
            f"top-k={recipe['top_k']}, top-p={recipe['top_p']}, seed={recipe['seed']}, "
            f"{recipe['seconds']} s from {recipe['primer_source']} "
            f"({recipe['primer_seconds']:.1f} s, {recipe['primer_sha256'][:8]})")

