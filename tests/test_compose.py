"""Seed -> candidates -> MIDI with its recipe, and the `generate` command."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, midi_bytes, tiny_checkpoint

from musicgen import compose
from musicgen.examples import example_names, example_notes
from musicgen.midi import MidiError, read_midi


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    tiny_checkpoint(folder / "lstm-tiny", "lstm")
    tiny_checkpoint(folder / "transformer-tiny", "transformer")
    return folder


@pytest.fixture(scope="module")
def lstm(checkpoints):
    return compose.load_model(checkpoints / "lstm-tiny")


def test_every_example_is_a_usable_seed():
    assert len(example_names()) >= 4
    for name in example_names():
        notes = example_notes(name)
        assert len(notes) > 8 and notes.duration > 4 and (notes.end > notes.start).all()
        primer = compose.primer_from_example(name, 4.0)
        assert 0 < primer.seconds <= 4.0 + 1e-9 and len(primer.tokens)


def test_unknown_example_names_the_choices():
    with pytest.raises(KeyError, match="choose one of"):
        example_notes("nope")


def test_primer_is_the_last_seconds_of_the_seed():
    seed = midi_bytes([(60, 80, 0.0, 1.0), (62, 80, 5.0, 6.0), (64, 80, 8.0, 9.0)])
    primer = compose.primer_from_midi(seed, 4.0, "s.mid")
    assert primer.notes.pitch.tolist() == [62, 64]
    np.testing.assert_allclose(primer.notes.start, [0.0, 3.0], atol=0.01)
    assert primer.source == "upload:s.mid"
    assert compose.primer_from_midi(seed, 0, "s.mid").source == "silence"


def test_bad_seed_and_settings_raise_plain_errors(lstm):
    with pytest.raises(MidiError):
        compose.primer_from_midi(b"garbage", 5.0)
    with pytest.raises(ValueError, match="primer length"):
        compose.primer_from_midi(midi_bytes([(60, 80, 0, 1)]), 500)
    with pytest.raises(ValueError, match="candidates"):
        compose.compose(lstm, compose.silence(), compose.Settings(n=9))
    with pytest.raises(ValueError, match="length"):
        compose.compose(lstm, compose.silence(), compose.Settings(seconds=0))


def test_candidates_carry_seed_continuation_and_stats(lstm):
    primer = compose.primer_from_example(example_names()[0], 5.0)
    candidates = compose.compose(lstm, primer, compose.Settings(seconds=4, n=2, seed=5))
    assert [c.index for c in candidates] == [0, 1]
    assert [c.recipe["seed"] for c in candidates] == [5, 6]
    for candidate in candidates:
        assert candidate.primer_end == pytest.approx(primer.seconds)
        assert set(candidate.stats) >= {"notes", "seconds", "pitch_range", "notes_per_second"}
        assert len(candidate.entropy) == candidate.stats["tokens"]


def test_continuation_only(lstm):
    primer = compose.primer_from_example(example_names()[1], 5.0)
    settings = compose.Settings(seconds=4, seed=2, include_primer=False)
    (candidate,) = compose.compose(lstm, primer, settings)
    assert candidate.primer_end == 0.0
    assert (candidate.notes.start >= 0).all()


def test_recipe_round_trip_regenerates_the_same_notes(lstm, checkpoints, tmp_path):
    primer = compose.primer_from_midi(midi_bytes([(60, 90, 0, 0.5), (67, 70, 0.5, 1.5)]), 5)
    candidates = compose.compose(lstm, primer, compose.Settings(seconds=5, n=3, seed=11,
                                                                temperature=1.1, top_k=40))
    path = compose.write_midi(candidates[2], tmp_path / "third.mid")
    recipe = compose.read_recipe(path)
    assert recipe["seed"] == 13 and recipe["model"] == "lstm-tiny"
    assert compose.model_for_recipe(recipe, checkpoints) == checkpoints / "lstm-tiny"
    again = compose.compose(lstm, compose.primer_from_recipe(recipe),
                            compose.settings_from_recipe(recipe))[0]
    written = read_midi(path)
    assert again.notes.pitch.tolist() == written.pitch.tolist()
    np.testing.assert_allclose(again.notes.start, written.start, atol=1e-3)


def test_read_recipe_of_a_foreign_file(tmp_path):
    path = tmp_path / "plain.mid"
    path.write_bytes(midi_bytes([(60, 90, 0, 1)]))
    with pytest.raises(MidiError, match="no musicgen recipe"):
        compose.read_recipe(path)


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "musicgen", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def test_generate_command_writes_midi_audio_and_json(checkpoints, tmp_path):
    result = _cli("generate", "--checkpoint", checkpoints / "lstm-tiny", "--example",
                  example_names()[0], "--seconds", 3, "--n", 2, "--out", tmp_path / "g.mid",
                  "--audio", tmp_path / "g.wav", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["candidates"]) == 2
    for entry in report["candidates"]:
        assert (tmp_path / entry["midi"]).is_file()
        assert (tmp_path / entry["audio"]["path"]).is_file()
        assert entry["stats"]["sampling_s"] >= 0 and entry["audio"]["rendering_s"] >= 0
    # --recipe-from gives the same notes again.
    first = report["candidates"][0]["midi"]
    again = _cli("generate", "--checkpoint", checkpoints / "lstm-tiny", "--recipe-from", first,
                 "--out", tmp_path / "again.mid")
    assert again.returncode == 0, again.stderr
    assert read_midi(tmp_path / "again.mid").pitch.tolist() == read_midi(first).pitch.tolist()


def test_generate_command_explains_a_corrupt_seed(checkpoints, tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x03\x01\xe0MTrk\x00\x00\x10\x00")
    result = _cli("generate", "--checkpoint", checkpoints / "lstm-tiny", "--seed-midi", bad,
                  "--out", tmp_path / "x.mid")
    assert result.returncode == 1
    assert "truncated" in result.stderr and "Traceback" not in result.stderr
