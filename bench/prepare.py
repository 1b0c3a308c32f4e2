"""Benchmark: tokenising all of MAESTRO with `musicgen` versus miditok.

Each measurement is cold with respect to tokenisation: `musicgen.corpus.prepare`
writes into a fresh temporary cache (nothing is reused), and miditok keeps no
cache. The MIDI files themselves are read once before timing so that the OS
page cache is equally warm for every measurement.

Both sides use the same file list (the MAESTRO CSV) and the same number of
worker processes. What is timed:

    musicgen  `prepare()`: hash every file, parse it with symusic, apply the
              sustain pedal, encode performance events, and write tokens.npy
              and index.json. Tokens include BOS/EOS around each piece.
    miditok   a process pool over the files; each worker builds its tokenizer
              once and then calls `tokenizer(path)` per file and counts tokens.
              Nothing is written, so this side does strictly less work.

The miditok configuration (see `miditok_config`) mirrors our encoding:

    pitches    0..127 (128 NoteOn + 128 NoteOff, like our vocabulary; MAESTRO
               uses only 21..108, so the range changes no output)
    velocity   32 bins
    time       beat_res {(0, 2): 50}: TimeShift tokens of 1/50 .. 2 beats. miditok
               time is beat-relative; every MAESTRO file is 120 qpm in 4/4
               (one tempo event), so one beat is 0.5 s and this is exactly our
               100 shifts of 10 ms .. 1 s. Longer gaps chain shifts, as ours do.
    pedal      use_sustain_pedals: Pedal/PedalOff tokens. musicgen instead bakes
               the pedal into note offsets; miditok cannot do that.
    off        chords, rests, tempos, time signatures, key signatures,
               programs, pitch bends, control changes, drum pitch tokens.

Representation differences that change token counts: miditok emits a
Velocity token after every NoteOn (we emit one only when the bin changes)
and adds the pedal tokens.

Usage:
    .venv/bin/python bench/prepare.py [--workers N] [--repeats R] [--tsd] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from multiprocessing import Pool
from pathlib import Path

import miditok

from musicgen.corpus import list_midi_files, prepare
from musicgen.events import VOCAB

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "maestro-v3.0.0"
MIDITOK_CLASSES = {"MIDILike": miditok.MIDILike, "TSD": miditok.TSD}
from machine import LoadMeter, load_line  # noqa: E402 - bench/ is on sys.path


def miditok_config() -> dict:
    """TokenizerConfig arguments as close as miditok gets to our encoding (see module doc)."""
    return {
        "pitch_range": (0, 127),  # inclusive in miditok: 128 pitches
        "beat_res": {(0, 2): 50},  # 1/50 beat steps up to 2 beats = 10 ms .. 1 s at 120 qpm
        "num_velocities": 32,
        "use_velocities": True,
        "use_sustain_pedals": True,
        "sustain_pedal_duration": False,  # PedalOff tokens rather than Duration tokens
        "use_chords": False,
        "use_rests": False,
        "use_tempos": False,
        "use_time_signatures": False,
        "use_key_signatures": False,
        "use_programs": False,
        "use_pitch_bends": False,
        "use_control_changes": False,
        "use_pitchdrum_tokens": False,
        "special_tokens": ["PAD", "BOS", "EOS"],
    }


@dataclass
class Measurement:
    """Repeated timings of one tokeniser over the whole corpus."""

    name: str
    seconds: list[float] = field(default_factory=list)
    files_ok: int = 0
    files_skipped: int = 0
    tokens: int = 0
    vocab_size: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def files_per_second(self) -> float:
        return self.files_ok / self.median

    def to_dict(self) -> dict:
        return {**asdict(self), "median_seconds": round(self.median, 3),
                "files_per_second": round(self.files_per_second, 1)}


# ---------------------------------------------------------------- musicgen


def time_musicgen(data_dir: Path, workers: int) -> tuple[float, int, int, int]:
    """One cold `prepare` into a fresh cache: (seconds, files ok, skipped, tokens)."""
    with tempfile.TemporaryDirectory(prefix="musicgen-bench-") as cache:
        began = time.perf_counter()
        summary = prepare(data_dir, cache, workers=workers, progress=False)
        seconds = time.perf_counter() - began
    return seconds, summary.files_ok, summary.files_skipped, sum(summary.tokens.values())


# ---------------------------------------------------------------- miditok

_tokenizer: miditok.MusicTokenizer | None = None


def _init_worker(name: str) -> None:
    """Pool initializer: build this worker's tokenizer once."""
    global _tokenizer
    _tokenizer = MIDITOK_CLASSES[name](miditok.TokenizerConfig(**miditok_config()))


def _count_tokens(path: str) -> int:
    """Worker: tokens miditok produces for one file, or -1 if it fails."""
    try:
        sequences = _tokenizer(Path(path))
    except Exception:  # a benchmark counts failures; it does not stop
        return -1
    if isinstance(sequences, miditok.TokSequence):
        sequences = [sequences]
    return sum(len(sequence.ids) for sequence in sequences)


