"""What keeping the model's timing costs: LSTM 30 s clips, kept and not, alternating.

Both settings sample the app's default prompt (the first built-in example,
10 s) at the app's default temperature, for --repeats variations each, in
one process and interleaved, so that a change of the machine's speed hits
both alike. Prints the median time per clip and per token, and the ratio per
token (a clip with the timing kept has fewer tokens: longer time shifts).

    .venv/bin/python bench/keep_timing_cost.py --repeats 5
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="clips per setting")
    args = parser.parse_args()
    print(cpu_line(cpu_details()))
    meter = LoadMeter()
    model = compose.load_model(compose.default_checkpoint())
    prompt = prompt_from_example(example_names()[0], 10)
    seconds, tokens = {False: [], True: []}, {False: [], True: []}
    for variation in range(args.repeats):
        for keep in (False, True):
            began = time.perf_counter()
            (candidate,) = compose.compose(model, prompt, Settings(seconds=30, seed=variation,
                                                                   keep_timing=keep))
            seconds[keep].append(time.perf_counter() - began)
            tokens[keep].append(candidate.stats["tokens"])
    per_token = {keep: statistics.median(s / n for s, n in zip(seconds[keep], tokens[keep],
                                                               strict=True))
                 for keep in seconds}
    for keep in (False, True):
        print(f"keep timing {'yes' if keep else 'no '}: {statistics.median(seconds[keep]):.3f} s "
              f"a clip, {1e3 * per_token[keep]:.3f} ms a token")
    print(f"per token, kept / not: {per_token[True] / per_token[False]:.2f}")
    print(load_line(meter.record()))


if __name__ == "__main__":
    main()
