"""Musical controls (key, register, density) on hand-made music with known answers."""

import numpy as np
import pytest

from musicgen.controls import (
    CONTROL_FEATURES,
    KEY_SLICE,
    PARTS,
    PRESENT,
    control_features,
    detect_key,
    drop_parts,
    future_controls,
    key_profile,
    profile_correlation,
    target_controls,
)
from musicgen.errors import SettingsError
from musicgen.events import VOCAB, encode_notes
from musicgen.notes import Notes

C_MAJOR_SCALE = [60, 62, 64, 65, 67, 69, 71, 72]
A_HARMONIC_MINOR = [57, 59, 60, 62, 64, 65, 68, 69, 64, 57, 60, 64]


def tokens_of(pitches, seconds_apart: float = 0.5, velocity: int = 80) -> np.ndarray:
    """One note after another, each lasting until the next begins."""
    starts = np.arange(len(pitches)) * seconds_apart
    notes = Notes.from_arrays(pitches, np.full(len(pitches), velocity), starts,
                  starts + seconds_apart * 0.9)
    return encode_notes(notes)


def test_the_pitch_classes_of_a_scale_and_its_key():
    controls = control_features(tokens_of(C_MAJOR_SCALE))
    histogram = controls[KEY_SLICE]
    assert histogram.sum() == pytest.approx(1.0)
    assert histogram[0] == pytest.approx(2 / 8)  # C twice
    assert histogram[[1, 3, 6, 8, 10]].sum() == 0  # no black keys
    assert detect_key(histogram)[0] == "C major"
    assert detect_key(control_features(tokens_of(A_HARMONIC_MINOR))[KEY_SLICE])[0] == "A minor"
    assert detect_key(np.zeros(12)) == ("", 0.0)


def test_register_and_density_are_what_was_played():
    controls = control_features(tokens_of([76] * 10, seconds_apart=1.0))
    assert controls[12] == pytest.approx((76 - 64) / 12)  # mean pitch
    assert controls[13] == pytest.approx(0.0)  # no spread
    # 10 onsets over 9.9 s (the last note ends 0.9 s after it starts)
    assert controls[14] == pytest.approx(np.log1p(10 / 9.9) / 3, rel=1e-3)
    assert controls[list(PRESENT.values())].tolist() == [1, 1, 1]


def test_music_without_notes_has_every_part_absent():
    assert not control_features(np.array([VOCAB.bos, VOCAB.eos])).any()
    batch = control_features(np.stack([tokens_of(C_MAJOR_SCALE)[:10],
                                       np.full(10, VOCAB.pad)]))
    assert batch.shape == (2, CONTROL_FEATURES) and batch[0].any() and not batch[1].any()


def test_a_named_key_a_moved_register_and_density_and_free():
    seed = tokens_of(C_MAJOR_SCALE)
    own = control_features(seed)
    d_minor = target_controls(seed, key="D minor")
    assert detect_key(d_minor[KEY_SLICE])[0] == "D minor"
    assert d_minor[KEY_SLICE].sum() == pytest.approx(1.0)
    assert d_minor[KEY_SLICE][2] == d_minor[KEY_SLICE].max()  # D, the tonic, most often
    assert profile_correlation(d_minor[KEY_SLICE], key_profile("D minor")) > 0.9
    assert np.array_equal(d_minor[12:], own[12:])  # the rest as the seed
    higher = target_controls(seed, register="higher")
    assert (higher[12] - own[12]) * 12 == pytest.approx(7)
    denser = target_controls(seed, density="denser")
    rate = np.expm1(3 * np.array([own[14], denser[14]]))
    assert rate[1] / rate[0] == pytest.approx(1.6, rel=1e-4)
    free = target_controls(seed, key="free", density="free")
    assert not free[PARTS["key"]].any() and not free[PARTS["density"]].any()
    assert np.array_equal(free[PARTS["register"]], own[PARTS["register"]])


def test_a_silent_seed_keeps_only_what_was_picked():
    silence = np.array([VOCAB.bos])
    assert not target_controls(silence, register="higher", density="sparser").any()
    picked = target_controls(silence, key="E major")
    assert picked[PRESENT["key"]] == 1 and not picked[12:15].any()


def test_a_choice_that_is_not_one_is_refused_in_words():
    with pytest.raises(SettingsError, match="key must be one of"):
        target_controls(np.array([VOCAB.bos]), key="H major")
    with pytest.raises(SettingsError, match="density"):
        target_controls(np.array([VOCAB.bos]), density="thicker")


def test_training_leaves_parts_out_as_often_as_asked():
    controls = control_features(np.stack([tokens_of(C_MAJOR_SCALE)] * 2000))
    assert np.array_equal(drop_parts(controls, np.random.default_rng(0), 0.0), controls)
    assert not drop_parts(controls, np.random.default_rng(0), 1.0).any()
    dropped = drop_parts(controls, np.random.default_rng(0), 0.15)
    for part, flag in PRESENT.items():
        share = 1 - dropped[:, flag].mean()
        assert 0.12 < share < 0.18, part
        absent = dropped[:, flag] == 0
        assert not dropped[np.ix_(absent, PARTS[part])].any()  # a part goes whole


def test_each_token_is_told_what_starts_in_the_next_seconds():
    # C4 D4 E4, then two octaves up, one onset a second (each held 0.9 s).
    pitches = [60, 62, 64, 84, 86, 88]
    tokens = tokens_of(pitches, seconds_apart=1.0)
    controls = future_controls(tokens, seconds=2.0)
    on = VOCAB["note_on"]
    onsets = [i for i, t in enumerate(tokens) if on.offset <= t < on.stop]
    assert len(onsets) == len(pitches)
    # Before anything: the first two notes lie within 2 s (C4 at 0 s, D4 at 1 s).
    first = controls[0]
    assert first[KEY_SLICE][[0, 2]].tolist() == [0.5, 0.5]
    assert first[12] == pytest.approx((61 - 64) / 12) and first[13] == pytest.approx(1 / 12)
    # Right after the third note: the high notes are next, so the register is up.
    after_e4 = controls[onsets[2]]
    assert after_e4[12] == pytest.approx((84 - 64) / 12)  # C6 at 3 s; D6 at 4 s is 2 s on
    # A token sees only what starts after it: after the last note, a density of 0 and
    # nothing else (all free is what a person leaves free, not "silence ahead").
    assert controls[onsets[-1]:, PRESENT["density"]].all()
    assert not np.delete(controls[onsets[-1]:], PRESENT["density"], axis=1).any()
    # The density counts the time there is ahead (at least 1 s): 2 onsets in 2 s.
    assert first[14] == pytest.approx(np.log1p(1.0) / 3)
    # Windows in a batch are measured on their own.
    batch = future_controls(np.stack([tokens, tokens]), seconds=2.0)
    assert batch.shape == (2, len(tokens), CONTROL_FEATURES)
    assert np.array_equal(batch[1], controls)


def test_training_drops_a_part_for_a_whole_window():
    controls = future_controls(np.stack([tokens_of(C_MAJOR_SCALE)] * 400))
    dropped = drop_parts(controls, np.random.default_rng(0), 0.5)
    for part, flag in PRESENT.items():
        present = dropped[:, :, flag]
        # A window has a part everywhere it has notes ahead, or nowhere.
        rows = present.max(axis=1)
        assert 0.4 < 1 - rows.mean() < 0.6, part
        assert not dropped[rows == 0][..., PARTS[part]].any()
