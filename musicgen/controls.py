"""What a continuation should keep: its key, register and density, as a model's input.

Performance RNN's answer to music that wanders: tell the model, at every
step, the pitch-class histogram and note density its music should have. In
training, each token is told those of the notes that start in the next
`FUTURE_SECONDS` after it (`future_controls`): what is coming, which its past
cannot tell it, so the model learns to follow them. At sampling time every
step is told the seed's (`target_controls`), or what a person asked for ("D
minor", "higher", "sparser"): the next 10 s should sound like this, all the
way. Each of the three parts can be absent ("free"): training leaves each out
of some windows, so the model learns to play without it.

Why not one summary of a whole training window (tried first): the window's
past already tells the model its key and density, so it learned to ignore
them; 500 steps of fine-tuning gained 0.0004 nats/event on validation from
them (2.2370 given against 2.2373 free, 16 windows, 2026-12-07).

    controls = future_controls(tokens)              # float32 [..., T, CONTROL_FEATURES]
    controls = target_controls(seed_tokens, key="D minor", density="denser")

The layout (one vector per token in training, per sequence when sampling):
    0..11   pitch classes: the share of note onsets on each (C first); sums to 1
    12, 13  register: (mean pitch - 64) / 12 and the pitches' spread / 12
    14      density: log(1 + onsets per second) / 3
    15..17  1 where key, register and density are given, 0 where absent (free)

Needs numpy only, so training machines and the app both use it.
"""

from __future__ import annotations

import numpy as np

from musicgen.errors import SettingsError
from musicgen.events import STEPS_PER_SECOND, VOCAB, Vocabulary, note_events

KEY_SLICE, REGISTER_SLICE, DENSITY_SLICE = slice(0, 12), slice(12, 14), slice(14, 15)
PRESENT = {"key": 15, "register": 16, "density": 17}
CONTROL_FEATURES = 18
# The parts and the columns each one fills (its flag included).
PARTS = {"key": [*range(12), 15], "register": [12, 13, 16], "density": [14, 17]}
FUTURE_SECONDS = 10.0  # how far ahead a training token's controls look: about a seed's length

PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
# Krumhansl & Kessler's (1982) key profiles, C major and C minor: how well each
# pitch class fits the key by listeners' ratings. Normalised to sum 1, they
# stand where a histogram of onsets in that key would.
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
# What 10 s of MAESTRO in a key looks like as onsets: 6,113 stretches of 400 tokens
# from the train split (one every 4,000 tokens), keyed by `detect_key`, turned to C
# and averaged (2026-12-07; 3,366 major, 2,747 minor). Sharper than the listeners'
# profiles above (tonic 0.23 against 0.14, the other keys' notes 0.02 against
# 0.05): a named key asks for music as the model has seen it, not a flatter input.
_MAESTRO_MAJOR = np.array([0.2331, 0.0206, 0.0909, 0.0203, 0.1262, 0.1058, 0.0249, 0.1664,
                           0.0287, 0.0839, 0.0416, 0.0575])
_MAESTRO_MINOR = np.array([0.2091, 0.0297, 0.0862, 0.1499, 0.0235, 0.0913, 0.0325, 0.1492,
                           0.0851, 0.0364, 0.0567, 0.0503])
KEYS = tuple(f"{name} {mode}" for mode in ("major", "minor") for name in PITCH_NAMES)
KEY_CHOICES = ("as the seed", "free", *KEYS)
REGISTER_CHOICES = ("as the seed", "free", "lower", "higher")
DENSITY_CHOICES = ("as the seed", "free", "sparser", "denser")
# How far "lower"/"higher" move the register, and "sparser"/"denser" the density.
REGISTER_SHIFT_SEMITONES = 7
DENSITY_FACTOR = 1.6


