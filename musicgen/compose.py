"""Prompt and settings in, candidates out: the one sampling call both front ends make.

    prompt = choose_prompt("example", example="Beethoven: Ode to Joy", seconds=10)
    candidates = compose(load_model(path), prompt, Settings(seconds=30, n=2))
    write_candidate(candidates[0], "out.mid")             # musicgen.outputs

Every candidate's MIDI carries its recipe; `musicgen.recipe.replay` turns one
back into the prompt and settings of this call.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pretty_midi

from musicgen.batcher import Batcher
from musicgen.checkpoint import read_card
from musicgen.controls import target_controls
from musicgen.errors import RecipeError, UserError
from musicgen.events import STEPS_PER_SECOND, VOCAB, DecodeReport, decode_events
from musicgen.midi import notes_to_pretty_midi
from musicgen.notes import Notes
from musicgen.prompt import Prompt
from musicgen.recipe import make_recipe, read_recipe, recipe_text, replay
from musicgen.resources import checkpoint_dir
from musicgen.sample import SamplingRequest, Stopped
from musicgen.serving import ServingModel, load_serving
from musicgen.settings import Settings


@dataclass
class LoadedModel:
    """A model ready to sample from, with what identifies it.

    Attributes:
        name: What the UI and recipes call it.
        model: Its serving form.
        card: Its card.
        batcher: Samples concurrent requests for it as one batch (`musicgen.batcher`).
    """

    name: str
    model: ServingModel
    card: dict
    batcher: Batcher = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.batcher = Batcher(self.model)

    @property
    def weights_sha256(self) -> str:
        return self.card.get("weights_sha256", "")


def find_checkpoints(directory: str | os.PathLike | None = None) -> dict[str, Path]:
    """Checkpoint folders (holding model.safetensors) under `directory`, by name.

    Args:
        directory: Where to look; None: `musicgen.resources.checkpoint_dir()`.

    Returns:
        Name -> folder, the LSTM first, as the default model.
    """
    directory = Path(directory) if directory is not None else checkpoint_dir()
    found = {p.parent.name: p.parent for p in sorted(directory.glob("*/model.safetensors"))}
    return dict(sorted(found.items(), key=lambda item: (not item[0].startswith("lstm"), item[0])))


def default_checkpoint(directory: str | os.PathLike | None = None) -> Path:
    """The default model's checkpoint: the first of `find_checkpoints`.

    Raises:
        UserError: There is none.
    """
    found = find_checkpoints(directory)
    if not found:
        raise UserError(f"there are no checkpoints in {directory or checkpoint_dir()}; "
                        "give one with --checkpoint")
    return next(iter(found.values()))


def load_model(path: str | os.PathLike, name: str | None = None) -> LoadedModel:
    """Load one checkpoint for sampling on the CPU (no torch: `musicgen.serving`).

    Raises:
        UserError: Not a usable checkpoint.
    """
    model, card = load_serving(path)
    return LoadedModel(name or card.get("name") or Path(path).name, model, card)


@dataclass
class Candidate:
    """One continuation, ready to write, render and show."""

    index: int
    midi: pretty_midi.PrettyMIDI
    notes: Notes
    prompt_end: float  # seconds: where the continuation starts in `notes` (0 without the prompt)
    recipe: dict
    entropy: np.ndarray
    chosen_probability: np.ndarray
    report: DecodeReport
    stats: dict = field(default_factory=dict)


def compose(model: LoadedModel, prompt: Prompt, settings: Settings,
            on_progress: Callable[[float], None] | None = None,
            on_music: Callable[[int, pretty_midi.PrettyMIDI, float], None] | None = None,
            stop: threading.Event | None = None) -> list[Candidate]:
    """Continue a prompt `settings.n` times.

    Args:
        model: The model to sample from.
        prompt: Where to start.
        settings: Length, sampling controls, seed, number of candidates.
        on_progress: Called with a fraction in [0, 1] while sampling.
        on_music: Called now and then while sampling, in the caller's thread,
            with a candidate's index, its MIDI so far and the seconds before
            which that MIDI is final: every note event before them is in the
            finished candidate's `midi` too (`musicgen.audio.LiveRender`
            plays them while the rest is sampled: one candidate's, so the
            app passes it n=1). Rows that have finished are not passed on.
        stop: Set it (from any thread) to end the sampling at its next step.

    Returns:
        One `Candidate` per sequence; candidate i used seed `settings.seed + i`.

    Raises:
        Stopped: `stop` was set before the sampling was done.
    """
    def pass_on(rows: dict[int, np.ndarray]) -> None:
        for i, tokens in rows.items():
            on_music(i, *music_so_far(prompt, tokens, settings.include_prompt))

    began = time.perf_counter()
    generation = model.batcher.generate(SamplingRequest(
        prompt.tokens, seconds=settings.seconds, temperature=settings.temperature,
        top_k=settings.top_k, top_p=settings.top_p, min_p=settings.min_p, seed=settings.seed,
        n=settings.n, max_silence=settings.max_silence, paired_notes=settings.paired_notes,
        keep_timing=settings.keep_timing, on_progress=on_progress,
        paired_keeps_types=settings.paired_keeps_types,
        release_held_keys=settings.release_held_keys,
        on_tokens=pass_on if on_music is not None else None,
        controls=target_controls(prompt.tokens, settings.key, settings.register,
                                 settings.density), stop=stop))
    if "stopped" in generation.stop_reasons:
        raise Stopped("the sampling was stopped before it was done")
    sampling_s = time.perf_counter() - began
    candidates = []
    for i, continuation in enumerate(generation.tokens):
        notes, prompt_end, report = candidate_notes(prompt, continuation,
                                                    settings.include_prompt)
        recipe = make_recipe(model.name, model.weights_sha256, prompt, settings, index=i)
        midi = notes_to_pretty_midi(notes)
        midi.text_events.append(pretty_midi.Text(recipe_text(recipe), 0))
        candidate = Candidate(i, midi, notes, prompt_end, recipe, generation.entropy[i],
                              generation.chosen_probability[i], report)
        candidate.stats = {**note_stats(notes, prompt_end), "tokens": len(continuation),
                           "stop": generation.stop_reasons[i],
                           "sampling_s": round(sampling_s, 3)}
        candidates.append(candidate)
    return candidates


def decode_continuation(prompt: Prompt, continuation: np.ndarray,
                        ) -> tuple[Notes, DecodeReport]:
    """The continuation's notes, timed after the prompt, as `compose` plays them.

    Decoded on its own, so that the decoder's cut of notes held past
    MAX_NOTE_SECONDS (for a model that forgets a NOTE_OFF) never shortens the
    seed music. Every prompt note is closed by its own NOTE_OFF, so nothing
    sounds across the join; only the prompt's last velocity carries over.

    Args:
        prompt: The prompt that was continued.
        continuation: The sampled token ids (without the prompt).

    Returns:
        The notes, starting at `prompt.seconds`, and the decoder's report of
        what it repaired.
    """
    velocity = VOCAB["velocity"]
    is_velocity = (prompt.tokens >= velocity.offset) & (prompt.tokens < velocity.stop)
    carried = prompt.tokens[is_velocity][-1:]
    notes, report = decode_events(np.concatenate((carried, continuation)))
    return notes.shifted(prompt.seconds), report


def candidate_notes(prompt: Prompt, continuation: np.ndarray, include_prompt: bool,
                    ) -> tuple[Notes, float, DecodeReport]:
    """A candidate's notes as `compose` plays them: the continuation, after the prompt or alone.

    Args:
        prompt: The prompt that was continued.
        continuation: The sampled token ids (without the prompt).
        include_prompt: Put the prompt's notes first; else the continuation
            starts at time 0.

    Returns:
        The notes, the seconds where the continuation starts in them, and the
        decoder's report (`decode_continuation`).
    """
    new_notes, report = decode_continuation(prompt, continuation)
    if include_prompt:
        return Notes.concatenate(prompt.notes, new_notes), prompt.seconds, report
    return new_notes.window(prompt.seconds), 0.0, report


def music_so_far(prompt: Prompt, tokens: np.ndarray, include_prompt: bool,
                 ) -> tuple[pretty_midi.PrettyMIDI, float]:
    """A candidate still being sampled as MIDI, and the time before which it is final.

    The decoder is causal: a token changes no note that ended before it. Notes
    still sounding after the last token are closed there for now, and more
    may start at that instant, so only what comes before it is final.

    Args:
        prompt: The prompt being continued.
        tokens: The continuation's tokens so far.
        include_prompt: As in `Settings`.

    Returns:
        The MIDI so far (without the recipe), and that time in its seconds.
    """
    notes, prompt_end, _ = candidate_notes(prompt, tokens, include_prompt)
    shift = VOCAB["time_shift"]
    is_shift = (tokens >= shift.offset) & (tokens < shift.stop)
    steps = int(shift.value(tokens[is_shift]).sum())
    return notes_to_pretty_midi(notes), prompt_end + steps / STEPS_PER_SECOND


def note_stats(notes: Notes, prompt_end: float = 0.0) -> dict:
    """Notes, seconds, pitch range and notes per second of the continuation part."""
    new = notes.start >= prompt_end - 1e-9
    count = int(new.sum())
    span = float(notes.end[new].max() - prompt_end) if count else 0.0
    pitches = notes.pitch[new]
    return {"notes": count, "seconds": round(span, 2),
            "pitch_range": [int(pitches.min()), int(pitches.max())] if count else None,
            "notes_per_second": round(count / span, 2) if span > 0 else 0.0}


SPARSE_NOTES_PER_SECOND = 2.0  # below this a continuation sounds empty
STOP_WORDS = {"eos": "the model chose to end the piece",
              "seconds": "it played the length asked for",
              "max_tokens": "it used up its event budget"}


def describe_stats(stats: dict) -> str:
    """One line for people: '143 notes, 30.1 s, pitches C2-C6, 4.8 notes/s'.

    A continuation with (almost) no notes says so, why it stopped, and what to try.
    """
    reason = STOP_WORDS.get(stats.get("stop"), "")
    advice = ("; try another variation, a livelier part of the seed MIDI, or a shorter "
              "longest silence")
    if not stats["notes"]:
        return f"No notes in the continuation: {reason}" + advice
    low, high = stats["pitch_range"]
    line = (f"{stats['notes']} notes, {stats['seconds']:.1f} s, pitches "
            f"{pretty_midi.note_number_to_name(low)}-{pretty_midi.note_number_to_name(high)}, "
            f"{stats['notes_per_second']:.1f} notes/s")
    if stats["notes_per_second"] < SPARSE_NOTES_PER_SECOND:
        line += f". Very few notes: {reason}" + advice
    return line


@dataclass(frozen=True)
class Request:
    """What a front end asks `compose` for: a checkpoint, a prompt and settings.

    Attributes:
        warning: Something the person should know (empty when nothing is amiss).
    """

    checkpoint: Path
    prompt: Prompt
    settings: Settings
    warning: str = ""


def request_from_recipe(path: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                        prompt_seconds: float | None = None, prompt_start: float | None = None,
                        **changes) -> Request:
    """Sample what a MIDI file's recipe says again (with `changes` to its settings).

    Args:
        path: A MIDI file written by musicgen.
        checkpoint: The model to use; None: the one whose weights the recipe names.
        prompt_seconds, prompt_start: Refused unless None (`musicgen.recipe.replay`).
        **changes: As for `musicgen.recipe.replay`.

    Raises:
        UserError: No recipe, a damaged one, an impossible change, or no checkpoint
            with its weights.
    """
    recipe = read_recipe(path)
    prompt, settings = replay(recipe, prompt_seconds, prompt_start, **changes)
    chosen = Path(checkpoint) if checkpoint else checkpoint_for_recipe(recipe)
    warning = ""
    if read_card(chosen).get("weights_sha256") != recipe["weights_sha256"]:
        warning = "these weights differ from the recipe's, so the notes will differ"
    return Request(chosen, prompt, settings, warning)


def checkpoint_for_recipe(recipe: dict, directory: str | os.PathLike | None = None) -> Path:
    """The checkpoint whose weights hash matches the recipe (its named model looked at first).

    Raises:
        RecipeError: No checkpoint there has those weights.
    """
    found = find_checkpoints(directory)
    for _, path in sorted(found.items(), key=lambda item: item[0] != recipe["model"]):
        if read_card(path).get("weights_sha256") == recipe["weights_sha256"]:
            return path
    raise RecipeError(f"none of the checkpoints ({', '.join(found) or 'none found'}) has the "
                      f"weights of this recipe ({recipe['model']}, "
                      f"{recipe['weights_sha256'][:12]}); give its checkpoint with --checkpoint")
