"""Sampling with one ONNX Runtime thread or with one per core, on an idle and on a busy machine.

A sampling step is a few small matrix-vector products: too small to share
between threads, and when the cores are busy (a training job, another user
of a shared machine) the threads wait on each other. `musicgen.serving` runs
its sessions with `SESSION_THREADS` threads; this measures why, on the LSTM's
30 s continuation of a built-in example, idle and with one busy-loop process
per core competing (as a training job or a neighbour on a shared host would).

    .venv/bin/python bench/session_threads.py [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import musicgen.serving  # noqa: E402 - after the sys.path fix above
from musicgen import compose  # noqa: E402
from musicgen.prompt import choose_prompt  # noqa: E402
from musicgen.settings import Settings  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import LoadMeter, cpu_name, load_line  # noqa: E402


def spin(stop: multiprocessing.Event) -> None:
    """A busy loop until told to stop: stands in for whatever else uses the cores."""
    while not stop.is_set():
        sum(range(10_000))


def timed(models: dict, prompt, threads: int, repeats: int) -> list[float]:
    """Seconds for the 30 s continuation with `threads` session threads, `repeats` times."""
    model = models[threads]
    seconds = []
    for seed in range(repeats):
        began = time.perf_counter()
        compose.compose(model, prompt, Settings(seconds=30, seed=seed))
        seconds.append(time.perf_counter() - began)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    models = {}
    for threads in sorted({1, cores}):  # a session's threads are fixed when it is made
        musicgen.serving.SESSION_THREADS = threads
        models[threads] = compose.load_model(compose.default_checkpoint())
    prompt = choose_prompt("example", seconds=10)
    for threads in models:
        timed(models, prompt, threads, 1)  # warm: caches filled
    meter = LoadMeter()
    rows = []
    for load in ("idle", "busy"):
        stop = multiprocessing.Event()
        spinners = [multiprocessing.Process(target=spin, args=(stop,))
                    for _ in range(os.cpu_count() if load == "busy" else 0)]
        for process in spinners:
            process.start()
        try:
            for threads in models:
                runs = timed(models, prompt, threads, args.repeats)
                rows.append({"load": load, "session_threads": threads,
                             "median_s": round(statistics.median(runs), 3),
                             "runs_s": [round(r, 3) for r in runs]})
        finally:
            stop.set()
            for process in spinners:
                process.join()
    result = {"cpu": cpu_name(), "rows": rows, "machine": meter.record(),
              "command": "python bench/session_threads.py " + " ".join(sys.argv[1:])}
    if args.json:
        print(json.dumps(result))
        return
    print(result["cpu"])
    print("LSTM, 30 s continuation of the built-in example (sampling + decoding):")
    for row in rows:
        print(f"  {row['load']:<5} {row['session_threads']} session thread(s): "
              f"median {row['median_s']:.3f} s  (runs {row['runs_s']})")
    print("busy = one busy-loop process per core running meanwhile")
    print(load_line(result["machine"]))


if __name__ == "__main__":
    main()
