"""How long the Listen tab takes to pick a pair once many have been served.

Fills a fresh ratings database with a pool (50 prompts x 4 conditions) and
--pairs served pairs spread over --raters listeners, a tenth of them voted
on, then times `ListeningTest.next_pair` for a listener who has heard 10
pairs, with the database's indexes and, in the same run, without them.
The first call of the run reads the votes per pair of conditions, which the
listening test then keeps up to date itself (`COUNTS_RELOAD_S`): that call is
the maximum. Everything is in a temporary folder; nothing is served.

    .venv/bin/python bench/pair_query.py --pairs 300000
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import LoadMeter, cpu_details, cpu_line, load_line  # noqa: E402 - bench/

from musicgen.listening import ListeningTest  # noqa: E402
from musicgen.ratings import RatingsStore  # noqa: E402

CONDITIONS = ("lstm", "transformer", "lstm-greedy", "real")
INDEXES = ("pairs_by_rater", "pairs_by_served", "prompts_by_pool")


def fill(store: RatingsStore, pairs: int, raters: int, prompts: int = 50) -> None:
    def ids(*parts) -> str:
        return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()

    prompt_rows = [{"id": ids(k), "source": f"example:{k}", "audio": f"p/{k}.mp3",
                    "seconds": 10.0} for k in range(prompts)]
    clips = [{"id": ids(k, name), "prompt": ids(k), "condition": name,
              "is_real": name == "real", "recipe": {"condition": name},
              "audio": f"p/{k}-{name}.mp3", "audio_sha256": "0" * 64, "seconds": 20.0}
             for k in range(prompts) for name in CONDITIONS]
    store.add_pool("bench", {"bench": True}, prompt_rows, clips)
    rng = np.random.default_rng(0)
    now = time.time()
    names = [f"rater-{k}" for k in range(raters)]
    with store._write() as db:
        db.executemany("INSERT INTO raters (id, created) VALUES (?, ?)",
                       [(name, now) for name in names])
        rows = []
        for k in range(pairs):
            prompt = int(rng.integers(prompts))
            a, b = rng.choice(len(CONDITIONS), 2, replace=False)
            rows.append((secrets.token_hex(16), names[k % raters],
                         ids(prompt, CONDITIONS[a]), ids(prompt, CONDITIONS[b]),
                         now - float(rng.uniform(0, 3600))))
        db.executemany("INSERT INTO pairs (token, rater, clip_a, clip_b, served) "
                       "VALUES (?, ?, ?, ?, ?)", rows)
        db.executemany("INSERT INTO votes (token, choice, created, seconds_since_served) "
                       "VALUES (?, 'a', ?, 10)", [(row[0], now) for row in rows[::10]])


def timed(test: ListeningTest, repeats: int) -> list[float]:
    times = []
    for k in range(repeats):
        rater = f"rater-{k}"  # an existing listener with pairs behind them
        began = time.perf_counter()
        test.next_pair(rater)
        times.append(time.perf_counter() - began)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=300_000)
    parser.add_argument("--raters", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    print(cpu_line(cpu_details()))
    meter = LoadMeter()
    with tempfile.TemporaryDirectory() as folder:
        store = RatingsStore(Path(folder) / "ratings.sqlite")
        began = time.perf_counter()
        fill(store, args.pairs, args.raters)
        print(f"filled {args.pairs:,} pairs for {args.raters:,} listeners in "
              f"{time.perf_counter() - began:.1f} s")
        test = ListeningTest(store, Path(folder), min_listen_s=0)
        indexed = timed(test, args.repeats)
        with store._write() as db:
            for name in INDEXES:
                db.execute(f"DROP INDEX {name}")
        bare = timed(test, args.repeats)
        store.close()
    for label, times in (("with indexes", indexed), ("without", bare)):
        print(f"next_pair {label:<13} median {1000 * np.median(times):7.1f} ms, "
              f"max {1000 * max(times):7.1f} ms ({args.repeats} listeners)")
    print(f"ratio {np.median(bare) / np.median(indexed):.1f}x")
    print(load_line(meter.record()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
