"""What an on/off sampling setting costs: LSTM 30 s clips, with it and without, alternating.

Both sides sample the app's default prompt (the first built-in example,
10 s) at the app's other defaults, for --repeats variations each, in one
process and interleaved, so that a change of the machine's speed hits both
alike. Prints the median time per clip and per token, and the ratio per token
(a clip's token count differs between the sides: keeping the timing, for
one, gives longer time shifts and so fewer tokens).

    .venv/bin/python bench/setting_cost.py --setting keep_timing --repeats 9
    .venv/bin/python bench/setting_cost.py --setting paired_notes --repeats 9
    .venv/bin/python bench/setting_cost.py --setting release_held_keys --repeats 9
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import LoadMeter, cpu_details, cpu_line, load_line  # noqa: E402 - bench/ is on sys.path

from musicgen import compose  # noqa: E402 - after the sys.path fix above
from musicgen.examples import example_names  # noqa: E402
from musicgen.prompt import prompt_from_example  # noqa: E402
from musicgen.settings import Settings  # noqa: E402

# The yes/no fields of Settings that change how each token is chosen.
SWITCHES = ("keep_timing", "paired_notes", "paired_keeps_types", "release_held_keys")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=SWITCHES, default="keep_timing",
                        help="the Settings field turned on and off")
    parser.add_argument("--repeats", type=int, default=5, help="clips per side")
    args = parser.parse_args()
    print(cpu_line(cpu_details()))
    meter = LoadMeter()
    model = compose.load_model(compose.default_checkpoint())
    prompt = prompt_from_example(example_names()[0], 10)
    seconds, tokens = {False: [], True: []}, {False: [], True: []}
    for variation in range(args.repeats):
        for on in (False, True):
            settings = Settings(seconds=30, seed=variation).but(**{args.setting: on})
            began = time.perf_counter()
            (candidate,) = compose.compose(model, prompt, settings)
            seconds[on].append(time.perf_counter() - began)
            tokens[on].append(candidate.stats["tokens"])
    per_token = {on: statistics.median(s / n for s, n in zip(seconds[on], tokens[on],
                                                             strict=True))
                 for on in seconds}
    for on in (False, True):
        print(f"{args.setting} {'yes' if on else 'no '}: {statistics.median(seconds[on]):.3f} s "
              f"a clip, {statistics.median(tokens[on]):.0f} tokens, "
              f"{1e3 * per_token[on]:.3f} ms a token")
    print(f"per token, on / off: {per_token[True] / per_token[False]:.2f}")
    print(load_line(meter.record()))


if __name__ == "__main__":
    main()