def key_profile(key: str) -> np.ndarray:
    """A named key's pitch-class profile (Krumhansl-Kessler), float [12] summing to 1.

    Raises:
        SettingsError: A key not in `KEYS`.
    """
    if key not in KEYS:
        raise SettingsError(f"there is no key called {key!r}; choose one of "
                            f"{', '.join(KEY_CHOICES)}")
    tonic, mode = key.split()
    profile = np.roll(_MAJOR if mode == "major" else _MINOR, PITCH_NAMES.index(tonic))
    return profile / profile.sum()


def key_histogram(key: str) -> np.ndarray:
    """The onsets' pitch classes of 10 s of MAESTRO in a named key, float [12] summing to 1:
    what `target_controls` asks for.

    Raises:
        SettingsError: A key not in `KEYS`.
    """
    key_profile(key)  # the same check, the same message
    tonic, mode = key.split()
    histogram = np.roll(_MAESTRO_MAJOR if mode == "major" else _MAESTRO_MINOR,
                        PITCH_NAMES.index(tonic))
    return histogram / histogram.sum()


def detect_key(histogram: np.ndarray) -> tuple[str, float]:
    """The Krumhansl-Schmuckler key of a pitch-class histogram, and its correlation.

    Returns:
        (a name from `KEYS`, the Pearson correlation of the histogram with that
        key's profile); ("", 0.0) for a histogram without notes.
    """
    histogram = np.asarray(histogram, np.float64)
    if histogram.sum() <= 0:
        return "", 0.0
    fits = [profile_correlation(histogram, key_profile(key)) for key in KEYS]
    best = int(np.argmax(fits))
    return KEYS[best], float(fits[best])


def profile_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two pitch-class profiles (0 where either is flat)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / norm) if norm > 0 else 0.0


def control_features(tokens: np.ndarray, vocab: Vocabulary = VOCAB) -> np.ndarray:
    """The controls that describe some music: float32 [..., CONTROL_FEATURES].

    Args:
        tokens: Event tokens [T] or a batch [B, T] (PAD, BOS and EOS are ignored).

    Returns:
        Every part present, except where the music has no note onsets (all absent).
    """
    tokens = np.asarray(tokens, np.int64)
    if tokens.ndim == 2:
        return np.stack([control_features(row, vocab) for row in tokens])
    elapsed, is_on, pitch = note_events(tokens, vocab)
    onsets = pitch[is_on]
    controls = np.zeros(CONTROL_FEATURES, np.float32)
    if not len(onsets):
        return controls
    controls[KEY_SLICE] = np.bincount(onsets % 12, minlength=12) / len(onsets)
    controls[REGISTER_SLICE] = ((onsets.mean() - 64) / 12, onsets.std() / 12)
    seconds = max(1.0, float(elapsed[-1]) / STEPS_PER_SECOND)
    controls[DENSITY_SLICE] = np.log1p(len(onsets) / seconds) / 3
    controls[list(PRESENT.values())] = 1
    return controls


