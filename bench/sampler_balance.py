"""Does nucleus (top-p) truncation change how densely and how long the models play?

A probe for the better-models issue, until `evaluate-samples` exists: for N
MAESTRO test files (evenly spaced through the CSV), the app's default excerpt
of 10 s is continued for 30 s by each shipped model at temperature 1 with
top-p 0.95 (the app's default) and 1.0 (no truncation), variation i for file
i, and compared with the real next 30 s of the same files: notes per second,
median note duration, the share of notes held 5 s or more (the decoder's cut
for a missing NOTE_OFF) and mean velocity, each averaged over files.

    .venv/bin/python bench/sampler_balance.py --data ../shared/data/maestro-v3.0.0 --n 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from musicgen import compose  # noqa: E402 - after the sys.path fix above
from musicgen.corpus import list_midi_files  # noqa: E402
from musicgen.midi import read_midi  # noqa: E402
from musicgen.notes import Notes  # noqa: E402
from musicgen.prompt import default_start, prompt_from_notes  # noqa: E402
from musicgen.settings import Settings  # noqa: E402

PROMPT_S, CONTINUATION_S = 10.0, 30.0
STUCK_S = 5.0 - 1e-6
COLUMNS = ("notes/s", "median duration (s)", "held >= 5 s", "mean velocity")


def describe(notes: Notes) -> np.ndarray:
    """The four columns for one continuation of CONTINUATION_S seconds."""
    if not len(notes):
        return np.zeros(len(COLUMNS))
    durations = notes.end - notes.start
    return np.array([len(notes) / CONTINUATION_S, np.median(durations),
                     (durations >= STUCK_S).mean(), notes.velocity.mean()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the MAESTRO v3.0.0 folder")
    parser.add_argument("--n", type=int, default=10, help="test-split files")
    args = parser.parse_args()

    files = [path for path, split in list_midi_files(Path(args.data)) if split == "test"]
    files = [files[k * len(files) // args.n] for k in range(args.n)]
    pieces = [read_midi(path) for path in files]
    starts = [default_start(notes, PROMPT_S) for notes in pieces]
    rows = {"real continuation": np.mean([
        describe(notes.window(start + PROMPT_S, start + PROMPT_S + CONTINUATION_S))
        for notes, start in zip(pieces, starts, strict=True)], axis=0)}
    for name, path in compose.find_checkpoints().items():
        model = compose.load_model(path)
        for top_p in (Settings().top_p, 1.0):
            measured = []
            for i, (notes, start) in enumerate(zip(pieces, starts, strict=True)):
                prompt = prompt_from_notes(notes, PROMPT_S, "bench", start)
                settings = Settings(seconds=CONTINUATION_S, seed=i, top_p=top_p,
                                    include_prompt=False)
                (candidate,) = compose.compose(model, prompt, settings)
                measured.append(describe(candidate.notes))
            rows[f"{name}, T 1, top-p {top_p:g}"] = np.mean(measured, axis=0)
    print("| condition | " + " | ".join(COLUMNS) + " |")
    print("| --- |" + " ---: |" * len(COLUMNS))
    for label, values in rows.items():
        print(f"| {label} | {values[0]:.1f} | {values[1]:.3f} | {values[2]:.3f} | "
              f"{values[3]:.1f} |")


if __name__ == "__main__":
    main()
