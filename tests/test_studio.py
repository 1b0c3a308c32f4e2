"""The demo's operations without the UI: primers from the UI's choices, ratings, plots."""

import os
import re
import time

import numpy as np
import pretty_midi
import pytest
from conftest import midi_bytes, tiny_checkpoint

from musicgen.errors import MidiError, UserError
from musicgen.examples import example_notes
from musicgen.plots import confidence, piano_roll_svg
from musicgen.settings import Settings
from musicgen.studio import Studio


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    root = tmp_path_factory.mktemp("studio")
    tiny_checkpoint(root / "checkpoints" / "lstm-small", "lstm")
    tiny_checkpoint(root / "checkpoints" / "transformer-small", "transformer")
    return Studio(root / "checkpoints", output_dir=root / "outputs",
                  ratings_path=root / "var" / "ratings.sqlite")


def test_models_listed_lstm_first(studio):
    assert studio.model_names() == ["lstm-small", "transformer-small"]


def test_prompt_choices(studio, tmp_path):
    assert studio.prompt("silence", None, None, 10).source == "silence"
    assert studio.prompt("example", studio.examples[0], None, 4).seconds > 0
    seed = tmp_path / "s.midi"
    seed.write_bytes(midi_bytes([(60, 90, 0, 1)]))
    assert studio.prompt("upload", None, str(seed), 4).source == "upload:s.midi"
    with pytest.raises(MidiError, match="upload"):
        studio.prompt("upload", None, None, 4)
    with pytest.raises(UserError, match="no example called nope"):
        studio.prompt("example", "nope", None, 4)


def test_generate_makes_files_for_each_candidate(studio):
    prompt = studio.prompt("example", studio.examples[2], None, 4)
    clips, candidates = studio.generate("transformer-small", prompt, Settings(seconds=3, n=2),
                                        soundfont="")
    assert len(clips) == 2 == len(candidates)
    for clip in clips:
        for path in (clip.audio, clip.midi):
            assert os.path.getsize(path) > 100
        assert clip.roll_svg.startswith("<svg") and clip.seconds > 3
        assert clip.recipe_data["model"] == "transformer-small"
    with pytest.raises(UserError, match="no model called nope"):
        studio.generate("nope", prompt, Settings(seconds=3))
    with pytest.raises(UserError, match="no soundfont file"):
        studio.generate("lstm-small", prompt, Settings(seconds=3), soundfont="/no/such.sf2")


def test_the_first_clip_is_rendered_while_it_is_sampled(studio, monkeypatch):
    from musicgen import audio, batcher

    if audio._import_fluidsynth() is None or not studio.renderer.soundfonts:
        pytest.skip("FluidSynth or a soundfont is missing: there is no live render")
    if studio.renderer.max_synths < 2:
        pytest.skip("one core: its one synth is not held while sampling")
    monkeypatch.setattr(batcher, "TOKENS_POLL_S", 0.0005)
    lives = []
    original_live = audio.Renderer.live

    def live(renderer, soundfont=None):
        lives.append(original_live(renderer, soundfont))
        return lives[-1]

    monkeypatch.setattr(audio.Renderer, "live", live)
    prompt = studio.prompt("example", studio.examples[0], None, 4)
    clips, _ = studio.generate("lstm-small", prompt, Settings(seconds=20, n=2, seed=0))
    assert len(lives) == 1  # the first candidate only
    assert lives[0].played_samples > 0 and lives[0].restarts == 0
    assert all(os.path.getsize(clip.audio) > 100 for clip in clips)


def test_greedy_and_sampled_never_hides_the_temperature_it_used(studio):
    prompt = studio.prompt("example", studio.examples[0], None, 3)
    pairs = studio.greedy_and_sampled("lstm-small", prompt, Settings(seconds=2, temperature=0))
    (greedy, greedy_plot), (sampled, sampled_plot) = pairs
    assert greedy.recipe_data["temperature"] == 0
    assert sampled.recipe_data["temperature"] == Settings().temperature
    assert "the default: yours is 0" in sampled.title
    assert os.path.getsize(greedy_plot) > 1000 and os.path.getsize(sampled_plot) > 1000
    (_, _), (mine, _) = studio.greedy_and_sampled("lstm-small", prompt,
                                                  Settings(seconds=2, temperature=0.7))
    assert mine.recipe_data["temperature"] == 0.7 and "0.7" in mine.title


