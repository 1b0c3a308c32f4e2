"""Do uploaded MAESTRO performances get continuations with notes in them?

A new user who uploads a whole performance as the seed MIDI should hear
music, not the silence after its final chord. For each of N MAESTRO
test-split files (evenly spaced through the CSV, so all years appear), this
continues the excerpt the app picks by default (`prompt.default_start`) and,
for comparison, the file's last seconds with and without the longest-silence
limit (the app before both fixes had neither), at the app's default settings
with variation i for file i. It prints the share of continuations with fewer
than 2 notes per second.

    .venv/bin/python bench/seed_files.py --data ../shared/data/maestro-v3.0.0 --n 20
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from musicgen import compose  # noqa: E402 - after the sys.path fix above
from musicgen.corpus import list_midi_files  # noqa: E402
from musicgen.prompt import (  # noqa: E402
    DEFAULT_PROMPT_SECONDS,
    prompt_from_file,
    read_seed_file,
)
from musicgen.settings import Settings  # noqa: E402

SPARSE = compose.SPARSE_NOTES_PER_SECOND
CONDITIONS = (("default excerpt", None, Settings().max_silence),
              ("last seconds", "end", Settings().max_silence),
              ("last seconds, no silence limit (before)", "end", 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the MAESTRO v3.0.0 folder")
    parser.add_argument("--n", type=int, default=20, help="test-split files")
    parser.add_argument("--checkpoint", help="default: the app's default model")
    parser.add_argument("--seconds", type=float, default=Settings().seconds)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    model = compose.load_model(args.checkpoint or compose.default_checkpoint())
    files = [path for path, split in list_midi_files(Path(args.data)) if split == "test"]
    rows = []
    chosen = [files[k * len(files) // args.n] for k in range(min(args.n, len(files)))]
    for i, path in enumerate(chosen):
        settings = Settings(seconds=args.seconds, seed=i)
        end = max(0.0, read_seed_file(path).duration - DEFAULT_PROMPT_SECONDS)
        row = {"file": path.name}
        for name, start, max_silence in CONDITIONS:
            prompt = prompt_from_file(path, DEFAULT_PROMPT_SECONDS, end if start == "end" else None)
            (candidate,) = compose.compose(model, prompt,
                                           settings.but(max_silence=max_silence))
            row[name] = candidate.stats["notes_per_second"]
            row[f"{name} stop"] = candidate.stats["stop"]
        rows.append(row)
        if not args.json:
            print(f"{path.name[:56]:<56} " + "  ".join(
                f"{row[name]:5.1f}" for name, _, _ in CONDITIONS) + " notes/s", flush=True)
    summary = {name: {"sparse_share": sum(r[name] < SPARSE for r in rows) / len(rows),
                      "median_notes_per_second": sorted(r[name] for r in rows)[len(rows) // 2]}
               for name, _, _ in CONDITIONS}
    result = {"model": model.name, "files": len(rows), "seconds": args.seconds,
              "summary": summary, "rows": rows}
    if args.json:
        print(json.dumps(result))
    else:
        for name, values in summary.items():
            print(f"{name}: {values['sparse_share']:.0%} of {len(rows)} files under {SPARSE:g} "
                  f"notes/s (median {values['median_notes_per_second']:.1f})")


if __name__ == "__main__":
    main()
