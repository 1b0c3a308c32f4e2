"""Playing in the page, without a browser: the notes a page sends, the duet, the piano samples."""

import json

import numpy as np
import pretty_midi
import pytest
import soundfile
from conftest import tiny_checkpoint

from musicgen.compose import load_model
from musicgen.duet import MODEL, PLAYER, Duet, answer_duet, write_duet_midi
from musicgen.errors import MidiError, SettingsError
from musicgen.played import (
    MAX_PLAYED_NOTES,
    PLAYED_TEXT,
    notes_from_page,
    notes_to_rows,
    write_played_midi,
)
from musicgen.prompt import choose_prompt
from musicgen.settings import Settings

PHRASE = [[60, 80, 0.0, 0.4], [64, 70, 0.5, 0.9], [67, 90, 1.0, 1.6], [72, 100, 1.0, 1.6]]


def test_played_notes_come_back_as_sent_and_become_a_seed_marked_as_played(tmp_path):
    notes = notes_from_page(json.loads(json.dumps(PHRASE)))
    assert notes_to_rows(notes) == PHRASE
    path = write_played_midi(notes, tmp_path / "played.mid")
    midi = pretty_midi.PrettyMIDI(str(path))
    assert [t.text for t in midi.text_events] == [PLAYED_TEXT]
    prompt = choose_prompt("played", path=path, seconds=10)
    assert prompt.source == "played:played.mid" and len(prompt.notes) == 4
    assert notes_from_page([]).pitch.size == 0


@pytest.mark.parametrize(("rows", "saying"), [
    ({"notes": []}, "did not arrive as a list"),
    ([[60, 80, 0.0]], "note 1 from the page is not four numbers"),
    ([[60, 80, 0.0, "1"]], "not four numbers"),
    ([[60, True, 0.0, 1.0]], "not four numbers"),
    ([[60, 80, 0.0, float("nan")]], "not four numbers"),
    ([[60, 80, 0.0, 1.0], [128, 80, 1.0, 2.0]], "note 2 from the page has a pitch outside"),
    ([[60.5, 80, 0.0, 1.0]], "pitch that is not a whole number"),
    ([[60, 0, 0.0, 1.0]], "velocity outside 1-127"),
    ([[60, 80, -1.0, 1.0]], "starts before the playing began"),
    ([[60, 80, 1.0, 1.0]], "ends before it starts"),
    ([[60, 80, 0.0, 61.0]], "held longer than 60 s"),
    ([[60, 80, 599.5, 600.5]], "ends after 10 minutes"),
    ([[60, 80, 2.0, 3.0], [62, 80, 1.0, 1.5]], "note 2 from the page starts before the note"),
])
def test_what_a_page_should_not_send_is_refused_in_plain_words(rows, saying):
    with pytest.raises(MidiError, match=saying):
        notes_from_page(rows)


def test_a_page_cannot_send_more_notes_than_a_person_plays():
    rows = [[60, 80, i * 0.01, i * 0.01 + 0.005] for i in range(MAX_PLAYED_NOTES + 1)]
    with pytest.raises(MidiError, match="up to 12,000"):
        notes_from_page(rows)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(tiny_checkpoint(tmp_path_factory.mktemp("duet") / "lstm", "lstm"))


def test_a_duet_of_three_turns_keeps_both_parts_in_order_with_each_answer_recipe(model,
                                                                                 tmp_path):
    settings = Settings.from_user(seconds=2, seed=7)
    duet, clock = Duet(), 0.0
    for turn in range(3):
        phrase = notes_from_page([[p, v, s + clock, e + clock] for p, v, s, e in PHRASE])
        duet = duet.with_phrase(phrase)
        asked = float(phrase.end.max()) + 1.0
        answer = answer_duet(model, duet, settings)
        assert len(answer.notes) and answer.notes.start[0] == 0.0  # it sounds at once
        assert answer.recipe["prompt_source"] == f"played:duet turn {2 * turn + 1}"
        duet = duet.with_answer(answer, asked)
        clock = float(duet.notes.end.max()) + 0.5
    assert [turn.who for turn in duet.turns] == [PLAYER, MODEL] * 3
    starts = [turn.start for turn in duet.turns]
    assert starts == sorted(starts)
    midi = pretty_midi.PrettyMIDI(str(write_duet_midi(duet, tmp_path / "duet.mid")))
    assert [i.name for i in midi.instruments] == ["You", "musicgen"]
    assert len(midi.instruments[0].notes) == 3 * len(PHRASE)
    assert len(midi.instruments[1].notes) == sum(len(t.rows) for t in duet.turns
                                                 if t.who == MODEL)
    recipes = [t for t in midi.text_events if t.text.startswith("musicgen-recipe")]
    assert len(recipes) == 3
    model_starts = [t.start for t in duet.turns if t.who == MODEL]
    assert [round(t.time, 2) for t in recipes] == [round(s, 2) for s in model_starts]