def test_compare_plays_every_model_on_the_same_variation(studio):
    prompt = studio.prompt("example", studio.examples[1], None, 3)
    clips = studio.compare(prompt, Settings(seconds=2, seed=9, n=3))
    assert [c.recipe_data["model"] for c in clips] == studio.model_names()
    assert {c.recipe_data["seed"] for c in clips} == {9}


def test_ratings_go_to_a_database_outside_the_served_folder(studio, tmp_path):
    recipes = [{"model": "lstm-small", "seed": 3}]
    assert "Saved 1 rating" in studio.rate("session-1", recipes, ["5"])
    studio.rate("session-1", recipes, ["4"])  # again: replaced
    studio.rate("session-2", recipes, ["2"])
    rows = studio.ratings.clip_ratings()
    assert sorted((r["session"], r["score"]) for r in rows) == [("session-1", 4),
                                                                ("session-2", 2)]
    assert not studio.ratings.path.resolve().is_relative_to(studio.output_dir.resolve())
    with pytest.raises(UserError, match="pick a score"):
        studio.rate("s", recipes, [None])
    with pytest.raises(UserError, match="would be downloadable"):
        Studio(studio.output_dir.parent / "checkpoints", output_dir=tmp_path / "out",
               ratings_path=tmp_path / "out" / "ratings.sqlite")


def test_old_request_folders_are_pruned_by_a_thread_not_by_requests(studio, monkeypatch):
    old = studio.output_dir / "old-request"
    old.mkdir()
    an_hour_ago = time.time() - 7200
    os.utime(old, (an_hour_ago, an_hour_ago))
    monkeypatch.setattr(studio, "prune", lambda: pytest.fail("a request pruned"))
    studio.preview(studio.prompt("example", studio.examples[0], None, 4))
    assert old.exists()  # no request pays for the clean-up
    monkeypatch.undo()
    studio.start_pruning()  # as the app does: it prunes at once, then every minute
    try:
        for _ in range(100):
            if not old.exists():
                break
            time.sleep(0.05)
        assert not old.exists()
    finally:
        studio.stop_pruning()
    assert not studio._pruner.is_alive()


