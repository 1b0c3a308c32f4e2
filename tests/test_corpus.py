"""`prepare`: a folder of MIDI (or MAESTRO) into a reusable token cache."""

import json
import subprocess
import sys

import numpy as np
from conftest import REPO, midi_bytes

from musicgen.corpus import hash_split, list_midi_files, prepare
from musicgen.data import TokenCache
from musicgen.events import VOCAB


def _folder(tmp_path, count=6):
    data = tmp_path / "midi"
    (data / "sub").mkdir(parents=True)
    for i in range(count):
        notes = [(48 + i + k, 60 + k, 0.25 * k, 0.25 * k + 0.2) for k in range(10)]
        (data / ("sub" if i % 2 else "") / f"piece{i}.mid").write_bytes(midi_bytes(notes))
    (data / "broken.midi").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02")
    (data / "notes.txt").write_text("not midi")
    return data


def test_prepare_encodes_files_and_lists_bad_ones(tmp_path):
    data = _folder(tmp_path)
    summary = prepare(data, tmp_path / "cache", workers=2, progress=False)
    assert summary.files_ok == 6 and summary.files_skipped == 1
    assert summary.skipped[0]["file"] == "broken.midi"
    assert "truncated" in summary.skipped[0]["reason"]
    cache = TokenCache.load(tmp_path / "cache")
    assert cache.tokens.dtype == np.uint16
    assert sum(summary.tokens.values()) == len(cache.tokens)
    for piece in cache.pieces:
        tokens = cache.tokens[piece["offset"]:piece["offset"] + piece["length"]]
        assert tokens[0] == VOCAB.bos and tokens[-1] == VOCAB.eos
        assert piece["split"] == hash_split(piece["sha256"])
        assert piece["seconds"] > 2.0


def test_rerun_reuses_unchanged_files_only(tmp_path):
    data = _folder(tmp_path)
    first = prepare(data, tmp_path / "cache", workers=1, progress=False)
    tokens_before = np.array(TokenCache.load(tmp_path / "cache").tokens)
    again = prepare(data, tmp_path / "cache", workers=1, progress=False)
    assert again.files_reused == first.files_ok  # the broken file is retried, not reused
    assert np.array_equal(TokenCache.load(tmp_path / "cache").tokens, tokens_before)
    (data / "piece0.mid").write_bytes(midi_bytes([(70, 70, 0.0, 1.0)]))
    changed = prepare(data, tmp_path / "cache", workers=1, progress=False)
    assert changed.files_reused == first.files_ok - 1


def test_hash_split_is_roughly_90_5_5():
    import hashlib
    splits = [hash_split(hashlib.sha256(str(i).encode()).hexdigest()) for i in range(4000)]
    share = {name: splits.count(name) / len(splits) for name in ("train", "validation", "test")}
    assert 0.87 < share["train"] < 0.93 and 0.03 < share["test"] < 0.07


def test_prepare_cli_prints_one_json_summary(tmp_path):
    data = _folder(tmp_path, count=2)
    result = subprocess.run([sys.executable, "-m", "musicgen", "prepare", "--data", str(data),
                             "--out", str(tmp_path / "c"), "--json", "--workers", "1"],
                            capture_output=True, text=True, cwd=REPO, check=True)
    summary = json.loads(result.stdout)
    assert summary["files_ok"] == 2 and summary["files_skipped"] == 1


def test_maestro_uses_the_official_split(maestro_dir, tmp_path):
    files = list_midi_files(maestro_dir)
    assert len(files) == 1276
    summary = prepare(maestro_dir, tmp_path / "cache", progress=False)
    assert summary.files_skipped == 0
    assert summary.pieces == {"train": 962, "validation": 137, "test": 177}
    assert summary.tokens["train"] > 20_000_000
