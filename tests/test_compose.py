"""Prompt -> candidates -> MIDI with its recipe, and the `generate` command."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, midi_bytes, tiny_checkpoint

from musicgen import compose
from musicgen.errors import MidiError, RecipeError, SettingsError, UserError
from musicgen.examples import example_names, example_notes
from musicgen.midi import read_midi
from musicgen.outputs import write_candidate
from musicgen.prompt import (
    choose_prompt,
    prompt_from_example,
    prompt_from_file,
    prompt_from_notes,
)
from musicgen.recipe import (
    RECIPE_PREFIX,
    RECIPE_VERSION,
    read_recipe,
    recipe_prompt,
    recipe_settings,
    recipe_text,
    replay,
)
from musicgen.settings import Settings


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
        prompt = prompt_from_example(name, 4.0)
        assert 0 < prompt.seconds <= 4.0 + 1e-9 and len(prompt.tokens)


def test_unknown_example_names_the_choices_in_plain_words():
    with pytest.raises(UserError, match="there is no example called nope; choose one of") as e:
        example_notes("nope")
    assert "'" not in str(e.value)


def _seed_file(tmp_path, notes, name="s.mid"):
    path = tmp_path / name
    path.write_bytes(midi_bytes(notes))
    return path


def test_prompt_is_the_last_seconds_of_the_seed_midi(tmp_path):
    seed = _seed_file(tmp_path, [(60, 80, 0.0, 1.0), (62, 80, 5.0, 6.0), (64, 80, 8.0, 9.0)])
    prompt = prompt_from_file(seed, 4.0)
    assert prompt.notes.pitch.tolist() == [62, 64]
    np.testing.assert_allclose(prompt.notes.start, [0.0, 3.0], atol=0.01)
    assert prompt.source == "upload:s.mid"
    assert prompt_from_file(seed, 0).source == "silence"


def test_choose_prompt_applies_the_same_checks_for_every_front_end(tmp_path):
    assert choose_prompt("silence").source == "silence"
    assert choose_prompt("example", example=example_names()[2], seconds=4).seconds > 0
    assert choose_prompt("upload", path=_seed_file(tmp_path, [(60, 90, 0, 1)]),
                         seconds=4).source == "upload:s.mid"
    with pytest.raises(MidiError, match="upload a .mid or .midi file first"):
        choose_prompt("upload", path=None)
    text = tmp_path / "s.txt"
    text.write_text("hello")
    with pytest.raises(MidiError, match="not a MIDI file name"):
        choose_prompt("upload", path=text)
    big = tmp_path / "big.mid"
    big.write_bytes(midi_bytes([(60, 90, 0, 1)]) + b"\0" * (6 * 2**20))
    with pytest.raises(MidiError, match="limited to 5 MB"):
        choose_prompt("upload", path=big)
    garbage = tmp_path / "garbage.mid"
    garbage.write_bytes(b"no")
    with pytest.raises(MidiError, match="not a MIDI file"):
        choose_prompt("upload", path=garbage)
    with pytest.raises(UserError, match="no kind of seed called drums"):
        choose_prompt("drums")
    with pytest.raises(SettingsError, match="Excerpt length"):
        choose_prompt("example", seconds=500)


def test_settings_own_every_limit_and_say_what_is_wrong():
    with pytest.raises(SettingsError, match="Candidates must be between 1 and 4, not 9"):
        Settings(n=9)
    with pytest.raises(SettingsError, match="Length of the continuation"):
        Settings(seconds=0)
    with pytest.raises(SettingsError, match="Temperature must be between 0 and 2"):
        Settings.from_user(temperature=3)
    with pytest.raises(SettingsError, match="Variation must be a whole number, not 2.5"):
        Settings.from_user(seed=2.5)
    with pytest.raises(SettingsError, match="Top-p must be a number, not lots"):
        Settings.from_user(top_p="lots")
    with pytest.raises(SettingsError, match="no setting called heat"):
        Settings.from_user(heat=1)
    assert Settings.from_user(seconds="12", top_k=5.0, temperature=None) == Settings(
        seconds=12, top_k=5)


def test_an_emptied_variation_means_a_new_random_one():
    seeds = {Settings.from_user(seed=value).seed for value in (None, "", None, "")}
    assert len(seeds) == 4  # 1 in 10^8 to fail by chance
    assert len({Settings.from_user(seed=7, new_seed=True).seed for _ in range(4)}) == 4
    assert Settings.from_user(seed=7).seed == 7


def test_candidates_carry_prompt_continuation_and_stats(lstm):
    prompt = prompt_from_example(example_names()[0], 5.0)
    candidates = compose.compose(lstm, prompt, Settings(seconds=4, n=2, seed=5))
    assert [c.index for c in candidates] == [0, 1]
    assert [c.recipe["seed"] for c in candidates] == [5, 6]
    for candidate in candidates:
        assert candidate.prompt_end == pytest.approx(prompt.seconds)
        assert set(candidate.stats) >= {"notes", "seconds", "pitch_range", "notes_per_second"}
        assert len(candidate.entropy) == candidate.stats["tokens"]


def test_the_seed_music_in_the_output_keeps_its_long_notes(lstm):
    # A pedalled 8 s bass note: the decoder's 5 s cut is for the model's notes only.
    notes = [(36, 70, 0.0, 8.0), (60, 80, 0.0, 0.5), (64, 80, 2.0, 2.5), (67, 80, 7.5, 8.0)]
    prompt = prompt_from_notes(read_midi(midi_bytes(notes)), 10, "long")
    (candidate,) = compose.compose(lstm, prompt, Settings(seconds=2, seed=1))
    seed_part = candidate.notes.start < candidate.prompt_end
    lengths = candidate.notes.end[seed_part] - candidate.notes.start[seed_part]
    np.testing.assert_allclose(sorted(lengths), [0.5, 0.5, 0.5, 8.0], atol=0.011)


def test_the_continuation_decodes_as_if_joined_to_the_seed_music():
    from musicgen.events import VOCAB, decode_events

    on, off, shift = VOCAB["note_on"], VOCAB["note_off"], VOCAB["time_shift"]
    prompt = prompt_from_notes(read_midi(midi_bytes([(60, 30, 0.0, 1.0)])), 10, "quiet")
    # No velocity event of its own: the first note plays at the seed's last velocity.
    continuation = np.array([on.token(62), shift.token(50), off.token(62), on.token(64),
                             shift.token(20), off.token(64)])
    new, _ = compose.decode_continuation(prompt, continuation)
    joined, _ = decode_events(np.concatenate((prompt.tokens, continuation)))
    later = joined.start >= prompt.seconds
    assert new.pitch.tolist() == joined.pitch[later].tolist() == [62, 64]
    assert new.velocity.tolist() == joined.velocity[later].tolist()
    np.testing.assert_allclose(new.start, joined.start[later])
    np.testing.assert_allclose(new.end, joined.end[later])


def test_continuation_only(lstm):
    prompt = prompt_from_example(example_names()[1], 5.0)
    (candidate,) = compose.compose(lstm, prompt, Settings(seconds=4, seed=2,
                                                          include_prompt=False))
    assert candidate.prompt_end == 0.0
    assert (candidate.notes.start >= 0).all()


def test_recipe_round_trip_regenerates_the_same_notes(lstm, checkpoints, tmp_path):
    prompt = prompt_from_file(_seed_file(tmp_path, [(60, 90, 0, 0.5), (67, 70, 0.5, 1.5)]), 5)
    candidates = compose.compose(lstm, prompt, Settings(seconds=5, n=3, seed=11,
                                                        temperature=1.1, top_k=40))
    path = write_candidate(candidates[2], tmp_path / "third.mid").midi
    recipe = read_recipe(path)
    assert recipe["seed"] == 13 and recipe["n"] == 1 and recipe["model"] == "lstm-tiny"
    assert compose.checkpoint_for_recipe(recipe, checkpoints) == checkpoints / "lstm-tiny"
    again = compose.compose(lstm, *replay(recipe))[0]
    written = read_midi(path)
    assert again.notes.pitch.tolist() == written.pitch.tolist()
    np.testing.assert_allclose(again.notes.start, written.start, atol=1e-3)
    assert recipe_settings(recipe) == Settings(seconds=5, seed=13, temperature=1.1, top_k=40)
    assert recipe_prompt(recipe).sha256 == prompt.sha256
    longer = compose.compose(lstm, *replay(recipe, seconds=8, n=2))
    assert [c.recipe["seconds"] for c in longer] == [8, 8]
    assert [c.recipe["seed"] for c in longer] == [13, 14]


def _with_recipe(tmp_path, text: str):
    import mido
    midi = mido.MidiFile()
    track = mido.MidiTrack([mido.MetaMessage("text", text=text)])
    midi.tracks.append(track)
    path = tmp_path / "r.mid"
    midi.save(str(path))
    return path


def test_damaged_recipes_are_refused_in_plain_words(lstm, tmp_path):
    prompt = prompt_from_example(example_names()[0], 3)
    (candidate,) = compose.compose(lstm, prompt, Settings(seconds=1, seed=2))
    recipe = dict(candidate.recipe)
    del recipe["top_k"]
    with pytest.raises(RecipeError, match="incomplete: it lacks top_k") as error:
        read_recipe(_with_recipe(tmp_path, RECIPE_PREFIX + json.dumps(recipe)))
    assert not isinstance(error.value, KeyError)
    with pytest.raises(RecipeError, match="not valid JSON"):
        read_recipe(_with_recipe(tmp_path, RECIPE_PREFIX + "{oops"))
    tampered = {**candidate.recipe, "prompt_tokens": candidate.recipe["prompt_tokens"][:-1]}
    with pytest.raises(RecipeError, match="does not match its hash"):
        recipe_prompt(tampered)
    with pytest.raises(RecipeError, match="Temperature"):
        recipe_settings({**candidate.recipe, "temperature": 9})
    with pytest.raises(RecipeError, match="none of the checkpoints"):
        compose.checkpoint_for_recipe({**candidate.recipe, "weights_sha256": "0" * 64},
                                      tmp_path)


def test_version_1_recipes_still_replay(lstm, tmp_path):
    prompt = prompt_from_example(example_names()[0], 3)
    (candidate,) = compose.compose(lstm, prompt, Settings(seconds=2, seed=4))
    old_names = {"prompt_source": "primer_source", "prompt_sha256": "primer_sha256",
                 "prompt_seconds": "primer_seconds", "prompt_tokens": "primer_tokens",
                 "include_prompt": "include_primer"}
    v1 = {old_names.get(k, k): v for k, v in candidate.recipe.items() if k != "n"}
    v1["version"] = 1
    recipe = read_recipe(_with_recipe(tmp_path, RECIPE_PREFIX + json.dumps(v1)))
    assert compose.compose(lstm, *replay(recipe))[0].notes.pitch.tolist() == (
        candidate.notes.pitch.tolist())


def test_paired_notes_and_min_p_are_in_the_recipe_and_older_recipes_replay_without(
        lstm, tmp_path):
    prompt = prompt_from_example(example_names()[0], 3)
    (paired,) = compose.compose(lstm, prompt, Settings(seconds=2, seed=4, paired_notes=True,
                                                       min_p=0.05))
    assert paired.recipe["paired_notes"] is True and paired.recipe["min_p"] == 0.05
    again = read_recipe(_with_recipe(tmp_path, recipe_text(paired.recipe)))
    assert _same_notes(compose.compose(lstm, *replay(again))[0].notes, paired.notes)
    (unpaired,) = compose.compose(lstm, prompt, Settings(seconds=2, seed=4,
                                                         paired_notes=False))
    v3 = {k: v for k, v in unpaired.recipe.items() if k not in ("paired_notes", "min_p")}
    recipe = read_recipe(_with_recipe(tmp_path, RECIPE_PREFIX + json.dumps(v3 | {"version": 3})))
    assert recipe["paired_notes"] is False and recipe["min_p"] == 0.0
    assert _same_notes(compose.compose(lstm, *replay(recipe))[0].notes, unpaired.notes)


def test_keep_timing_is_in_the_recipe_and_older_recipes_replay_without(lstm, tmp_path):
    prompt = prompt_from_example(example_names()[0], 3)
    (timed,) = compose.compose(lstm, prompt, Settings(seconds=2, seed=4, temperature=0.7,
                                                      keep_timing=True))
    assert timed.recipe["keep_timing"] is True and timed.recipe["version"] == RECIPE_VERSION
    again = read_recipe(_with_recipe(tmp_path, recipe_text(timed.recipe)))
    assert _same_notes(compose.compose(lstm, *replay(again))[0].notes, timed.notes)
    (plain,) = compose.compose(lstm, prompt, Settings(seconds=2, seed=4, temperature=0.7,
                                                      keep_timing=False, paired_notes=False))
    assert not _same_notes(plain.notes, timed.notes)
    v4 = {k: v for k, v in plain.recipe.items() if k != "keep_timing"} | {"version": 4}
    recipe = read_recipe(_with_recipe(tmp_path, RECIPE_PREFIX + json.dumps(v4)))
    assert recipe["keep_timing"] is False
    assert _same_notes(compose.compose(lstm, *replay(recipe))[0].notes, plain.notes)


def test_older_recipes_with_paired_notes_replay_with_the_rule_they_were_sampled_with(
        lstm, tmp_path):
    prompt = prompt_from_example(example_names()[0], 3)
    settings = Settings(seconds=4, seed=5, temperature=1.2, paired_notes=True)
    (kept,) = compose.compose(lstm, prompt, settings)
    (spread,) = compose.compose(lstm, prompt, settings.but(paired_keeps_types=False))
    assert kept.recipe["paired_keeps_types"] is True and not _same_notes(kept.notes, spread.notes)
    v5 = {k: v for k, v in spread.recipe.items() if k != "paired_keeps_types"} | {"version": 5}
    recipe = read_recipe(_with_recipe(tmp_path, RECIPE_PREFIX + json.dumps(v5)))
    assert recipe["paired_keeps_types"] is False
    assert _same_notes(compose.compose(lstm, *replay(recipe))[0].notes, spread.notes)
    again = read_recipe(_with_recipe(tmp_path, recipe_text(kept.recipe)))
    assert _same_notes(compose.compose(lstm, *replay(again))[0].notes, kept.notes)


def test_recipes_before_released_held_keys_replay_without(lstm, tmp_path):
    prompt = prompt_from_example(example_names()[0], 3)
    (today,) = compose.compose(lstm, prompt, Settings(seconds=2, seed=6))
    assert today.recipe["release_held_keys"] is True
    assert replay(read_recipe(_with_recipe(tmp_path, recipe_text(today.recipe))))[1] \
        .release_held_keys
    v6 = {k: v for k, v in today.recipe.items() if k != "release_held_keys"} | {"version": 6}
    _, settings = replay(read_recipe(_with_recipe(tmp_path, RECIPE_PREFIX + json.dumps(v6))))
    assert settings.release_held_keys is False  # what the sampler did then (sample.py tests it)


def test_an_older_unpaired_recipe_paired_on_replay_gets_todays_rule(lstm, tmp_path):
    prompt = prompt_from_example(example_names()[0], 3)
    (plain,) = compose.compose(lstm, prompt, Settings(seconds=4, seed=5, temperature=1.2,
                                                      paired_notes=False))
    v5 = {k: v for k, v in plain.recipe.items() if k != "paired_keeps_types"} | {"version": 5}
    recipe = read_recipe(_with_recipe(tmp_path, RECIPE_PREFIX + json.dumps(v5)))
    assert _same_notes(compose.compose(lstm, *replay(recipe))[0].notes, plain.notes)
    _, settings = replay(recipe, paired_notes=True)
    assert settings.paired_notes and settings.paired_keeps_types


def _same_notes(a, b) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f))
               for f in ("pitch", "velocity", "start", "end"))


def test_read_recipe_of_a_foreign_file(tmp_path):
    path = _seed_file(tmp_path, [(60, 90, 0, 1)], "plain.mid")
    with pytest.raises(RecipeError, match="holds no musicgen recipe"):
        read_recipe(path)


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
    # Options given with --recipe-from change the recipe instead of being ignored.
    changed = _cli("generate", "--checkpoint", checkpoints / "lstm-tiny", "--recipe-from", first,
                   "--seconds", 2, "--temperature", 0.5, "--n", 2, "--out", tmp_path / "c.mid",
                   "--json")
    assert changed.returncode == 0, changed.stderr
    recipes = [c["recipe"] for c in json.loads(changed.stdout)["candidates"]]
    first_seed = report["candidates"][0]["recipe"]["seed"]
    assert [(r["seconds"], r["temperature"], r["seed"]) for r in recipes] == [
        (2, 0.5, first_seed), (2, 0.5, first_seed + 1)]


def test_generate_command_speaks_plainly_about_wrong_input(checkpoints, tmp_path):
    unknown = _cli("generate", "--checkpoint", checkpoints / "lstm-tiny", "--example", "Nope",
                   "--out", tmp_path / "x.mid")
    assert unknown.returncode == 1
    # (Under CI=true pyfluidsynth announces itself on stderr first.)
    (message,) = [line for line in unknown.stderr.splitlines() if line.startswith("musicgen:")]
    assert message.startswith("musicgen: there is no example called Nope; choose one")
    assert "'" not in message
    hot = _cli("generate", "--checkpoint", checkpoints / "lstm-tiny", "--temperature", 7,
               "--out", tmp_path / "x.mid")
    assert hot.returncode == 1 and "Temperature must be between 0 and 2, not 7" in hot.stderr
    no_font = _cli("generate", "--checkpoint", checkpoints / "lstm-tiny", "--soundfont",
                   tmp_path / "none.sf2", "--out", tmp_path / "x.mid")
    assert no_font.returncode == 1 and "no soundfont file" in no_font.stderr
    assert not (tmp_path / "x.mid").exists()  # refused before sampling
    foreign = tmp_path / "plain.mid"
    foreign.write_bytes(midi_bytes([(60, 90, 0, 1)]))
    no_recipe = _cli("generate", "--recipe-from", foreign, "--out", tmp_path / "x.mid")
    assert no_recipe.returncode == 1 and "holds no musicgen recipe" in no_recipe.stderr
    for result in (unknown, hot, no_font, no_recipe):
        assert "Traceback" not in result.stderr


def test_generate_command_explains_a_corrupt_seed(checkpoints, tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x03\x01\xe0MTrk\x00\x00\x10\x00")
    result = _cli("generate", "--checkpoint", checkpoints / "lstm-tiny", "--seed-midi", bad,
                  "--out", tmp_path / "x.mid")
    assert result.returncode == 1
    assert "truncated" in result.stderr and "Traceback" not in result.stderr


def test_a_long_performance_is_continued_from_a_lively_part_not_its_final_chord():
    from musicgen.notes import Notes
    from musicgen.prompt import default_start

    rng = np.random.default_rng(1)
    onsets = np.sort(rng.uniform(0, 150, 1500))
    busy = Notes.from_arrays(rng.integers(40, 80, 1500), np.full(1500, 70), onsets, onsets + 0.3)
    final = Notes.from_arrays([36, 48, 55], [50] * 3, [150.0] * 3, [160.0] * 3)
    performance = Notes.concatenate(busy, final)
    start = default_start(performance, 10)
    assert 0.25 * 160 - 10 <= start <= 0.85 * 160 - 10
    assert len(performance.window(start, start + 10)) > 80  # about 10 notes/s, not a chord
    sketch = Notes.from_arrays([60, 62], [80, 80], [0.0, 20.0], [1.0, 21.0])
    assert default_start(sketch, 10) == pytest.approx(11.0)  # short: from its end


def test_wrong_command_line_input_never_ends_in_a_traceback(checkpoints, tmp_path):
    lstm = checkpoints / "lstm-tiny"
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "card.json").write_text("{broken")
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "card.json").write_text(json.dumps({"config": {}, "vocab": {}}))
    cases = [
        (("--checkpoint", lstm, "--out", tmp_path / "missing" / "a.mid"), "does not exist"),
        (("--checkpoint", lstm, "--out", tmp_path), "is a folder"),
        (("--checkpoint", REPO / "README.md", "--out", tmp_path / "a.mid"),
         "not a musicgen checkpoint"),
        (("--checkpoint", damaged, "--out", tmp_path / "a.mid"), "card .* is damaged"),
        (("--checkpoint", no_weights, "--out", tmp_path / "a.mid"), "no weights"),
        (("--checkpoint", lstm, "--seed", -5, "--out", tmp_path / "a.mid"),
         "Variation must be between 0 and 2147483647, not -5"),
        (("--checkpoint", lstm, "--example", "", "--out", tmp_path / "a.mid"),
         "no example called"),
    ]
    for args, words in cases:
        result = _cli("generate", *args)
        assert result.returncode == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        assert re.search(words, result.stderr), (words, result.stderr)
    assert not (tmp_path / "a.mid").exists()


def test_a_recipe_s_seed_music_cannot_be_recut_and_its_values_are_strict(lstm, tmp_path):
    prompt = prompt_from_example(example_names()[0], 3)
    (candidate,) = compose.compose(lstm, prompt, Settings(seconds=1, seed=2))
    path = write_candidate(candidate, tmp_path / "c.mid").midi
    recipe = read_recipe(path)
    with pytest.raises(RecipeError, match="cannot be lengthened or shortened"):
        replay(recipe, prompt_seconds=4)
    with pytest.raises(RecipeError, match="cannot be lengthened"):
        compose.request_from_recipe(path, prompt_start=0)
    for damage, words in (({"seed": None}, "lacks seed"),
                          ({"weights_sha256": 5}, "weights_sha256 is not"),
                          ({"version": 99}, "version 99"),
                          ({"version": "2"}, "version 2")):
        text = RECIPE_PREFIX + json.dumps({**candidate.recipe, **damage})
        with pytest.raises(RecipeError, match=words):
            read_recipe(_with_recipe(tmp_path, text))
    with pytest.raises(RecipeError, match="yes or no"):
        recipe_settings({**recipe, "include_prompt": "maybe"})
    assert recipe_settings({**recipe, "include_prompt": "false"}).include_prompt is False


def test_yes_no_settings_are_read_as_people_mean_them():
    assert Settings.from_user(include_prompt="false").include_prompt is False
    assert Settings.from_user(include_prompt="0").include_prompt is False
    assert Settings.from_user(include_prompt="Yes").include_prompt is True
    for bad in ("maybe", float("nan"), 2):
        with pytest.raises(SettingsError, match="yes or no"):
            Settings.from_user(include_prompt=bad)
    with pytest.raises(SettingsError, match="Top-k must be a number, not True"):
        Settings.from_user(top_k=True)
    with pytest.raises(SettingsError, match="must be a number, not an empty field"):
        Settings.from_user(seconds="")
    with pytest.raises(SettingsError, match="Excerpt length .seconds. must be a number, not abc"):
        choose_prompt("example", seconds="abc")


def test_every_command_prints_its_help(capsys):
    # Help texts come from musicgen.settings too, where a "%" would break argparse.
    import argparse

    from musicgen.cli import build_parser

    def commands(parser: argparse.ArgumentParser, path: list[str]):
        yield path
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from commands(sub, [*path, name])

    paths = list(commands(build_parser(), []))
    assert ["generate"] in paths and ["listening", "build"] in paths
    for path in paths:
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([*path, "--help"])
        assert exit_.value.code == 0, path
        assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("include_prompt", [True, False])
def test_the_music_so_far_is_final_before_the_time_it_gives(lstm, include_prompt, monkeypatch):
    from musicgen import batcher
    from musicgen.audio import SAMPLE_RATE, _collect_events
    from musicgen.sample import generate

    prompt = prompt_from_example(example_names()[0], 5.0)
    # Unpaired, from the untrained tiny model: keys struck again while they
    # sound, releases of silent keys, keys held past the decoder's cut.
    settings = Settings(seconds=30, seed=0, temperature=1.0, paired_notes=False,
                        keep_timing=False, release_held_keys=False,
                        include_prompt=include_prompt)
    monkeypatch.setattr(batcher, "TOKENS_POLL_S", 0.0005)  # as many snapshots as can be had
    snapshots = []
    (candidate,) = compose.compose(lstm, prompt, settings,
                                   on_music=lambda *snapshot: snapshots.append(snapshot))
    tokens = generate(lstm.model, prompt.tokens, seconds=30, temperature=1.0, seed=0).tokens[0]
    notes = compose.candidate_notes(prompt, tokens, include_prompt)[0]
    np.testing.assert_array_equal(notes.start, candidate.notes.start)  # its tokens, these
    np.testing.assert_array_equal(notes.pitch, candidate.notes.pitch)

    report = candidate.report
    assert report.restarted_notes and report.ignored_note_offs and report.cut_notes
    finished = _collect_events(candidate.midi)
    # Every prefix the sampler could hand over, and those compose did hand over.
    prefixes = [(0, *compose.music_so_far(prompt, tokens[:k], include_prompt))
                for k in range(1, len(tokens))]
    assert snapshots and {i for i, _, _ in snapshots} == {0}
    finals = []
    for _, midi, final in prefixes + snapshots:
        until = round(final * SAMPLE_RATE)
        so_far = [event for event in _collect_events(midi) if event[0] < until]
        assert so_far == [event for event in finished if event[0] < until]
        finals.append(final)
    assert finals[:len(prefixes)] == sorted(finals[:len(prefixes)])
    assert finals[len(prefixes) - 1] == pytest.approx(candidate.prompt_end + 30, abs=0.5)


def test_key_register_and_density_are_in_the_recipe_replay_and_change_the_music(tmp_path):
    controlled = compose.load_model(tiny_checkpoint(tmp_path / "lstm-controls",
                                                    "lstm-controls"))
    prompt = prompt_from_example(example_names()[0], 3)
    settings = Settings(seconds=6, seed=2, temperature=1.0)
    (own,) = compose.compose(controlled, prompt, settings)
    (minor,) = compose.compose(controlled, prompt, settings.but(key="F# minor", register="higher",
                                                                density="denser"))
    assert own.recipe["key"] == "as the seed" and minor.recipe["key"] == "F# minor"
    assert not _same_notes(own.notes, minor.notes)  # the model reads what it is asked
    again = read_recipe(_with_recipe(tmp_path, recipe_text(minor.recipe)))
    assert _same_notes(compose.compose(controlled, *replay(again))[0].notes, minor.notes)
    v7 = {k: v for k, v in own.recipe.items()
          if k not in ("key", "register", "density")} | {"version": 7}
    _, older = replay(read_recipe(_with_recipe(tmp_path, RECIPE_PREFIX + json.dumps(v7))))
    assert (older.key, older.register, older.density) == ("free", "free", "free")
    with pytest.raises(SettingsError, match="Density must be one of"):
        Settings.from_user(density="thicker")
    assert Settings.from_user(key=" d MINOR ").key == "D minor"
