"""Training windows and the Music Transformer augmentations."""

import numpy as np
import pytest

from musicgen.data import WindowSampler, safe_transpositions, time_stretch, transpose
from musicgen.events import VOCAB, event_steps, interleave_time_shifts

ON, OFF, SHIFT = VOCAB["note_on"], VOCAB["note_off"], VOCAB["time_shift"]


def _piece(length_events=300, seed=0):
    rng = np.random.default_rng(seed)
    steps = np.cumsum(rng.integers(0, 40, length_events))
    pitches = rng.integers(30, 90, length_events)
    events = np.where(rng.random(length_events) < 0.5, ON.token(pitches), OFF.token(pitches))
    return np.concatenate(([VOCAB.bos], interleave_time_shifts(steps, events), [VOCAB.eos]))


def test_transpose_moves_only_notes():
    tokens = np.array([VOCAB.bos, ON.token(60), SHIFT.token(5), OFF.token(60)])
    assert transpose(tokens, 3).tolist() == [VOCAB.bos, ON.token(63), SHIFT.token(5),
                                             OFF.token(63)]


def test_safe_transpositions_keep_pitches_in_range():
    tokens = np.array([ON.token(1), ON.token(126)])
    assert safe_transpositions(tokens) == (-1, 1)
    assert safe_transpositions(np.array([ON.token(60)])) == (-3, 3)


def test_time_stretch_scales_event_times():
    tokens = _piece()
    steps, events = event_steps(tokens)
    stretched_steps, stretched_events = event_steps(time_stretch(tokens, 1.05))
    assert stretched_events.tolist() == events.tolist()
    assert np.abs(stretched_steps - steps * 1.05).max() <= 0.5
    assert np.array_equal(time_stretch(tokens, 1.0), tokens)


def test_windows_without_augmentation_are_slices():
    piece = _piece()
    sampler = WindowSampler([piece], length=64, augment=False)
    window = sampler.window(np.random.default_rng(1))
    assert len(window) == 65
    text, pattern = piece.tobytes(), window.astype(piece.dtype).tobytes()
    assert pattern in text


def test_augmented_windows_are_valid_and_full_length():
    sampler = WindowSampler([_piece(seed=s) for s in range(3)], length=128, augment=True)
    batch = sampler.batch(np.random.default_rng(2), 16)
    assert batch.shape == (16, 129)
    assert batch.min() >= 0 and batch.max() < VOCAB.size
    assert not (batch == VOCAB.pad).any()


def test_short_pieces_are_padded():
    sampler = WindowSampler([np.array([VOCAB.bos, ON.token(60), VOCAB.eos])], length=8,
                            augment=False)
    window = sampler.window(np.random.default_rng(0))
    assert window.tolist() == [VOCAB.bos, ON.token(60), VOCAB.eos] + [VOCAB.pad] * 6


def test_empty_split_is_an_error():
    with pytest.raises(ValueError, match="no pieces"):
        WindowSampler([], length=8)


def test_held_batches_are_the_same_windows_and_know_what_sounds_as_they_begin():
    from musicgen.events import held_ages

    pieces = [_piece(300, seed) for seed in range(3)]
    plain = WindowSampler(pieces, length=64, augment=False)
    windows, held = plain.held_batch(np.random.default_rng(5), 6)
    assert np.array_equal(windows, plain.batch(np.random.default_rng(5), 6))
    for window, before in zip(windows, held, strict=True):
        piece = next(p for p in pieces if any(np.array_equal(window, p[s:s + 65])
                                               for s in range(len(p) - 64)))
        start = next(s for s in range(len(piece) - 64)
                     if np.array_equal(window, piece[s:s + 65]))
        expected = held_ages(piece[:start])[-1] if start else np.full(128, -1)
        assert np.array_equal(before, expected)
    assert (held >= 0).any()  # windows that begin with notes sounding: the test means something
    # Augmented, the held notes move and stretch with their window.
    augmented = WindowSampler(pieces, length=64, transpose_range=(2, 2),
                              stretch_range=(0.5, 0.5))
    for seed in range(6):
        _, before = plain.held_batch(np.random.default_rng(seed), 1)
        windows, moved = augmented.held_batch(np.random.default_rng(seed), 1)
        assert np.array_equal(windows, augmented.batch(np.random.default_rng(seed), 1))
        expected = np.full(128, -1)
        expected[2:] = np.where(before[0, :-2] >= 0, np.rint(before[0, :-2] * 0.5), -1)
        assert np.array_equal(moved[0], expected)


def test_future_batches_bring_the_music_after_each_window_augmented_with_it():
    piece = _piece(length_events=600)
    plain = WindowSampler([piece], length=64, augment=False)
    windows, held, following = plain.future_batch(np.random.default_rng(3), 4, ahead=32)
    assert following.shape == (4, 32)
    same, same_held = plain.held_batch(np.random.default_rng(3), 4)
    assert np.array_equal(windows, same) and np.array_equal(held, same_held)
    for window, after in zip(windows, following, strict=True):  # what follows in the piece
        joined = np.concatenate((window, after)).astype(piece.dtype).tobytes()
        assert joined in piece.tobytes()
    augmented = WindowSampler([piece], length=64, augment=True)
    windows, _, following = augmented.future_batch(np.random.default_rng(4), 8, ahead=32)
    assert windows.shape == (8, 65) and not (following == VOCAB.pad).all()
    def intervals(tokens):  # between successive note events: the same in any transposition
        pitch = np.where(tokens >= OFF.offset, tokens - OFF.offset, tokens - ON.offset)
        notes = (tokens >= ON.offset) & (tokens < OFF.stop)
        return np.diff(pitch[notes]).astype(np.int16).tobytes()

    for window, after in zip(windows, following, strict=True):
        # One transposition for both: the notes after the window go on from it as in the piece.
        assert intervals(np.concatenate((window, after))) in intervals(piece)
    end = WindowSampler([piece[:70]], length=64, augment=False)  # the piece ends first
    _, _, following = end.future_batch(np.random.default_rng(0), 1, ahead=32)
    assert (following[0, -20:] == VOCAB.pad).all()
