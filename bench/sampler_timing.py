"""What does the temperature do to the models' timing, and does `keep_timing` undo it?

A probe for the better-models issue (the sampler's part in the continuations'
short notes and high density). For the `evaluate-samples` prompts (MAESTRO
test split, 10 s prompt, 30 s continuation, seed i for prompt i) each shipped
model is sampled at temperatures 1.0, 0.9 and 0.8, plainly and with
`keep_timing`, and this prints the share of time shifts among the events, the
mean time shift, the music played per 100 events, and two of the issue's
sample statistics as standardised differences from the real continuations
(d; 0 is real).

    .venv/bin/python bench/sampler_timing.py --data cache/maestro --n 24
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import cpu_details, cpu_line  # noqa: E402 - bench/ is on sys.path

from musicgen import compose  # noqa: E402 - after the sys.path fix above
from musicgen.events import STEPS_PER_SECOND, VOCAB  # noqa: E402
from musicgen.sample import SamplingRequest  # noqa: E402
from musicgen.sample_report import prompt_excerpts  # noqa: E402
from musicgen.samples import clip_features, standardised_mean_difference  # noqa: E402
from musicgen.settings import Settings  # noqa: E402

SECONDS = 30.0
CONDITIONS = ((1.0, False), (0.9, False), (0.9, True), (0.8, False), (0.8, True))
FEATURES = ("notes_per_second", "duration_median")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="token cache or MAESTRO folder")
    parser.add_argument("--n", type=int, default=24, help="test-split prompts")
    args = parser.parse_args()
    print(cpu_line(cpu_details()) + " (counts of events, not timings)")
    excerpts = prompt_excerpts(args.data, n=args.n, seconds=SECONDS)
    real = [clip_features(e.real, e.prompt.notes, SECONDS) for e in excerpts]
    shift = VOCAB["time_shift"]
    print("| model | temperature | keep timing | time shifts / events | mean time shift (ms) "
          "| music per 100 events (s) | " + " | ".join(f"d {f}" for f in FEATURES) + " |")
    print("| --- | ---: | --- |" + " ---: |" * (3 + len(FEATURES)))
    for name, path in compose.find_checkpoints().items():
        model = compose.load_model(path)
        for temperature, keep_timing in CONDITIONS:
            clips, events, shifts = [], 0, []
            for i, excerpt in enumerate(excerpts):
                tokens = model.batcher.generate(SamplingRequest(
                    excerpt.prompt.tokens, seconds=SECONDS, temperature=temperature, seed=i,
                    max_silence=Settings.max_silence, keep_timing=keep_timing)).tokens[0]
                notes, _ = compose.decode_continuation(excerpt.prompt, tokens)
                clips.append(clip_features(notes.shifted(-excerpt.prompt.seconds),
                                           excerpt.prompt.notes, SECONDS))
                is_shift = (tokens >= shift.offset) & (tokens < shift.stop)
                shifts.append(tokens[is_shift] - shift.offset + shift.min_value)
                events += len(tokens)
            steps = np.concatenate(shifts)
            d = [standardised_mean_difference(np.array([c[f] for c in clips]),
                                              np.array([c[f] for c in real])) for f in FEATURES]
            print(f"| {name} | {temperature:g} | {'yes' if keep_timing else 'no'} | "
                  f"{len(steps) / events:.3f} | {1000 * steps.mean() / STEPS_PER_SECOND:.1f} | "
                  f"{100 * steps.sum() / STEPS_PER_SECOND / events:.2f} | "
                  + " | ".join(f"{v:+.2f}" for v in d) + " |", flush=True)


if __name__ == "__main__":
    main()
