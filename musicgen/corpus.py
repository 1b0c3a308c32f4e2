"""Turn a folder of MIDI files into a token cache that training loads with numpy alone.

A cache folder holds two files:

    tokens.npy   uint16, every piece as [BOS, events..., EOS], back to back
    index.json   the vocabulary, the encoder version, and one record per piece
                 (source, sha256, split, offset, length, seconds) plus the
                 files that were skipped and why

Pieces are keyed by the sha256 of the file and the encoder version, so a
re-run encodes only files it has not seen (or that changed).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from musicgen.data import NoCacheError, load_index
from musicgen.errors import MidiError, UserError
from musicgen.events import VOCAB, encode_notes
from musicgen.midi import read_midi

# Bump when encode output changes for the same file, so caches re-encode.
ENCODER_VERSION = f"{VOCAB.version}/quantize-2"
MAESTRO_CSV = "maestro-v3.0.0.csv"
SPLITS = ("train", "validation", "test")
MIDI_SUFFIXES = {".mid", ".midi"}


@dataclass
class Piece:
    """One encoded file in the cache: tokens[offset : offset + length]."""

    source: str
    sha256: str
    split: str
    offset: int
    length: int
    seconds: float


@dataclass
class PrepareSummary:
    """What `prepare` did, as printed by `prepare --json`."""

    cache: str
    files_ok: int = 0
    files_skipped: int = 0
    files_reused: int = 0
    tokens: dict[str, int] = field(default_factory=dict)
    pieces: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    skipped: list[dict[str, str]] = field(default_factory=list)


def default_cache_dir(data_dir: str | os.PathLike) -> Path:
    """Where a folder of MIDI files is cached unless told otherwise: cache/<its name>."""
    return Path("cache") / Path(data_dir).resolve().name


def list_midi_files(data_dir: Path) -> list[tuple[Path, str | None]]:
    """Find the MIDI files of a corpus and their split where it is known.

    A MAESTRO tree (with maestro-v3.0.0.csv) takes the official split from
    the CSV; any other folder is searched recursively for .mid/.midi files
    and split later by content hash.

    Returns:
        (path, split or None) pairs, sorted by path.
    """
    data_dir = Path(data_dir)
    if (data_dir / MAESTRO_CSV).is_file():
        with open(data_dir / MAESTRO_CSV, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        return sorted((data_dir / row["midi_filename"], row["split"]) for row in rows)
    found = [p for p in data_dir.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file()]
    return [(path, None) for path in sorted(found)]


def maestro_titles(data_dir: Path) -> dict[Path, str]:
    """Each MAESTRO file's piece in words, "composer: title (year)" (empty for a folder
    without the MAESTRO CSV)."""
    data_dir = Path(data_dir)
    if not (data_dir / MAESTRO_CSV).is_file():
        return {}
    with open(data_dir / MAESTRO_CSV, newline="", encoding="utf-8") as handle:
        return {data_dir / row["midi_filename"]:
                f"{row['canonical_composer']}: {row['canonical_title']} ({row['year']})"
                for row in csv.DictReader(handle)}


def hash_split(sha256: str) -> str:
    """Deterministic 90/5/5 train/validation/test split from a content hash."""
    bucket = int(sha256[:8], 16) % 100
    return "train" if bucket < 90 else "validation" if bucket < 95 else "test"


def _encode_file(path: str) -> tuple[str, np.ndarray | None, float, str]:
    """Worker: (path, tokens or None, seconds, error message)."""
    try:
        notes = read_midi(path)
        tokens = encode_notes(notes)
    except MidiError as error:
        return path, None, 0.0, str(error)
    framed = np.concatenate(([VOCAB.bos], tokens, [VOCAB.eos])).astype(np.uint16)
    return path, framed, notes.duration, ""


def prepare(data_dir: str | os.PathLike, cache_dir: str | os.PathLike, workers: int = 0,
            progress: bool = True) -> PrepareSummary:
    """Encode every MIDI file under `data_dir` into the cache at `cache_dir`.

    Args:
        data_dir: A MAESTRO tree or any folder of MIDI files.
        cache_dir: Output folder (created if missing); an existing cache there
            is reused for files with the same content and encoder version.
        workers: Processes to use; 0 means one per core.
        progress: Show a progress bar on stderr.

    Returns:
        A summary; bad files are listed in it and never stop the run.
    """
    began = time.perf_counter()
    data_dir, cache_dir = Path(data_dir), Path(cache_dir)
    files = list_midi_files(data_dir)
    if not files:
        raise UserError(f"there are no MIDI files (.mid, .midi) under {data_dir}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    previous = _previous_pieces(cache_dir)

    digests = {str(path): hashlib.sha256(path.read_bytes()).hexdigest() for path, _ in files}
    encoded: dict[str, tuple[np.ndarray | None, float, str]] = {}
    to_encode = [str(path) for path, _ in files if digests[str(path)] not in previous]
    reused = len(files) - len(to_encode)
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(to_encode), desc="encoding", unit="file", disable=not progress)
    parallel = workers > 1 and len(to_encode) > 1
    with ProcessPoolExecutor(workers) if parallel else _InProcess() as pool:
        for path, tokens, seconds, error in pool.map(_encode_file, to_encode, chunksize=8):
            encoded[path] = (tokens, seconds, error)
            bar.update()
    bar.close()

    summary = PrepareSummary(cache=str(cache_dir), files_reused=reused)
    pieces, arrays, offset = [], [], 0
    for path, split in files:
        digest = digests[str(path)]
        if digest in previous:
            tokens, seconds = previous[digest]
        else:
            tokens, seconds, error = encoded[str(path)]
            if tokens is None:
                summary.skipped.append({"file": str(path.relative_to(data_dir)), "reason": error})
                continue
        split = split or hash_split(digest)
        pieces.append(Piece(str(path.relative_to(data_dir)), digest, split, offset,
                            len(tokens), round(seconds, 3)))
        arrays.append(tokens)
        offset += len(tokens)
        summary.tokens[split] = summary.tokens.get(split, 0) + len(tokens)
        summary.pieces[split] = summary.pieces.get(split, 0) + 1

    all_tokens = np.concatenate(arrays) if arrays else np.zeros(0, np.uint16)
    _write_atomically(cache_dir / "tokens.npy", lambda f: np.save(f, all_tokens))
    index = {"vocab": VOCAB.to_dict(), "encoder_version": ENCODER_VERSION,
             "data_dir": str(data_dir), "pieces": [asdict(p) for p in pieces],
             "skipped": summary.skipped}
    _write_atomically(cache_dir / "index.json",
                      lambda f: f.write(json.dumps(index, indent=1).encode()))
    summary.files_ok = len(pieces)
    summary.files_skipped = len(summary.skipped)
    summary.seconds = round(time.perf_counter() - began, 2)
    return summary


def _previous_pieces(cache_dir: Path) -> dict[str, tuple[np.ndarray, float]]:
    """sha256 -> (tokens, seconds) from an existing cache of the same encoder."""
    try:
        index = load_index(cache_dir)
        tokens = np.load(cache_dir / "tokens.npy", mmap_mode="r")
    except (NoCacheError, FileNotFoundError, ValueError, json.JSONDecodeError):
        return {}
    if index.get("encoder_version") != ENCODER_VERSION:
        return {}
    return {p["sha256"]: (np.array(tokens[p["offset"]:p["offset"] + p["length"]]), p["seconds"])
            for p in index["pieces"]}


class _InProcess:
    """Stands in for a process pool when one worker is asked for (or one file)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def map(self, function, items, chunksize=1):
        return map(function, items)


def _write_atomically(path: Path, write) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        write(handle)
    os.replace(partial, path)

