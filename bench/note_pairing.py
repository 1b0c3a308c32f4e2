"""How often do the models' note events fail to pair up, and what does pairing change?

A probe for step 1 of the better-models issue (the decoder's handling of
repeated note-ons). In the training data every NOTE_ON is of a silent pitch
and every NOTE_OFF ends a sounding one: a re-struck key is written NOTE_OFF,
NOTE_ON. The decoder repairs anything else (`events.DecodeReport`). For the
`evaluate-samples` prompts (MAESTRO test split, 10 s prompt, 30 s
continuation, seed i for prompt i) each shipped model is sampled at the app's
temperature and timing (or those given), unpaired and with `paired_notes`,
and this prints the repairs per 1000 notes, what followed each re-strike of a
sounding pitch, and the issue's four sample statistics as standardised
differences from the real continuations (d; 0 is real).

    .venv/bin/python bench/note_pairing.py --data cache/maestro --n 24
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import cpu_details, cpu_line  # noqa: E402 - bench/ is on sys.path

from musicgen import compose  # noqa: E402 - after the sys.path fix above
from musicgen.events import MAX_NOTE_SECONDS, STEPS_PER_SECOND, VOCAB  # noqa: E402
from musicgen.sample import SamplingRequest  # noqa: E402
from musicgen.sample_report import prompt_excerpts  # noqa: E402
from musicgen.samples import clip_features, standardised_mean_difference  # noqa: E402
from musicgen.settings import Settings  # noqa: E402

SECONDS = 30.0
FEATURES = ("notes_per_second", "duration_median", "velocity_mean", "long_note_share")
REPAIRS = ("restarted_notes", "ignored_note_offs", "cut_notes", "closed_at_end",
           "dropped_empty_notes")


def after_restarts(tokens: np.ndarray) -> tuple[Counter, dict[str, list[float]]]:
    """What followed each re-strike of a sounding pitch, and how long the new notes lasted.

    Follows the decoder: a NOTE_ON of a sounding pitch ends the old note and
    starts a new one, and the pitch's next NOTE_OFF ends the new one; a second
    NOTE_OFF after it is ignored (the model had sent one for each NOTE_ON).
    """
    on, off, shift = VOCAB["note_on"], VOCAB["note_off"], VOCAB["time_shift"]
    cut = round(MAX_NOTE_SECONDS * STEPS_PER_SECOND)
    sounding: dict[int, tuple[int, bool]] = {}  # pitch -> (start step, restarted)
    closed_restart: set[int] = set()
    counts, step, lengths = Counter(), 0, {"ended by a re-strike": [], "re-struck": []}
    for token in tokens.tolist():
        if shift.offset <= token < shift.stop:
            step += shift.value(token)
            for pitch in [p for p, (s, _) in sounding.items() if step - s > cut]:
                del sounding[pitch]
        elif on.offset <= token < on.stop:
            pitch = on.value(token)
            counts["note-ons"] += 1
            if pitch in sounding:
                counts["re-strikes of a sounding pitch"] += 1
                held = (step - sounding[pitch][0]) / STEPS_PER_SECOND
                lengths["ended by a re-strike"].append(held)
            closed_restart.discard(pitch)
            sounding[pitch] = (step, pitch in sounding)
        elif off.offset <= token < off.stop:
            pitch = off.value(token)
            if pitch in sounding:
                began, restarted = sounding.pop(pitch)
                if restarted:
                    counts["re-struck notes ended by a NOTE_OFF"] += 1
                    closed_restart.add(pitch)
                    lengths["re-struck"].append((step - began) / STEPS_PER_SECOND)
            elif pitch in closed_restart:
                counts["... then a second NOTE_OFF"] += 1
                closed_restart.discard(pitch)
    return counts, lengths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="token cache or MAESTRO folder")
    parser.add_argument("--n", type=int, default=24, help="test-split prompts")
    parser.add_argument("--temperature", type=float, default=Settings.temperature)
    parser.add_argument("--keep-timing", choices=("yes", "no"),
                        default="yes" if Settings.keep_timing else "no")
    parser.add_argument("--paired-keeps-types", choices=("yes", "no"),
                        default="yes" if Settings.paired_keeps_types else "no",
                        help="the pairing rule: no is that of recipes up to version 5")
    args = parser.parse_args()
    print(cpu_line(cpu_details()) + " (counts of notes, not timings)")
    excerpts = prompt_excerpts(args.data, n=args.n, seconds=SECONDS)
    real = [clip_features(e.real, e.prompt.notes, SECONDS) for e in excerpts]
    print("| model | paired | " + " | ".join(f"d {f}" for f in FEATURES) + " | "
          + " | ".join(f"{r} /1000 notes" for r in REPAIRS) + " |")
    print("| --- | --- |" + " ---: |" * (len(FEATURES) + len(REPAIRS)))
    patterns = {}
    for name, path in compose.find_checkpoints().items():
        model = compose.load_model(path)
        for paired in (False, True):
            clips, repairs, pattern, durations = [], Counter(), Counter(), []
            lengths = {"ended by a re-strike": [], "re-struck": []}
            for i, excerpt in enumerate(excerpts):
                generation = model.batcher.generate(SamplingRequest(
                    excerpt.prompt.tokens, seconds=SECONDS, temperature=args.temperature,
                    seed=i, max_silence=Settings.max_silence, paired_notes=paired,
                    keep_timing=args.keep_timing == "yes",
                    paired_keeps_types=args.paired_keeps_types == "yes"))
                tokens = generation.tokens[0]
                # As compose decodes it (the prompt's last velocity carried over).
                notes, report = compose.decode_continuation(excerpt.prompt, tokens)
                notes = notes.shifted(-excerpt.prompt.seconds)
                clips.append(clip_features(notes, excerpt.prompt.notes, SECONDS))
                repairs.update({r: getattr(report, r) for r in REPAIRS})
                counts, restruck = after_restarts(tokens)
                pattern.update(counts)
                for kind, values in restruck.items():
                    lengths[kind] += values
                durations.append(notes.end - notes.start)
            total = sum(clip.notes for clip in clips)
            d = [standardised_mean_difference(np.array([c[f] for c in clips]),
                                              np.array([c[f] for c in real])) for f in FEATURES]
            print(f"| {name} | {'yes' if paired else 'no'} | "
                  + " | ".join(f"{v:+.2f}" for v in d) + " | "
                  + " | ".join(f"{1000 * repairs[r] / total:.1f}" for r in REPAIRS) + " |",
                  flush=True)
            if not paired:
                patterns[name] = (pattern, lengths, np.median(np.concatenate(durations)))
    for name, (pattern, lengths, every) in patterns.items():
        medians = ", ".join(f"{kind} {np.median(values):.3f} s" for kind, values in
                            lengths.items() if values)
        print(f"{name}, unpaired: " + ", ".join(f"{k} {v}" for k, v in pattern.items())
              + f"; median note length: {medians}, every note {every:.3f} s")


if __name__ == "__main__":
    main()