def test_outputs_and_the_ui_cache_are_capped_together_oldest_first(studio, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setattr(studio, "output_dir", tmp_path / "outputs")  # none of the others'
    monkeypatch.setattr(studio, "cache_dirs", [])
    monkeypatch.setattr(studio, "disk_cap_bytes", 2500)
    cache = tmp_path / "gradio-cache"
    now = time.time()
    made = {}
    for k, (root, age) in enumerate([(studio.output_dir, 3500), (cache, 3000),
                                     (studio.output_dir, 2500), (cache, 2000),
                                     (studio.output_dir, 1000), (cache, 60)]):
        folder = root / f"{k:02d}{'ab' * 20}"  # named as the app and Gradio name theirs
        folder.mkdir(parents=True)
        (folder / "clip.mp3").write_bytes(b"x" * 1000)
        os.utime(folder, (now - age, now - age))
        made[k] = folder
    other = cache / "not-ours.txt"  # a shared cache folder keeps what is not ours
    other.write_bytes(b"y" * 5000)
    os.utime(other, (now - 9999, now - 9999))
    studio.cache_dirs = [cache]
    studio.prune()
    assert [k for k, folder in made.items() if folder.exists()] == [4, 5]  # oldest first
    assert other.exists()
    studio.disk_cap_bytes = 500
    studio.prune()
    # Over the cap still, but a minute-old folder may be playing in someone's page.
    assert [k for k, folder in made.items() if folder.exists()] == [5]


def test_an_upload_s_summary_says_what_was_merged_and_its_key(studio, tmp_path):
    from conftest import midi_bytes

    scale = [0, 2, 4, 5, 7, 9, 11, 12]  # G major, twice over, with its tonic chord
    piano = [(55 + scale[k % 8], 80, k * 0.25, k * 0.25 + 0.2) for k in range(64)]
    piano += [(pitch, 70, 16.0, 18.0) for pitch in (43, 55, 59, 62)]
    song = tmp_path / "song.mid"
    song.write_bytes(midi_bytes(piano, drums=[(36, 100, 0.0, 0.1)],
                                extra_instruments=[[(43, 60, 0.0, 8.0)]]))
    summary = studio.seed_file(str(song), 10).summary
    assert "2 tracks merged into one piano part; drums left out." in summary
    assert "It is mostly in G major." in summary
    solo = tmp_path / "solo.mid"
    solo.write_bytes(midi_bytes([(60 + (k * 5) % 12, 80, k * 0.3, k * 0.3 + 0.2)
                                 for k in range(12)]))  # all twelve pitch classes alike
    summary = studio.seed_file(str(solo), 10).summary
    assert "merged" not in summary and "mostly in" not in summary


def test_reference_needs_a_maestro_folder_with_a_test_split(studio, tmp_path):
    with pytest.raises(UserError, match="MUSICGEN_MAESTRO_DIR"):
        studio.reference(0, 0, 5, 5)
    maestro = tmp_path / "maestro"
    maestro.mkdir()
    (maestro / "maestro-v3.0.0.csv").write_text(
        "canonical_composer,canonical_title,split,year,midi_filename,audio_filename,duration\n"
        "A,B,train,2004,2004/a.midi,2004/a.wav,10\n")
    (maestro / "2004").mkdir()
    (maestro / "2004" / "a.midi").write_bytes(midi_bytes([(60, 90, 0, 1)]))
    no_tests = Studio(studio.output_dir.parent / "checkpoints", output_dir=tmp_path / "out",
                      ratings_path=tmp_path / "r.sqlite", maestro_dir=maestro)
    with pytest.raises(UserError, match="has no test-split files"):
        no_tests.reference(0, 0, 5, 5)
    assert no_tests.maestro_pieces() == [] and studio.maestro_pieces() == []


def test_reference_lists_the_test_split_once(studio, tmp_path, monkeypatch):
    from musicgen import corpus

    maestro = tmp_path / "maestro"
    (maestro / "2004").mkdir(parents=True)
    (maestro / "maestro-v3.0.0.csv").write_text(
        "canonical_composer,canonical_title,split,year,midi_filename,audio_filename,duration\n"
        "A,B,test,2004,2004/a.midi,2004/a.wav,10\n")
    (maestro / "2004" / "a.midi").write_bytes(midi_bytes(
        [(60 + i % 12, 80, 0.5 * i, 0.5 * i + 0.4) for i in range(40)]))
    calls = []
    listing = corpus.list_midi_files
    monkeypatch.setattr(corpus, "list_midi_files", lambda d: calls.append(d) or listing(d))
    reference = Studio(studio.output_dir.parent / "checkpoints", output_dir=tmp_path / "out",
                       ratings_path=tmp_path / "r.sqlite", maestro_dir=maestro)
    assert reference.maestro_pieces() == ["A: B (2004)"]
    for start in (0, 5):
        prompt, clip, notes = reference.reference(0, start, 5, 5)
        assert prompt.source == "maestro-test:a.midi" and os.path.getsize(clip.audio) > 1000
        assert clip.recipe.startswith("A: B (2004), a.midi, from ")
        clips = reference.compare(prompt, Settings(seconds=2, seed=1), human=(notes, clip))
        assert [c.title for c in clips][-1].startswith("human performance")
        axes = {tuple(re.findall(r">(C-?\d+)</text>", c.roll_svg)) for c in clips}
        assert len(axes) == 1  # one pitch axis for the models and the pianist
    assert len(calls) == 1


def test_plots(tmp_path):
    notes = example_notes("Slow waltz in D")
    roll = piano_roll_svg(notes, 4.0, notes.duration + 1)
    assert roll.count("<rect") == len(notes) + 1 and 'class="mg-cursor"' in roll
    low, high = (pretty_midi.note_number_to_name(int(p)) for p in (notes.pitch.min(),
                                                                    notes.pitch.max()))
    assert (f'aria-label="Piano roll: {len(notes)} notes over {notes.duration + 1:.0f} s, '
            f'{low} to {high}; the seed to 4 s, the continuation after it"') in roll
    # Clips side by side share a pitch axis: the same C lines whatever the notes.
    wide = piano_roll_svg(notes, 4.0, 10, pitch_range=(30, 90))
    assert wide.count(">C") == len([p for p in range(29, 92) if p % 12 == 0])
    plot = confidence(np.linspace(3, 1, 400), np.linspace(0.1, 0.9, 400), tmp_path / "c.svg")
    svg = plot.read_text()
    assert svg.count("<circle") == 800 and svg.count("<polyline") == 2  # dots and trends
    import xml.etree.ElementTree as ElementTree
    ElementTree.fromstring(svg)  # well-formed: a browser will draw it
