"""Benchmark: one app click end to end at two or more commits, in alternation.

What the app does for a click, timed as `bench/sampling.py`'s end to end:
a 30 s continuation of the last 10 s of a built-in example at the tree's own
defaults (`compose`), the FluidSynth render, and the app's audio file, with
the model loaded and the renderer warmed by one render. Each --tree is a
checkout; for each of --rounds rounds every tree gets a fresh process that
times one untimed click and then --clicks clicks, so a drift of this shared
machine's speed hits every tree alike. Prints each tree's medians, the ratio
of its median total to the first tree's, and the machine's load.

    git worktree add /tmp/base 4cb425e
    .venv/bin/python bench/end_to_end.py --tree /tmp/base --tree . --rounds 4 --clicks 3

Each tree runs with this interpreter, so the trees need the same installed
requirements (or fewer). Options: --model lstm|transformer, --json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from machine import LoadMeter, cpu_details, cpu_line, load_line

PARTS = ("tokens", "sampling_s", "render_s", "encode_s", "total_s", "audio_bytes")


def child(tree: Path, model: str, clicks: int) -> None:
    """In a fresh process: time clicks with the tree's own code; print them as JSON."""
    sys.path[:0] = [str(tree), str(tree / "bench")]
    import tempfile  # noqa: PLC0415 - the child only

    import sampling  # noqa: PLC0415 - the tree's own bench/sampling.py

    loaded = sampling.load_model(tree / "checkpoints" / model)
    primer = sampling.prompt_from_example(sampling.EXAMPLE, 10.0)
    renderer = sampling.Renderer(synths=os.cpu_count() or 1)  # as the app's Studio
    renderer.render(sampling.notes_to_pretty_midi(sampling.decode_events(primer.tokens)[0]))
    with tempfile.TemporaryDirectory(prefix="musicgen-bench-") as folder:
        runs = [sampling.time_end_to_end(loaded, primer, renderer, Path(folder), seed=0)
                for _ in range(clicks + 1)][1:]
    print(json.dumps([{part: run[part] for part in PARTS} for run in runs]))


def main() -> None:
    """Time every tree's clicks in alternation and print the medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, action="append", required=True,
                        help="a checkout to time (give two or more)")
    parser.add_argument("--model", choices=("lstm", "transformer"), default="lstm")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--clicks", type=int, default=3, help="timed clicks per process")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if args.child:
        child(args.tree[0].resolve(), args.model, args.clicks)
        return
    print(cpu_line(cpu_details()))
    meter = LoadMeter()
    runs: dict[str, list[dict]] = {str(tree): [] for tree in args.tree}
    for round_ in range(1, args.rounds + 1):
        for tree in args.tree:
            out = subprocess.run([sys.executable, __file__, "--child", "--tree", str(tree),
                                  "--model", args.model, "--clicks", str(args.clicks)],
                                 capture_output=True, text=True, check=True)
            clicks = json.loads(out.stdout.strip().splitlines()[-1])
            runs[str(tree)] += clicks
            totals = ", ".join(f"{click['total_s']:.3f}" for click in clicks)
            print(f"  round {round_}/{args.rounds}  {tree}: {totals} s", flush=True)
    medians = {tree: {part: statistics.median(c[part] for c in clicks) for part in PARTS}
               for tree, clicks in runs.items()}
    first = medians[str(args.tree[0])]["total_s"]
    print(f"\n{args.model}, 30 s clip, median of {args.rounds * args.clicks} clicks per tree")
    print(f"{'tree':<32} {'tokens':>6} {'sample s':>8} {'render s':>8} {'enc s':>6} "
          f"{'total s':>7} {'vs first':>8}  totals (s)")
    for tree, median in medians.items():
        totals = ", ".join(f"{c['total_s']:.2f}" for c in sorted(runs[tree],
                                                                  key=lambda c: c["total_s"]))
        print(f"{tree:<32} {median['tokens']:>6.0f} {median['sampling_s']:>8.3f} "
              f"{median['render_s']:>8.3f} {median['encode_s']:>6.3f} {median['total_s']:>7.3f} "
              f"{first / median['total_s']:>7.2f}x  {totals}")
    machine = meter.record()
    print(load_line(machine))
    if args.json:
        print(json.dumps({"model": args.model, "runs": runs, "medians": medians,
                          "machine": machine}))


if __name__ == "__main__":
    main()
