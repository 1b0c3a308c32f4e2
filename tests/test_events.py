"""Performance events: the vocabulary table, encode/decode, and the MAESTRO round trip."""

import numpy as np
import pytest
from conftest import midi_bytes

from musicgen import VOCAB, read_midi
from musicgen.events import (
    HELD_FEATURES,
    Vocabulary,
    advance_held_ages,
    bin_to_velocity,
    decode_events,
    encode_notes,
    event_steps,
    held_after,
    held_ages,
    held_features,
    interleave_time_shifts,
    velocity_to_bin,
)
from musicgen.notes import Notes

ON, OFF = VOCAB["note_on"], VOCAB["note_off"]
SHIFT, VEL = VOCAB["time_shift"], VOCAB["velocity"]


def test_vocabulary_layout():
    assert [(r.name, r.size) for r in VOCAB.ranges] == [
        ("pad", 1), ("bos", 1), ("eos", 1), ("note_on", 128), ("note_off", 128),
        ("time_shift", 100), ("velocity", 32)]
    assert VOCAB.size == 391
    assert (VOCAB.pad, VOCAB.bos, VOCAB.eos) == (0, 1, 2)
    assert ON.token(60) == 63 and OFF.value(OFF.token(60)) == 60
    assert VOCAB.describe(SHIFT.token(100)) == "time_shift(100)"
    assert VOCAB.describe(VOCAB.eos) == "EOS"


def test_vocabulary_description_guards_checkpoints():
    VOCAB.check_compatible(VOCAB.to_dict())
    with pytest.raises(ValueError, match="vocabulary performance-v0, which differs"):
        VOCAB.check_compatible({**VOCAB.to_dict(), "version": "performance-v0"})
    assert Vocabulary().to_dict() == VOCAB.to_dict()


def test_velocity_bins_cover_midi_range():
    velocities = np.arange(1, 128)
    bins = velocity_to_bin(velocities)
    assert bins.min() == 1 and bins.max() == 32
    assert np.abs(bin_to_velocity(bins) - velocities).max() <= 2


def test_encode_chord_then_silence():
    notes = Notes.from_arrays([60, 64, 67], [80, 80, 80], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5])
    tokens = encode_notes(notes)
    expected = [VEL.token(velocity_to_bin(80)), ON.token(60), ON.token(64), ON.token(67),
                SHIFT.token(50), OFF.token(60), OFF.token(64), OFF.token(67)]
    assert tokens.tolist() == expected


def test_long_silence_is_full_shifts_then_remainder():
    notes = Notes.from_arrays([60, 62], [64, 64], [0.0, 2.53], [0.1, 2.6])
    tokens = encode_notes(notes).tolist()
    gap = tokens[tokens.index(OFF.token(60)) + 1:tokens.index(ON.token(62))]
    assert gap == [SHIFT.token(100), SHIFT.token(100), SHIFT.token(43)]


def test_velocity_token_only_when_bin_changes():
    notes = Notes.from_arrays([60, 62, 64], [81, 84, 20], [0.0, 0.1, 0.2], [0.05, 0.15, 0.25])
    tokens = encode_notes(notes)
    velocity_tokens = tokens[(tokens >= VEL.offset) & (tokens < VEL.stop)]
    assert len(velocity_tokens) == 2  # 81 and 84 share a bin


def _assert_same_notes(a: Notes, b: Notes, time_tolerance=0.01 + 1e-6):
    assert len(a) == len(b)
    order_a, order_b = np.lexsort((a.start, a.pitch)), np.lexsort((b.start, b.pitch))
    assert a.pitch[order_a].tolist() == b.pitch[order_b].tolist()
    assert np.abs(a.start[order_a] - b.start[order_b]).max() <= time_tolerance
    assert np.abs(a.end[order_a] - b.end[order_b]).max() <= time_tolerance
    assert np.abs(a.velocity[order_a].astype(int) - b.velocity[order_b]).max() < 4


def test_round_trip_of_synthetic_performance():
    notes = [(60, 30, 0.0, 0.5), (64, 90, 0.0, 0.5), (67, 127, 0.0, 0.5),  # chord
             (72, 1, 3.0, 3.004),  # shorter than one step
             (48, 70, 3.0, 11.0),  # long note, 8 s
             (60, 64, 3.2, 3.3), (60, 64, 3.3, 3.4), (60, 64, 3.402, 3.5)]  # re-strikes
    original = read_midi(midi_bytes(notes, pedal=[(5.0, 127), (6.0, 0)]))
    decoded, report = decode_events(encode_notes(original), max_note_seconds=None)
    _assert_same_notes(original, decoded)
    assert report.cut_notes == 0 and report.restarted_notes == 0


def test_long_note_is_cut_after_five_seconds_and_reported():
    tokens = encode_notes(read_midi(midi_bytes([(48, 70, 0.0, 8.0), (60, 70, 0.0, 1.0)])))
    notes, report = decode_events(tokens)
    assert sorted(np.round(notes.end, 2).tolist()) == [1.0, 5.0]
    assert report.cut_notes == 1
    assert report.ignored_note_offs == 1  # the late NOTE_OFF of the cut note


