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


def tiny_cache(directory: Path, pieces: int = 8, events: int = 400, seed: int = 0) -> Path:
    """A token cache of random-ish performances, written as `prepare` would (no MIDI needed)."""
    import json

    import numpy as np

    from musicgen.events import VOCAB, interleave_time_shifts

    rng = np.random.default_rng(seed)
    on, off = VOCAB["note_on"], VOCAB["note_off"]
    arrays, records, offset = [], [], 0
    for i in range(pieces):
        steps = np.cumsum(rng.integers(0, 30, events))
        pitches = rng.integers(40, 80, events)
        kinds = np.where(rng.random(events) < 0.5, on.token(pitches), off.token(pitches))
        tokens = np.concatenate(([VOCAB.bos], interleave_time_shifts(steps, kinds), [VOCAB.eos]))
        split = "train" if i < pieces - 2 else ("validation" if i == pieces - 2 else "test")
        records.append({"source": f"p{i}.mid", "sha256": f"{i:064x}", "split": split,
                        "offset": offset, "length": len(tokens), "seconds": steps[-1] / 100})
        arrays.append(tokens.astype(np.uint16))
        offset += len(tokens)
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "tokens.npy", np.concatenate(arrays))
    (directory / "index.json").write_text(json.dumps(
        {"vocab": VOCAB.to_dict(), "encoder_version": "test", "pieces": records, "skipped": []}))
    return directory


def tiny_checkpoint(directory: Path, kind: str = "lstm", seed: int = 0) -> Path:
    """A randomly initialised small model saved as a checkpoint folder.

    `kind` "lstm-held" is an LSTM with held-note input, its input weights
    away from zero so that they change what it samples; "lstm-controls" has a
    key/register/density input too, likewise away from zero.
    """
    from dataclasses import asdict

    import torch

    from musicgen.checkpoint import save_weights
    from musicgen.model import LSTMConfig, TransformerConfig, build_model

    config = (LSTMConfig(embed_dim=32, hidden_size=64, num_layers=2,
                         held_notes_input=kind in ("lstm-held", "lstm-controls"),
                         control_input=kind == "lstm-controls") if kind.startswith("lstm") else
              TransformerConfig(d_model=64, n_layers=2, n_heads=4, d_ff=128, context=128))
    torch.manual_seed(seed)
    model = build_model(config)
    if model.config.kind == "lstm" and model.held is not None:
        torch.nn.init.normal_(model.held.weight, std=0.5)
    if model.control is not None:
        torch.nn.init.normal_(model.control.weight, std=0.5)
    save_weights(directory, model, {"config": asdict(config), "name": directory.name})
    return directory


def heard(listening, pair) -> None:
    """As a browser that has downloaded both clips of a served pair in full."""
    for side in ("a", "b"):
        listening.heard(pair.links[side])


class StepClock:
    """A clock that moves `step` seconds on at every reading: each listener takes their
    time, without the test waiting for it."""

    def __init__(self, step: float = 15.0, start: float = 1.8e9):
        self.step, self.now = step, start

    def __call__(self) -> float:
        self.now += self.step
        return self.now
