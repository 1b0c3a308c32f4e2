"""Does a model with a key/register/density input do what it is asked?

For each `evaluate-samples` prompt (MAESTRO test split, 10 s), the model
continues it for --seconds under each request, at the app's other defaults
(prompt i, seed i: the requests differ only in what they ask):

- key: as the seed, free, and the key a tritone from the seed's (the furthest
  on the circle of fifths); measured as the continuation's pitch-class
  profile correlation with the seed's key and with the asked key
  (`musicgen.controls.profile_correlation`, Krumhansl-Kessler profiles);
- register: lower and higher (7 semitones); measured as the mean pitch
  against "as the seed";
- density: sparser and denser (x1/1.6 and x1.6); measured as onsets per
  second against "as the seed".

Not a timing benchmark: it may run beside other work.

    .venv/bin/python bench/control_response.py --checkpoint checkpoints/lstm --n 30
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from musicgen.compose import compose, load_model  # noqa: E402 - after the sys.path fix above
from musicgen.controls import (  # noqa: E402
    KEYS,
    PITCH_NAMES,
    detect_key,
    key_profile,
    profile_correlation,
)
from musicgen.sample_report import prompt_excerpts  # noqa: E402
from musicgen.samples import pitch_class_profile  # noqa: E402
from musicgen.settings import Settings  # noqa: E402

REQUESTS = {"as the seed": {}, "free": {"key": "free", "register": "free", "density": "free"},
            "tritone key": None, "lower": {"register": "lower"},
            "higher": {"register": "higher"}, "sparser": {"density": "sparser"},
            "denser": {"density": "denser"}}


def tritone(key: str) -> str:
    """The key six semitones from `key`, in the same mode."""
    tonic, mode = key.split()
    return f"{PITCH_NAMES[(PITCH_NAMES.index(tonic) + 6) % 12]} {mode}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/lstm")
    parser.add_argument("--data", default="cache/maestro")
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    model = load_model(args.checkpoint)
    excerpts = prompt_excerpts(args.data, args.n, args.seconds)
    rows: dict[str, list[dict]] = {name: [] for name in REQUESTS}
    for i, excerpt in enumerate(excerpts):
        seed_key, _ = detect_key(pitch_class_profile(excerpt.prompt.notes))
        if seed_key not in KEYS:
            continue
        asked_key = tritone(seed_key)
        for name, changes in REQUESTS.items():
            changes = {"key": asked_key} if changes is None else changes
            settings = Settings(seconds=args.seconds, seed=i, include_prompt=False, **changes)
            notes = compose(model, excerpt.prompt, settings)[0].notes
            profile = pitch_class_profile(notes)
            rows[name].append({
                "seed_key_r": profile_correlation(profile, key_profile(seed_key)),
                "asked_key_r": profile_correlation(profile, key_profile(asked_key)),
                "pitch_mean": float(notes.pitch.mean()) if len(notes) else np.nan,
                "notes_per_second": len(notes) / args.seconds})
    summary = {name: {measure: float(np.nanmean([row[measure] for row in measured]))
                      for measure in measured[0]} for name, measured in rows.items()}
    summary["prompts"] = len(rows["free"])
    summary["checkpoint"] = args.checkpoint
    summary["seconds"] = args.seconds
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{args.checkpoint}: {summary['prompts']} prompts, {args.seconds:g} s each "
          "(means over prompts)")
    print(f"{'request':<12} {'r seed key':>10} {'r asked key':>11} {'mean pitch':>10} "
          f"{'notes/s':>8}")
    for name in REQUESTS:
        row = summary[name]
        print(f"{name:<12} {row['seed_key_r']:>10.3f} {row['asked_key_r']:>11.3f} "
              f"{row['pitch_mean']:>10.2f} {row['notes_per_second']:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