def test_decoder_repairs_odd_sequences():
    tokens = [OFF.token(50),                      # unmatched: ignored
              ON.token(60), SHIFT.token(10),
              ON.token(60), SHIFT.token(20),      # restarts 60
              ON.token(62), ON.token(62),         # restart in the same step: first is empty
              SHIFT.token(30)]                    # 60 and 62 still sounding: closed at end
    notes, report = decode_events(tokens)
    assert report.ignored_note_offs == 1
    assert report.restarted_notes == 2
    assert report.dropped_empty_notes == 1
    assert report.closed_at_end == 2
    assert sorted(zip(notes.pitch.tolist(), notes.start.tolist(), notes.end.tolist(),
                      strict=True)) == [
        (60, 0.0, 0.1), (60, 0.1, 0.6), (62, 0.3, 0.6)]


def test_decoder_stops_at_eos_and_ignores_bos_and_pad():
    tokens = [VOCAB.bos, ON.token(60), SHIFT.token(10), VOCAB.pad, OFF.token(60),
              VOCAB.eos, ON.token(70), SHIFT.token(10)]
    notes, report = decode_events(tokens)
    assert notes.pitch.tolist() == [60]
    assert report.stopped_at_eos


def test_decode_never_raises_on_random_valid_ids():
    rng = np.random.default_rng(0)
    for _ in range(50):
        notes, _ = decode_events(rng.integers(0, VOCAB.size, size=int(rng.integers(0, 400))))
        assert (notes.end > notes.start).all()
        assert (notes.end - notes.start <= 5.0 + 1e-9).all()


def test_decode_rejects_ids_outside_the_vocabulary():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        decode_events([VOCAB.size])


def test_event_steps_inverts_interleave():
    steps = np.array([0, 0, 5, 250, 250, 251])
    events = np.array([ON.token(60), VEL.token(3), ON.token(61), OFF.token(60), OFF.token(61),
                       ON.token(70)])
    tokens = interleave_time_shifts(steps, events)
    back_steps, back_events = event_steps(tokens)
    assert back_steps.tolist() == steps.tolist()
    assert back_events.tolist() == events.tolist()


def test_round_trip_on_every_maestro_file(maestro_dir):
    """Every note survives: same count after sustain, onsets/offsets within 10 ms,
    velocity within one bin (notes over 5 s need max_note_seconds=None)."""
    files = sorted(maestro_dir.glob("*/*.midi"))
    assert len(files) == 1276
    long_notes = cut = 0
    for path in files:
        original = read_midi(path)
        tokens = encode_notes(original)
        decoded, report = decode_events(tokens, max_note_seconds=None)
        _assert_same_notes(original, decoded)
        assert report == type(report)()  # nothing needed repair
        if path.parent.name == "2018":  # the default 5 s cut is reported, never silent
            long_notes += int(((decoded.end - decoded.start) > 5.0).sum())
            cut += decode_events(tokens)[1].cut_notes
    assert cut == long_notes > 0


def _held_by_hand(tokens) -> np.ndarray:
    """`held_ages` one token at a time, as the rule reads."""
    ages, rows = np.full(128, -1), []
    for token in tokens:
        if SHIFT.offset <= token < SHIFT.stop:
            ages = np.where(ages >= 0, ages + SHIFT.value(token), -1)
        elif ON.offset <= token < ON.stop:
            ages[ON.value(token)] = 0
        elif OFF.offset <= token < OFF.stop:
            ages[OFF.value(token)] = -1
        rows.append(ages.copy())
    return np.array(rows)


def test_held_ages_follow_note_ons_offs_and_time_shifts():
    notes = Notes.from_arrays([60, 64, 60], [80, 80, 80], [0.0, 0.5, 2.0], [1.0, 7.0, 2.5])
    tokens = encode_notes(notes)
    ages = held_ages(tokens)
    assert np.array_equal(ages, _held_by_hand(tokens))
    # Nothing is cut at the decoder's 5 s: the 6.5 s note is still held before its end.
    assert ages[-2, 64] == 650 and ages[-1, 64] == -1
    assert ages[np.flatnonzero(tokens == ON.token(60))[1], 60] == 0  # a new note starts at 0


def test_held_ages_carry_across_calls_and_rows():
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, VOCAB.size, 600)  # any order: offs of silent pitches, re-strikes
    whole = _held_by_hand(tokens)
    assert np.array_equal(held_ages(tokens), whole)
    assert np.array_equal(held_after(tokens[:250]), whole[249])
    assert np.array_equal(held_after(tokens[:0]), np.full(128, -1))
    rows = held_ages(np.stack([tokens[250:400], tokens[400:550]]),
                     before=np.stack([whole[249], whole[399]]))
    assert np.array_equal(rows[0], whole[250:400]) and np.array_equal(rows[1], whole[400:550])


def test_held_ages_advance_one_token_per_row_as_the_whole_rule_does():
    rng = np.random.default_rng(1)
    tokens = rng.integers(3, VOCAB.size, (2, 400))  # two rows, in any order
    whole = np.stack([_held_by_hand(row) for row in tokens])
    ages = np.full((2, 128), -1)
    for t in range(tokens.shape[1]):
        ages = advance_held_ages(ages, tokens[:, t])
        assert np.array_equal(ages, whole[:, t]), t


def test_held_features_say_which_pitches_sound_and_how_long_up_to_the_cap():
    ages = np.full(128, -1)
    ages[[60, 62, 64]] = [0, 200, 10_000]
    features = held_features(ages)
    assert features.shape == (HELD_FEATURES,) and features.dtype == np.float32
    assert set(np.flatnonzero(features[:128])) == {60, 62, 64}
    assert features[128 + 60] == 0.0 and features[128 + 62] == 0.5 and features[128 + 64] == 1.0
    assert features[128:].sum() == 1.5