def test_an_answer_moves_to_where_the_page_played_it_and_is_cut_where_it_was_stopped(model):
    settings = Settings.from_user(seconds=3, seed=1)
    duet = Duet().with_phrase(notes_from_page(PHRASE))
    answer = answer_duet(model, duet, settings)
    duet = duet.with_answer(answer, 2.6)
    moved = duet.heard_from(1, 2.9)
    assert moved.turns[1].start == pytest.approx(2.9)
    assert moved.heard_from(1, 2.9) == moved  # said again (every message says it): no drift
    with pytest.raises(MidiError, match="clock"):
        duet.heard_from(1, 1.0)  # before it was asked for
    with pytest.raises(MidiError, match="an answer this duet does not have"):
        duet.heard_from(0, 2.9)  # the player's turn
    cut = moved.stopped_at(1, 0.5)
    rows = np.array(cut.turns[-1].rows)
    assert len(rows) and (rows[:, 2] < 3.4).all() and (rows[:, 3] <= 3.4 + 1e-9).all()
    with pytest.raises(MidiError, match="only runs forward"):
        cut.with_phrase(notes_from_page([[60, 80, 0.2, 0.3]]))
    with pytest.raises(MidiError, match="play a phrase first"):
        Duet().with_phrase(notes_from_page([]))


def test_a_phrase_of_one_long_held_note_is_answered(model):
    duet = Duet().with_phrase(notes_from_page([[60, 80, 0.0, 15.0]]))
    answer = answer_duet(model, duet, Settings.from_user(seconds=2, seed=1))
    assert answer.recipe["prompt_seconds"] > 0


def test_numbers_past_a_float_s_range_are_refused_in_words():
    with pytest.raises(MidiError, match="not four numbers"):
        notes_from_page([[60, 80, 0, 10**400]])
    with pytest.raises(SettingsError, match="must be a number"):
        Settings.from_user(seconds=10**400)


def test_the_piano_samples_are_fluidsynth_notes_louder_for_the_louder_layer(tmp_path):
    from musicgen.audio import Renderer
    from musicgen.sample_bank import (
        BANK_PITCHES,
        BANK_VELOCITIES,
        SLOT_SECONDS,
        make_sample_bank,
    )

    renderer = Renderer()
    bank = make_sample_bank(renderer, tmp_path)
    if bank is None:  # only where FluidSynth cannot render
        probe = renderer.render(pretty_midi.PrettyMIDI())
        assert probe.engine != "fluidsynth"
        pytest.skip(f"no FluidSynth here: {probe.note}")
    manifest = json.loads(bank.manifest.read_text())
    assert manifest["pitches"] == list(BANK_PITCHES)
    assert max(np.diff(BANK_PITCHES)) <= 3  # no key more than a semitone from a sample
    audio, rate = soundfile.read(bank.audio)
    slots = len(BANK_PITCHES) * len(BANK_VELOCITIES)
    assert len(audio) / rate == pytest.approx(slots * SLOT_SECONDS, abs=SLOT_SECONDS)
    level = [float(np.abs(audio[int(i * SLOT_SECONDS * rate):
                                int((i + 0.5) * SLOT_SECONDS * rate)]).max())
             for i in range(slots)]
    assert min(level) > 0.01  # every slot holds a note
    soft, loud = np.array(level[0::2]), np.array(level[1::2])
    assert (loud > soft).mean() > 0.9
    made = bank.audio.stat().st_mtime_ns
    assert make_sample_bank(renderer, tmp_path) == bank
    assert bank.audio.stat().st_mtime_ns == made  # kept, not made again