def future_controls(tokens: np.ndarray, seconds: float = FUTURE_SECONDS,
                    vocab: Vocabulary = VOCAB) -> np.ndarray:
    """At each token, the controls of the notes that start after it, up to `seconds` later.

    Args:
        tokens: Event tokens [T] or a batch [B, T].
        seconds: How far ahead to look. Where the tokens end sooner, the
            density counts the time there is (at least a second).

    Returns:
        float32 [..., T, CONTROL_FEATURES]. At a token with no onset ahead of it in
        reach, the density is given as 0 and the key and register are absent: "all
        free" is kept for what a person leaves free, not learned as "silence ahead".
    """
    tokens = np.asarray(tokens, np.int64)
    if tokens.ndim == 2:
        return np.stack([future_controls(row, seconds, vocab) for row in tokens])
    elapsed, is_on, pitch = note_events(tokens, vocab)
    onset_pitch = np.where(is_on, pitch, 0)

    def after(values: np.ndarray) -> np.ndarray:  # sums over tokens (t, end of reach)
        total = np.concatenate((np.zeros((1, *values.shape[1:])), np.cumsum(values, axis=0)))
        return total[reach] - total[np.arange(1, len(tokens) + 1)]

    steps = round(seconds * STEPS_PER_SECOND)
    reach = np.searchsorted(elapsed, elapsed + steps, side="left")  # first token out of reach
    count = after(is_on.astype(np.float64))
    classes = np.zeros((len(tokens), 12))
    classes[np.arange(len(tokens))[is_on], onset_pitch[is_on] % 12] = 1
    class_counts = after(classes)
    pitch_sum = after(onset_pitch.astype(np.float64))
    square_sum = after(onset_pitch.astype(np.float64) ** 2)
    controls = np.zeros((len(tokens), CONTROL_FEATURES), np.float32)
    some = count > 0
    n = count[some]
    mean = pitch_sum[some] / n
    controls[some, KEY_SLICE] = class_counts[some] / n[:, None]
    controls[some, 12] = (mean - 64) / 12
    controls[some, 13] = np.sqrt(np.maximum(square_sum[some] / n - mean ** 2, 0)) / 12
    ahead = np.clip((elapsed[-1] - elapsed[some]) / STEPS_PER_SECOND, 1.0, seconds)
    controls[some, 14] = np.log1p(n / ahead) / 3
    controls[np.ix_(some, list(PRESENT.values()))] = 1
    controls[~some, PRESENT["density"]] = 1  # nothing ahead: a density, of 0
    return controls


def without(controls: np.ndarray, part: str) -> np.ndarray:
    """`controls` with one part absent (its columns and its flag zero)."""
    controls = np.array(controls, np.float32)
    controls[..., PARTS[part]] = 0
    return controls


def drop_parts(controls: np.ndarray, rng: np.random.Generator, share: float) -> np.ndarray:
    """Each part of each row ([B, C], or [B, T, C] all along) absent with probability
    `share` (training)."""
    controls = np.array(controls, np.float32)
    for columns in PARTS.values():
        gone = rng.random(len(controls)) < share
        row = controls[gone]
        row[..., columns] = 0
        controls[gone] = row
    return controls


def target_controls(seed_tokens: np.ndarray, key: str = "as the seed",
                    register: str = "as the seed", density: str = "as the seed",
                    vocab: Vocabulary = VOCAB) -> np.ndarray:
    """What a continuation should keep: the seed's own profile, changed as asked.

    Args:
        seed_tokens: The seed's event tokens (may hold no notes: a silent seed).
        key: "as the seed", "free", or a name from `KEYS`.
        register: "as the seed", "free", "lower" or "higher".
        density: "as the seed", "free", "sparser" or "denser".

    Returns:
        float32 [CONTROL_FEATURES]. A part "as the seed" (or moved from it) is
        absent when the seed has no notes to take it from.

    Raises:
        SettingsError: A choice that is not one of the above.
    """
    for name, value, choices in (("key", key, KEY_CHOICES),
                                 ("register", register, REGISTER_CHOICES),
                                 ("density", density, DENSITY_CHOICES)):
        if value not in choices:
            raise SettingsError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    controls = control_features(seed_tokens, vocab)
    if key in KEYS:
        controls[KEY_SLICE] = key_histogram(key)
        controls[PRESENT["key"]] = 1
    if controls[PRESENT["register"]]:
        shift = {"lower": -1, "higher": 1}.get(register, 0) * REGISTER_SHIFT_SEMITONES
        controls[12] += shift / 12
    if controls[PRESENT["density"]]:
        rate = np.expm1(controls[14] * 3)
        rate *= {"sparser": 1 / DENSITY_FACTOR, "denser": DENSITY_FACTOR}.get(density, 1.0)
        controls[14] = np.log1p(rate) / 3
    for part, choice in (("key", key), ("register", register), ("density", density)):
        if choice == "free":
            controls = without(controls, part)
    return controls.astype(np.float32)