def time_miditok(name: str, paths: list[str], workers: int) -> tuple[float, int, int, int]:
    """Tokenise every file with N processes: (seconds, files ok, failed, tokens).

    Pool start-up and tokenizer construction are inside the timing, as
    `prepare` also starts its own pool.
    """
    began = time.perf_counter()
    if workers > 1:
        with Pool(workers, initializer=_init_worker, initargs=(name,)) as pool:
            counts = list(pool.imap_unordered(_count_tokens, paths, chunksize=8))
    else:
        _init_worker(name)
        counts = [_count_tokens(path) for path in paths]
    seconds = time.perf_counter() - began
    ok = [count for count in counts if count >= 0]
    return seconds, len(ok), len(counts) - len(ok), sum(ok)


def miditok_vocab_size(name: str) -> int:
    """Vocabulary size of the configured miditok tokenizer."""
    return len(MIDITOK_CLASSES[name](miditok.TokenizerConfig(**miditok_config())))


# ---------------------------------------------------------------- running


def run(data_dir: Path, workers: int, repeats: int, tokenizers: list[str],
        log: Callable[[str], None]) -> dict:
    """Time every tokeniser `repeats` times, interleaved, and collect the results."""
    files = [str(path) for path, _ in list_midi_files(data_dir)]
    if not files:
        sys.exit(f"error: no MIDI files under {data_dir}")
    for path in files:  # warm the page cache equally for everyone
        Path(path).read_bytes()

    results = {"musicgen": Measurement("musicgen", vocab_size=VOCAB.size)}
    for name in tokenizers:
        results[name] = Measurement(f"miditok {name}", vocab_size=miditok_vocab_size(name))

    meter = LoadMeter()
    for repeat in range(1, repeats + 1):
        for key, measurement in results.items():
            if key == "musicgen":
                outcome = time_musicgen(data_dir, workers)
            else:
                outcome = time_miditok(key, files, workers)
            seconds, measurement.files_ok, measurement.files_skipped, measurement.tokens = outcome
            measurement.seconds.append(round(seconds, 3))
            log(f"  run {repeat}/{repeats}  {measurement.name:<17} {seconds:8.2f} s")

    return {
        "data_dir": str(data_dir),
        "files": len(files),
        "workers": workers,
        "repeats": repeats,
        "measurements": {key: m.to_dict() for key, m in results.items()},
        "ratios": {key: round(m.median / results["musicgen"].median, 2)
                   for key, m in results.items() if key != "musicgen"},
        "miditok_config": {key: (str(value) if isinstance(value, dict) else value)
                           for key, value in miditok_config().items()},
        "machine": {
            **meter.record(),
            "python": platform.python_version(),
            "miditok": version("miditok"),
            "symusic": version("symusic"),
        },
    }


def report(result: dict) -> str:
    """The human-readable summary of `run`'s result."""
    machine = result["machine"]
    lines = [f"MAESTRO tokenisation, {result['files']} files, {result['workers']} workers, "
             f"median of {result['repeats']} cold runs", ""]
    lines.append(f"{'':<17} {'median s':>9} {'files/s':>8} {'tokens':>12} {'vocab':>6}  "
                 "all runs (s)")
    for m in result["measurements"].values():
        runs = ", ".join(f"{s:.2f}" for s in m["seconds"])
        lines.append(f"{m['name']:<17} {m['median_seconds']:>9.2f} {m['files_per_second']:>8.1f} "
                     f"{m['tokens']:>12,} {m['vocab_size']:>6}  {runs}")
    skipped = {m["name"]: m["files_skipped"] for m in result["measurements"].values()
               if m["files_skipped"]}
    if skipped:
        lines.append(f"files skipped/failed: {skipped}")
    lines.append("")
    for key, ratio in result["ratios"].items():
        lines.append(f"ratio miditok {key} / musicgen (median time): {ratio:.2f}x")
    lines += [
        "",
        "musicgen tokens include BOS and EOS around each piece; its time also covers",
        "hashing every file and writing the cache. miditok tokens are counted, not saved.",
        "The runs are interleaved, so that both sides share any load from other processes.",
        load_line(machine),
    ]
    lines.append(f"python {machine['python']}, miditok {machine['miditok']}, "
                 f"symusic {machine['symusic']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"MAESTRO v3.0.0 folder (default: {DEFAULT_DATA})")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each measurement; the median is reported (default: 3)")
    parser.add_argument("--tsd", action="store_true", help="also time miditok's TSD")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)

    if not args.data.is_dir():
        sys.exit(f"error: MAESTRO folder not found: {args.data}\n"
                 "pass --data DIR (the folder that holds maestro-v3.0.0.csv)")
    if args.workers < 1 or args.repeats < 1:
        sys.exit("error: --workers and --repeats must be at least 1")

    tokenizers = ["MIDILike", "TSD"] if args.tsd else ["MIDILike"]
    result = run(args.data.resolve(), args.workers, args.repeats, tokenizers,
                 log=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=2) if args.json else report(result))


if __name__ == "__main__":
    main()
