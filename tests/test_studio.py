"""The demo's operations without the UI: primers from the UI's choices, ratings, plots."""

import json
import os
import time

import numpy as np
import pytest
from conftest import midi_bytes, tiny_checkpoint

from musicgen.compose import Settings
from musicgen.examples import example_notes
from musicgen.midi import MidiError
from musicgen.plots import confidence, piano_roll
from musicgen.studio import SILENCE, UPLOAD, Studio


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    root = tmp_path_factory.mktemp("studio")
    tiny_checkpoint(root / "checkpoints" / "lstm-small", "lstm")
    tiny_checkpoint(root / "checkpoints" / "transformer-small", "transformer")
    return Studio(root / "checkpoints", output_dir=root / "outputs")


def test_models_listed_lstm_first(studio):
    assert studio.model_names() == ["lstm-small", "transformer-small"]


def test_primer_choices(studio, tmp_path):
    assert studio.primer(SILENCE, None, None, 10).source == "silence"
    assert studio.primer("Built-in example", studio.examples[0], None, 4).seconds > 0
    seed = tmp_path / "s.midi"
    seed.write_bytes(midi_bytes([(60, 90, 0, 1)]))
    assert studio.primer(UPLOAD, None, str(seed), 4).source == "upload:s.midi"
    with pytest.raises(MidiError, match="upload"):
        studio.primer(UPLOAD, None, None, 4)
    text = tmp_path / "s.txt"
    text.write_text("hello")
    with pytest.raises(MidiError, match="not a .mid"):
        studio.primer(UPLOAD, None, str(text), 4)
    big = tmp_path / "big.mid"
    big.write_bytes(midi_bytes([(60, 90, 0, 1)]) + b"\0" * (6 * 2**20))
    with pytest.raises(MidiError, match="limited to 5 MB"):
        studio.primer(UPLOAD, None, str(big), 4)
    with pytest.raises(ValueError, match="unknown example"):
        studio.primer("Built-in example", "nope", None, 4)


def test_generate_makes_files_for_each_candidate(studio):
    primer = studio.primer("Built-in example", studio.examples[2], None, 4)
    clips, candidates = studio.generate("transformer-small", primer, Settings(seconds=3, n=2))
    assert len(clips) == 2 == len(candidates)
    for clip in clips:
        for path in (clip.audio, clip.midi, clip.piano_roll):
            assert os.path.getsize(path) > 100
        assert clip.recipe_data["model"] == "transformer-small"
    with pytest.raises(ValueError, match="unknown model"):
        studio.generate("nope", primer, Settings(seconds=3))


def test_ratings_append_json_lines(studio):
    clip = {"model": "lstm-small", "seed": 3}
    assert "5/5" in studio.rate("session-1", clip, 5, "lovely")
    studio.rate("session-2", clip, 2)
    lines = [json.loads(line) for line in studio.ratings_path.read_text().splitlines()]
    assert [(r["session"], r["score"]) for r in lines[-2:]] == [("session-1", 5), ("session-2", 2)]
    with pytest.raises(ValueError):
        studio.rate("s", clip, 9)
    with pytest.raises(ValueError, match="pick a score"):
        studio.rate("s", clip, None)


def test_old_request_folders_are_pruned(studio):
    old = studio.output_dir / "old-request"
    old.mkdir()
    an_hour_ago = time.time() - 7200
    os.utime(old, (an_hour_ago, an_hour_ago))
    studio.preview_example(studio.examples[0])
    assert not old.exists()


def test_reference_needs_a_maestro_folder(studio):
    with pytest.raises(FileNotFoundError, match="MUSICGEN_MAESTRO_DIR"):
        studio.reference(0, 0, 5, 5)


def test_plots_write_pngs(tmp_path):
    roll = piano_roll(example_notes("Slow waltz in D"), 4.0, tmp_path / "roll.png", "waltz")
    plot = confidence(np.linspace(3, 1, 40), np.linspace(0.1, 0.9, 40), tmp_path / "c.png")
    assert roll.stat().st_size > 5000 and plot.stat().st_size > 5000
