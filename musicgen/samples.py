"""Does generated music play like real pianists do? Features, set comparisons, copying.

Three steps, each usable on its own:

    features = clip_features(continuation, prompt.notes, seconds=30)   # one clip
    comparison = compare_sets(real, generated)                          # two sets of clips
    copying = TrainIntervals.from_pieces(train_pieces).copying(clips)   # against the train split

Features are measured on the continuation only, on notes decoded from tokens
the same way for real and generated music (sustain was applied when the MIDI
was read, and the decoder's 5 s cut of held notes applies to both). There are
no bar or beat features: performance MIDI has no reliable grid.

Set comparison follows MGEval (Yang & Lerch 2018) with its known flaws fixed:
every density of one feature is estimated on one common grid (MGEval put each
on its own, so its KL divergences compared different supports), a set whose
values do not vary gets a narrow kernel instead of a failed KDE, and the
inter-set distances of clips that share a prompt are left out just as the
intra-set distances leave out a clip against itself, so a set compared with
itself overlaps exactly 1 (MGEval's stayed below 1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from musicgen.controls import profile_correlation
from musicgen.events import VOCAB
from musicgen.notes import Notes

# --------------------------------------------------------------------------- features

FEATURES = {  # name -> what it measures (unit); the order of every feature vector
    "notes_per_second": "note onsets per second",
    "polyphony": "mean notes sounding while any sounds",
    "silence_fraction": "share of the clip with nothing sounding",
    "longest_silence": "longest stretch with nothing sounding (s)",
    "pitch_mean": "mean MIDI pitch",
    "pitch_std": "standard deviation of MIDI pitch",
    "pitch_range": "highest minus lowest pitch (semitones)",
    "pitch_entropy": "entropy of the pitch histogram (bits)",
    "pitch_class_entropy": "entropy of the pitch-class histogram (bits)",
    "scale_consistency": "share of notes in the best-fitting major/minor scale",
    "mean_abs_interval": "mean absolute interval between successive notes (semitones)",
    "ioi_median": "median inter-onset interval between chords (s)",
    "ioi_log_std": "spread of inter-onset intervals (std of log2 s)",
    "duration_median": "median note duration (s)",
    "long_note_share": "share of notes held 4 s or longer (stuck notes)",
    "velocity_mean": "mean MIDI velocity",
    "velocity_std": "standard deviation of MIDI velocity",
    "key_agreement_start": "pitch-class profile correlation, prompt vs first 10 s",
    "key_agreement_end": "pitch-class profile correlation, prompt vs last 10 s",
    "distinct_2": "distinct interval 2-grams / all interval 2-grams",
    "distinct_4": "distinct interval 4-grams / all interval 4-grams",
    "longest_repeat": "longest interval sequence played twice (intervals)",
    # Over time: each third of the continuation (1 first, 3 last).
    **{f"key_third_{k}": f"pitch-class profile correlation, prompt vs third {k}"
       for k in (1, 2, 3)},
    **{f"pitch_mean_third_{k}": f"mean MIDI pitch in third {k}" for k in (1, 2, 3)},
    **{f"pitch_range_third_{k}": f"pitch range in third {k} (semitones)" for k in (1, 2, 3)},
    **{f"polyphony_third_{k}": f"mean notes sounding while any sounds, third {k}"
       for k in (1, 2, 3)},
    # What people hear come back.
    "rhythm_distinct_4": "distinct 4-grams of successive inter-onset ratios / all of them",
    "restated_share": "share of interval 5-grams heard before (in the prompt or earlier)",
    "bar_similarity": "mean best cosine match of each 2 s stretch to an earlier one",
}
# The Fréchet distance is taken over the features every report before the
# over-time ones had, so that its figures stay comparable between reports;
# the over-time features are compared one by one (d, overlap).
FRECHET_FEATURES = (
    "notes_per_second", "polyphony", "silence_fraction", "longest_silence", "pitch_mean",
    "pitch_std", "pitch_range", "pitch_entropy", "pitch_class_entropy", "scale_consistency",
    "mean_abs_interval", "ioi_median", "ioi_log_std", "duration_median", "long_note_share",
    "velocity_mean", "velocity_std", "key_agreement_start", "key_agreement_end", "distinct_2",
    "distinct_4", "longest_repeat")
STEP_SECONDS = 0.01  # the events' time grid
CHORD_SECONDS = 0.05  # onsets this close are one chord for inter-onset intervals
LONG_NOTE_SECONDS = 4.0  # the decoder cuts held notes at 5 s, so these are (nearly) stuck
KEY_SECONDS = 10.0  # window at each end of a continuation for key agreement
DENSITY_BIN_SECONDS = 2.0  # resolution of the density-over-time curve
TIMELINE_BIN_SECONDS = 5.0  # resolution of the key, register and polyphony curves
RESTATED_GRAM = 5  # intervals: 6 notes in a row, heard before
BAR_SECONDS = 2.0  # a stretch about a bar long: performance MIDI has no bar lines
MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
MINOR = np.array([0, 2, 3, 5, 7, 8, 10])


@dataclass(frozen=True)
class ClipFeatures:
    """What one continuation is measured by.

    Attributes:
        values: float64 [len(FEATURES)], the scalar features in `FEATURES` order.
        pitch_classes: float64 [12], share of notes per pitch class (C first).
        transitions: float64 [12, 12], share of successive-note pairs per
            (pitch class, next pitch class).
        density: float64 [bins], notes per second in each `DENSITY_BIN_SECONDS` bin.
        notes: How many notes the clip has.
        timeline: float64 [3, bins]: key agreement with the prompt, mean pitch
            and polyphony in each `TIMELINE_BIN_SECONDS` bin (NaN where a bin
            has no notes).
    """

    values: np.ndarray
    pitch_classes: np.ndarray
    transitions: np.ndarray
    density: np.ndarray
    notes: int
    timeline: np.ndarray | None = None

    def __getitem__(self, name: str) -> float:
        return float(self.values[list(FEATURES).index(name)])


def clip_features(notes: Notes, prompt: Notes, seconds: float) -> ClipFeatures:
    """Measure one continuation.

    A clip without notes scores 0 on every feature that needs notes, so a set
    with silent clips is visibly far from real playing instead of dropping them.

    Args:
        notes: The continuation alone, starting at 0 s.
        prompt: The music it continues (for key agreement).
        seconds: The clip's length: notes past it are ignored, offsets cut there.

    Returns:
        Its features.
    """
    notes = notes.window(0.0, seconds)
    pitch = notes.pitch.astype(np.int64)
    intervals = np.diff(pitch)
    sounding = _sounding(notes, seconds)
    values = {
        "notes_per_second": len(notes) / seconds,
        "polyphony": _polyphony(sounding),
        "silence_fraction": float((sounding == 0).mean()),
        "longest_silence": _longest_run(sounding == 0) * STEP_SECONDS,
        "pitch_mean": float(pitch.mean()) if len(pitch) else 0.0,
        "pitch_std": float(pitch.std()) if len(pitch) else 0.0,
        "pitch_range": float(np.ptp(pitch)) if len(pitch) else 0.0,
        "pitch_entropy": entropy_bits(np.bincount(pitch, minlength=128)),
        "pitch_class_entropy": entropy_bits(np.bincount(pitch % 12, minlength=12)),
        "scale_consistency": scale_consistency(pitch),
        "mean_abs_interval": float(np.abs(intervals).mean()) if len(intervals) else 0.0,
        **_ioi_features(notes.start),
        "duration_median": float(np.median(notes.end - notes.start)) if len(notes) else 0.0,
        "long_note_share": (float(((notes.end - notes.start) >= LONG_NOTE_SECONDS).mean())
                            if len(notes) else 0.0),
        "velocity_mean": float(notes.velocity.mean()) if len(notes) else 0.0,
        "velocity_std": float(notes.velocity.std()) if len(notes) else 0.0,
        "key_agreement_start": key_agreement(prompt, notes.window(0.0, KEY_SECONDS)),
        "key_agreement_end": key_agreement(prompt, notes.window(max(0.0, seconds - KEY_SECONDS))),
        "distinct_2": distinct_n(intervals, 2),
        "distinct_4": distinct_n(intervals, 4),
        "longest_repeat": float(longest_repeat(intervals)),
        "rhythm_distinct_4": distinct_n(rhythm_sequence(notes.start), 4),
        "restated_share": restated_share(intervals, interval_sequence(prompt)),
        "bar_similarity": bar_similarity(notes, seconds),
    }
    for k, (begin, end) in enumerate(_edges(seconds, 3), start=1):
        part = notes.window(begin, end)
        values[f"key_third_{k}"] = key_agreement(prompt, part)
        values[f"pitch_mean_third_{k}"] = float(part.pitch.mean()) if len(part) else 0.0
        values[f"pitch_range_third_{k}"] = float(np.ptp(part.pitch)) if len(part) else 0.0
        values[f"polyphony_third_{k}"] = _polyphony(sounding[round(begin / STEP_SECONDS):
                                                             round(end / STEP_SECONDS)])
    bins = np.arange(0.0, seconds + 1e-9, DENSITY_BIN_SECONDS)
    if bins[-1] < seconds:
        bins = np.append(bins, seconds)
    density = np.histogram(notes.start, bins)[0] / np.diff(bins)
    return ClipFeatures(np.array([values[name] for name in FEATURES]),
                        _shares(np.bincount(pitch % 12, minlength=12)),
                        _transitions(pitch), density, len(notes),
                        _timeline(notes, prompt, sounding, seconds))


def _edges(seconds: float, parts: int) -> list[tuple[float, float]]:
    bounds = np.linspace(0.0, seconds, parts + 1)
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _polyphony(sounding: np.ndarray) -> float:
    return float(sounding[sounding > 0].mean()) if sounding.any() else 0.0


def _timeline(notes: Notes, prompt: Notes, sounding: np.ndarray, seconds: float) -> np.ndarray:
    """Key agreement, mean pitch and polyphony per `TIMELINE_BIN_SECONDS` (NaN: no notes)."""
    bins = max(1, int(np.ceil(seconds / TIMELINE_BIN_SECONDS - 1e-9)))
    timeline = np.full((3, bins), np.nan)
    for k in range(bins):
        begin, end = k * TIMELINE_BIN_SECONDS, min(seconds, (k + 1) * TIMELINE_BIN_SECONDS)
        part = notes.window(begin, end)
        if len(part):
            timeline[:, k] = (key_agreement(prompt, part), part.pitch.mean(), _polyphony(
                sounding[round(begin / STEP_SECONDS):round(end / STEP_SECONDS)]))
    return timeline


def rhythm_sequence(onsets: np.ndarray) -> np.ndarray:
    """Successive inter-onset ratios of chords, in half-octave steps of log2 (-4..4).

    A rhythm's shape whatever its tempo: equal notes give 0s, a long note then
    a short one a negative step. Chords as in `_ioi_features`.
    """
    ioi = np.maximum(np.diff(_chord_onsets(onsets)), STEP_SECONDS)
    if len(ioi) < 2:
        return np.zeros(0, np.int64)
    return np.clip(np.round(2 * np.log2(ioi[1:] / ioi[:-1])), -4, 4).astype(np.int64)


def restated_share(intervals: np.ndarray, before: np.ndarray, n: int = RESTATED_GRAM) -> float:
    """Share of a continuation's interval n-grams that were heard before it reached them.

    Before means in the prompt, or earlier in the continuation without
    overlapping the gram itself: a figure that comes back, not one that goes on.

    Args:
        intervals: The continuation's pitch intervals.
        before: The prompt's pitch intervals.
        n: Gram length.

    Returns:
        The share in [0, 1]; 0 when the continuation has no n-gram.
    """
    intervals, before = np.asarray(intervals), np.asarray(before)
    if len(intervals) < n:
        return 0.0
    heard = ({tuple(g) for g in np.lib.stride_tricks.sliding_window_view(before, n)}
             if len(before) >= n else set())
    grams = [tuple(g) for g in np.lib.stride_tricks.sliding_window_view(intervals, n)]
    restated = 0
    for i, gram in enumerate(grams):
        restated += gram in heard
        if i >= n - 1:
            heard.add(grams[i - n + 1])  # now wholly before the next gram
    return restated / len(grams)


def bar_similarity(notes: Notes, seconds: float, bar: float = BAR_SECONDS) -> float:
    """How much each bar-long stretch sounds like one before it (a self-similarity matrix's
    best earlier match, averaged).

    Each stretch is a vector of how long each pitch sounds in it (so a chord
    and its arpeggio are alike); its best cosine similarity with any earlier
    stretch, averaged over stretches with notes from the second on.

    Args:
        notes: The continuation.
        seconds: Its length.
        bar: Stretch length.

    Returns:
        The mean in [0, 1]; 0 with fewer than two stretches with notes.
    """
    bars = int(seconds // bar)
    if bars < 2 or not len(notes):
        return 0.0
    vectors = np.zeros((bars, 128))
    for k in range(bars):
        begin, end = k * bar, (k + 1) * bar
        start, stop = np.maximum(notes.start, begin), np.minimum(notes.end, end)
        inside = stop > start
        np.add.at(vectors[k], notes.pitch[inside], stop[inside] - start[inside])
    norms = np.linalg.norm(vectors, axis=1)
    played = np.nonzero(norms > 0)[0]
    if len(played) < 2:
        return 0.0
    unit = vectors[played] / norms[played, None]
    similarity = unit @ unit.T
    return float(np.mean([similarity[i, :i].max() for i in range(1, len(played))]))


def _sounding(notes: Notes, seconds: float) -> np.ndarray:
    """How many notes sound in each 10 ms step of [0, seconds)."""
    steps = int(round(seconds / STEP_SECONDS))
    on = np.clip(np.round(notes.start / STEP_SECONDS).astype(np.int64), 0, steps)
    off = np.clip(np.round(notes.end / STEP_SECONDS).astype(np.int64), 0, steps)
    change = np.zeros(steps + 1, np.int64)
    np.add.at(change, on, 1)
    np.add.at(change, off, -1)
    return np.cumsum(change)[:steps]


def _longest_run(flags: np.ndarray) -> int:
    """Length of the longest run of True."""
    if not flags.any():
        return 0
    edges = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
    return int((np.nonzero(edges == -1)[0] - np.nonzero(edges == 1)[0]).max())


def _ioi_features(onsets: np.ndarray) -> dict[str, float]:
    """Median and log-spread of the intervals between chord onsets.

    Onsets within `CHORD_SECONDS` of the chord's first are one chord: a pianist's
    chord is spread over a few 10 ms steps, and counting those as intervals would
    make every chordal texture look like a trill.
    """
    ioi = np.diff(_chord_onsets(onsets))
    if not len(ioi):
        return {"ioi_median": 0.0, "ioi_log_std": 0.0}
    return {"ioi_median": float(np.median(ioi)), "ioi_log_std": float(np.log2(ioi).std())}


def _chord_onsets(onsets: np.ndarray) -> list[float]:
    """Each chord's first onset: onsets within `CHORD_SECONDS` of it belong to it."""
    chords: list[float] = []
    for onset in np.sort(onsets):
        if not chords or onset - chords[-1] > CHORD_SECONDS:
            chords.append(onset)
    return chords


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else np.zeros(len(counts))


def _transitions(pitch: np.ndarray) -> np.ndarray:
    matrix = np.zeros((12, 12))
    np.add.at(matrix, (pitch[:-1] % 12, pitch[1:] % 12), 1)
    return _shares(matrix.ravel()).reshape(12, 12)


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy (bits) of a histogram; 0 for an empty one.

    Args:
        counts: Non-negative counts per bin.

    Returns:
        The entropy of the counts' shares.
    """
    shares = _shares(np.asarray(counts, np.float64))
    shares = shares[shares > 0]
    return float(-(shares * np.log2(shares)).sum())


def scale_consistency(pitch: np.ndarray) -> float:
    """Share of notes in the major or natural-minor scale that holds the most of them (MusPy).

    Args:
        pitch: MIDI pitches.

    Returns:
        A share in [0, 1]; 0 without notes.
    """
    if not len(pitch):
        return 0.0
    return best_scale(pitch)[1]


def best_scale(pitch: np.ndarray) -> tuple[int, float]:
    """The root (0 = C) of the major or natural-minor scale that holds the most notes.

    Args:
        pitch: MIDI pitches (at least one).

    Returns:
        (root, share of notes in that scale); of equal scales the first, C major first.
    """
    counts = np.bincount(np.asarray(pitch) % 12, minlength=12)
    held = [(counts[(root + scale) % 12].sum(), root) for root in range(12)
            for scale in (MAJOR, MINOR)]
    best, root = max(held, key=lambda pair: pair[0])
    return int(root), float(best / len(pitch))


def pitch_class_profile(notes: Notes) -> np.ndarray:
    """Seconds sounded per pitch class: what a key-finding profile is made of (Krumhansl)."""
    return np.bincount(notes.pitch % 12, weights=notes.end - notes.start, minlength=12)


def key_agreement(prompt: Notes, part: Notes) -> float:
    """Correlation of two pitch-class profiles: near 1 when both stay in one key.

    Args:
        prompt: The music before.
        part: A stretch of the continuation.

    Returns:
        Pearson's r in [-1, 1]; 0 when either profile is flat (no notes, or all
        pitch classes alike), since then nothing agrees or disagrees.
    """
    return profile_correlation(pitch_class_profile(prompt), pitch_class_profile(part))


def distinct_n(sequence: np.ndarray, n: int) -> float:
    """Distinct n-grams over all n-grams: 1 when nothing repeats, small for loops.

    Args:
        sequence: Integers (here pitch intervals).
        n: Gram length.

    Returns:
        The ratio; 0 when the sequence is shorter than n.
    """
    sequence = np.asarray(sequence)
    if len(sequence) < n:
        return 0.0
    grams = np.lib.stride_tricks.sliding_window_view(sequence, n)
    return len(np.unique(grams, axis=0)) / len(grams)


def longest_repeat(sequence: np.ndarray) -> int:
    """Length of the longest stretch that occurs at least twice (the two may overlap).

    Args:
        sequence: Integers (here pitch intervals).

    Returns:
        The length, 0 when nothing repeats.
    """
    sequence = np.asarray(sequence)
    best = 0
    for lag in range(1, len(sequence)):  # equal at every position of one diagonal = a repeat
        best = max(best, _longest_run(sequence[lag:] == sequence[:-lag]))
        if best >= len(sequence) - lag:
            break
    return best


# --------------------------------------------------------------------------- set comparison

GRID_POINTS = 512
FLOOR_BANDWIDTH_SHARE = 0.01  # of a feature's range: the kernel of a set that does not vary
KL_FLOOR = 1e-10  # probability mass added per grid cell, so KL stays finite where q is ~0
VECTOR_FEATURES = ("pitch_classes", "transitions")  # compared by Euclidean distance
FRECHET_RIDGE = 1e-6  # added to each covariance's diagonal (standardised units)


@dataclass(frozen=True)
class KdeGrid:
    """The points every density of one feature is evaluated on, and the narrowest kernel.

    Attributes:
        points: float64 [GRID_POINTS], evenly spaced.
        min_bandwidth: The kernel width of a sample whose values do not vary.
    """

    points: np.ndarray
    min_bandwidth: float


def kde_grid(*samples: np.ndarray) -> KdeGrid:
    """One grid for all the samples of a feature, wide enough for every kernel.

    Args:
        *samples: 1-D arrays of values (any may be empty).

    Returns:
        The grid; when all values are equal it spans one unit around them.
    """
    pooled = np.concatenate([np.asarray(s, np.float64).ravel() for s in samples])
    low, high = float(pooled.min()), float(pooled.max())
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    floor = FLOOR_BANDWIDTH_SHARE * (high - low)
    widest = max(bandwidth(s, floor) for s in samples if len(s))
    return KdeGrid(np.linspace(low - 4 * widest, high + 4 * widest, GRID_POINTS), floor)


def bandwidth(values: np.ndarray, floor: float) -> float:
    """Silverman's rule of thumb, never narrower than `floor` (the zero-variance guard).

    Args:
        values: The sample.
        floor: The smallest width allowed.

    Returns:
        The Gaussian kernel's standard deviation.
    """
    values = np.asarray(values, np.float64)
    return max(1.06 * float(values.std()) * len(values) ** -0.2, floor)


def density(values: np.ndarray, grid: KdeGrid, width: float | None = None) -> np.ndarray:
    """Gaussian kernel density of a sample on a grid, integrating to 1 there.

    Args:
        values: The sample (at least one value).
        grid: From `kde_grid` over every sample it will be compared with.
        width: The kernel's standard deviation; None: `bandwidth` of `values`.
            Two densities to be compared should share one: Silverman's width
            shrinks with the sample's size, so a sample and the same values
            twice over would otherwise not overlap fully.

    Returns:
        float64 [GRID_POINTS].
    """
    values = np.asarray(values, np.float64).ravel()
    width = bandwidth(values, grid.min_bandwidth) if width is None else width
    from scipy import stats  # noqa: PLC0415 - scipy loads in ~1 s; only the evaluation needs it

    curve = stats.norm.pdf(grid.points[:, None], loc=values[None, :], scale=width).mean(1)
    return curve / np.trapezoid(curve, grid.points)


def overlap_area(p: np.ndarray, q: np.ndarray, grid: KdeGrid) -> float:
    """Area under the smaller of two densities: 1 for identical, 0 for disjoint.

    Args:
        p, q: Densities from `density` on the same grid.
        grid: That grid.

    Returns:
        The overlap area in [0, 1].
    """
    return float(np.clip(np.trapezoid(np.minimum(p, q), grid.points), 0.0, 1.0))


def kl_divergence(p: np.ndarray, q: np.ndarray, grid: KdeGrid) -> float:
    """KL(p || q) in nats, from the densities' masses per grid cell.

    Args:
        p, q: Densities from `density` on the same grid.
        grid: That grid.

    Returns:
        The divergence (0 for identical densities).
    """
    step = grid.points[1] - grid.points[0]
    from scipy import stats  # noqa: PLC0415

    return float(stats.entropy(p * step + KL_FLOOR, q * step + KL_FLOOR))


def intra_distances(x: np.ndarray) -> np.ndarray:
    """Distances between every two different clips of one set.

    Args:
        x: [n] scalar features or [n, d] vectors (Euclidean distance).

    Returns:
        float64 [n (n - 1) / 2].
    """
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    i, j = np.triu_indices(len(x), 1)
    return np.linalg.norm(x[i] - x[j], axis=1)


def inter_distances(x: np.ndarray, y: np.ndarray, paired: bool) -> np.ndarray:
    """Distances between the clips of two sets.

    Args:
        x, y: As for `intra_distances`.
        paired: Clip i of both sets continues the same prompt; those pairs
            are left out, as `intra_distances` leaves out a clip against
            itself, so that a set compared with itself gives the intra-set
            distances (each twice) and shared prompts favour neither side.

    Returns:
        float64, one distance per pair.
    """
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    i, j = np.meshgrid(np.arange(len(x)), np.arange(len(y)), indexing="ij")
    keep = (i != j) if paired else np.ones(i.shape, bool)
    return np.linalg.norm(x[i[keep]] - y[j[keep]], axis=1)


def standardised_mean_difference(x: np.ndarray, y: np.ndarray) -> float:
    """(mean x - mean y) over the pooled standard deviation (Cohen's d).

    Args:
        x: Values of one set (generated).
        y: Values of the reference set (real).

    Returns:
        d; 0 where neither set varies and both agree. A pooled deviation
        under 1e-9 is raised to it, so constant sets that disagree give a very
        large, finite d.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    pooled = np.sqrt((x.var(ddof=1) * (len(x) - 1) + y.var(ddof=1) * (len(y) - 1))
                     / (len(x) + len(y) - 2))
    return float((x.mean() - y.mean()) / max(pooled, 1e-9))


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature vectors.

    Args:
        x, y: [n, d] standardised feature vectors (see `standardise`).

    Returns:
        |mu_x - mu_y|^2 + tr(S_x + S_y - 2 (S_x S_y)^(1/2)); 0 for identical sets.
    """
    mean_gap = x.mean(0) - y.mean(0)
    # A ridge keeps the covariances invertible: with fewer clips than twice the
    # features they are singular, and sqrtm of a singular product is unstable.
    ridge = FRECHET_RIDGE * np.eye(x.shape[1])
    cov_x, cov_y = np.cov(x, rowvar=False) + ridge, np.cov(y, rowvar=False) + ridge
    from scipy import linalg  # noqa: PLC0415

    root = linalg.sqrtm(cov_x @ cov_y)
    return float(mean_gap @ mean_gap + np.trace(cov_x + cov_y - 2 * np.real(root)))


def standardise(reference: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A function that scales feature matrices by the reference set's mean and deviation.

    Features that do not vary in the reference cannot be scaled and are dropped.

    Args:
        reference: [n, d] feature values of the real clips.

    Returns:
        x [m, d] -> [m, d'] standardised, d' <= d.
    """
    mean, std = reference.mean(0), reference.std(0)
    keep = std > 1e-12
    return lambda x: (np.asarray(x)[:, keep] - mean[keep]) / std[keep]


def bootstrap_ci(statistic: Callable[[np.ndarray], float], n: int, resamples: int,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of a statistic over prompts drawn with replacement.

    Prompts, not notes, are the independent draws: the clips of one prompt
    (real and generated) share their music.

    Args:
        statistic: Takes an int array of prompt indices.
        n: How many prompts.
        resamples: Bootstrap draws.
        seed: For the draws.
        level: Coverage.

    Returns:
        (low, high).
    """
    rng = np.random.default_rng(seed)
    draws = [statistic(rng.integers(0, n, n)) for _ in range(resamples)]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def feature_matrix(clips: Sequence[ClipFeatures]) -> np.ndarray:
    """[n, len(FEATURES)] scalar features of a set of clips."""
    return np.stack([clip.values for clip in clips])


def _feature_columns(clips: Sequence[ClipFeatures]) -> dict[str, np.ndarray]:
    """Every compared feature of a set: scalars as [n], vectors as [n, d]."""
    values = feature_matrix(clips)
    columns = {name: values[:, k] for k, name in enumerate(FEATURES)}
    for name in VECTOR_FEATURES:
        columns[name] = np.stack([getattr(clip, name).ravel() for clip in clips])
    return columns


def compare_sets(real: Sequence[ClipFeatures], generated: dict[str, Sequence[ClipFeatures]],
                 resamples: int = 1000, seed: int = 0) -> dict:
    """Compare sets of clips with the real ones, and real with itself as the ceiling.

    Clip i of every set continues prompt i. The ceiling splits the real clips
    into two halves of different prompts: what two samples of real playing
    score against each other. The Fréchet distance is always measured between
    such halves (real half A against the other set's half B, and the other
    way round, averaged), so that every set, real included, is measured at
    the same sample size.

    Args:
        real: The real continuations.
        generated: Set name -> its clips, in the order of `real`.
        resamples: Bootstrap draws over prompts for the intervals.
        seed: For the split and the draws.

    Returns:
        {"sets": {name: {"features": {feature: {mean, std, ci, smd, smd_ci,
        overlap, kl}}, "frechet", "frechet_ci"}}} with the set "real (other
        half)" as the ceiling and "real" holding the real set's own means.
    """
    n = len(real)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    half_a, half_b = np.sort(order[: n // 2]), np.sort(order[n // 2:])
    columns = {name: _feature_columns(clips) for name, clips in generated.items()}
    real_columns = _feature_columns(real)

    # Intra/inter-set distance distributions, all of one feature on one grid.
    distances = {}
    for feature in real_columns:
        x = real_columns[feature]
        sets = {"real (other half)": (intra_distances(x[half_a]),
                                      inter_distances(x[half_a], x[half_b], paired=False))}
        for name in generated:
            sets[name] = (intra_distances(x), inter_distances(x, columns[name][feature], True))
        grid = kde_grid(*(d for pair in sets.values() for d in pair))
        distances[feature] = {}
        for name, (intra, inter) in sets.items():
            width = bandwidth(intra, grid.min_bandwidth)  # the real set's kernel for both
            p, q = density(intra, grid, width), density(inter, grid, width)
            distances[feature][name] = {"overlap": overlap_area(p, q, grid),
                                        "kl": kl_divergence(p, q, grid)}

    real_values = feature_matrix(real)
    fd = [list(FEATURES).index(name) for name in FRECHET_FEATURES]
    scale = standardise(real_values[:, fd])
    result = {"real": {"features": _summaries(real_values, None, resamples, seed)}}
    others = {"real (other half)": None, **{name: feature_matrix(c) for name, c in
                                            generated.items()}}
    for name, values in others.items():
        if values is None:  # the ceiling: half A against half B
            summary = _summaries(real_values[half_b], real_values[half_a], resamples, seed)
            frechet = _split_frechet(scale(real_values[:, fd]), scale(real_values[:, fd]),
                                     half_a, half_b)
            ci = _split_frechet_ci(scale(real_values[:, fd]), scale(real_values[:, fd]), half_a,
                                   half_b, resamples, seed)
        else:
            summary = _summaries(values, real_values, resamples, seed)
            frechet = _split_frechet(scale(real_values[:, fd]), scale(values[:, fd]), half_a,
                                     half_b)
            ci = _split_frechet_ci(scale(real_values[:, fd]), scale(values[:, fd]), half_a,
                                   half_b, resamples, seed)
        for feature in summary:
            summary[feature].update(distances[feature][name])
        for feature in VECTOR_FEATURES:
            summary[feature] = dict(distances[feature][name])
        result[name] = {"features": summary, "frechet": frechet, "frechet_ci": ci}
    return {"sets": result, "split": [half_a.tolist(), half_b.tolist()]}


def _summaries(values: np.ndarray, reference: np.ndarray | None, resamples: int,
               seed: int) -> dict:
    """Per feature: mean, std, the mean's CI and, against `reference`, d and its CI."""
    summary = {}
    n = len(values)
    for k, feature in enumerate(FEATURES):
        x = values[:, k]
        entry = {"mean": float(x.mean()), "std": float(x.std(ddof=1)),
                 "ci": bootstrap_ci(lambda idx, x=x: x[idx].mean(), n, resamples, seed)}
        if reference is not None:
            y = reference[:, k]
            entry["smd"] = standardised_mean_difference(x, y)
            if len(y) == n:  # paired by prompt: draw the same prompts for both
                entry["smd_ci"] = bootstrap_ci(
                    lambda idx, x=x, y=y: standardised_mean_difference(x[idx], y[idx]),
                    n, resamples, seed)
        summary[feature] = entry
    return summary


def _split_frechet(real: np.ndarray, other: np.ndarray, half_a: np.ndarray,
                   half_b: np.ndarray) -> float:
    """Mean of FD(real A, other B) and FD(real B, other A): prompts never shared."""
    return 0.5 * (frechet_distance(real[half_a], other[half_b])
                  + frechet_distance(real[half_b], other[half_a]))


def _split_frechet_ci(real: np.ndarray, other: np.ndarray, half_a: np.ndarray,
                      half_b: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """Bootstrap interval of `_split_frechet`, drawing prompts within each half."""
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        a = rng.choice(half_a, len(half_a))
        b = rng.choice(half_b, len(half_b))
        draws.append(_split_frechet(real, other, a, b))
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


# --------------------------------------------------------------------------- copying

COPY_GRAM = 8  # intervals: 9 notes in a row
_SEPARATOR = 255  # between pieces, so no gram spans two; no interval (+127) reaches it
_BASE = 1_000_003  # odd, so invertible modulo 2**64
_MASK = 2**64


def interval_sequence(notes: Notes) -> np.ndarray:
    """Pitch intervals between successive notes in (onset, pitch) order.

    Intervals, not pitches, so a copy is found in any transposition (training
    augments by +-3 semitones).

    Args:
        notes: Any notes.

    Returns:
        int64 [len(notes) - 1] (empty for fewer than two notes).
    """
    return np.diff(notes.pitch.astype(np.int64))


@dataclass
class TrainIntervals:
    """The interval sequences of a training split, indexed for copy search.

    Attributes:
        symbols: int64, every piece's intervals + 127, pieces separated by 255.
        prefix: uint64 [len(symbols) + 1] polynomial prefix hashes (mod 2**64).
        gram_order: Positions sorted by the hash of the `COPY_GRAM` starting there.
        gram_sorted: Those hashes, sorted.
    """

    symbols: np.ndarray
    prefix: np.ndarray
    gram_order: np.ndarray
    gram_sorted: np.ndarray

    @staticmethod
    def from_pieces(pieces: Sequence[np.ndarray]) -> TrainIntervals:
        """Index token pieces (as the token cache holds them).

        The NOTE_ON tokens of an encoded piece come in (time, pitch) order, the
        order `decode_events` sorts notes in, so the pitches are read straight
        from the tokens without decoding.
        """
        on = VOCAB["note_on"]
        parts = []
        for tokens in pieces:
            tokens = np.asarray(tokens, np.int64)
            pitch = on.value(tokens[(tokens >= on.offset) & (tokens < on.stop)])
            parts += [np.diff(pitch) + 127, [_SEPARATOR]]
        return TrainIntervals.from_symbols(np.concatenate(parts).astype(np.int64))

    @staticmethod
    def from_notes(parts: Sequence[Notes]) -> TrainIntervals:
        """Index note sequences (for tests and for corpora that are not token caches)."""
        symbols = [np.append(interval_sequence(n) + 127, _SEPARATOR) for n in parts]
        return TrainIntervals.from_symbols(np.concatenate(symbols).astype(np.int64))

    @staticmethod
    def from_symbols(symbols: np.ndarray) -> TrainIntervals:
        prefix = _prefix_hashes(symbols)
        grams = _gram_hashes(prefix, np.arange(max(0, len(symbols) - COPY_GRAM + 1)), COPY_GRAM)
        order = np.argsort(grams, kind="stable")
        return TrainIntervals(symbols, prefix, order, grams[order])

    def copied_share(self, intervals: np.ndarray) -> float:
        """Share of a clip's interval 8-grams that occur somewhere in the train split.

        Args:
            intervals: From `interval_sequence`.

        Returns:
            The share; NaN for a clip too short to have an 8-gram.
        """
        grams = self._clip_grams(intervals, COPY_GRAM)
        if not len(grams):
            return float("nan")
        return float(self._found(grams).mean())

    def longest_match(self, intervals: np.ndarray) -> int:
        """Longest run of a clip's intervals that occurs unbroken in the train split.

        Matches shorter than `COPY_GRAM` are not searched for.

        Args:
            intervals: From `interval_sequence`.

        Returns:
            Its length in intervals; 0 when no 8-gram of the clip occurs.
        """
        grams = self._clip_grams(intervals, COPY_GRAM)
        hits = self._found(grams)
        if not hits.any():
            return 0
        # Every train position where one of the clip's found 8-grams starts:
        # a longer match must start at one of them.
        left = np.searchsorted(self.gram_sorted, grams[hits], "left")
        right = np.searchsorted(self.gram_sorted, grams[hits], "right")
        starts = np.unique(np.concatenate([self.gram_order[a:b] for a, b in
                                           zip(left, right, strict=True)]))
        low, high = COPY_GRAM, COPY_GRAM - 1 + _longest_run(hits)  # a match of L needs L-7 hits
        while low < high:  # the longest length with a match, by bisection
            length = (low + high + 1) // 2
            usable = starts[starts + length <= len(self.symbols)]
            train = np.sort(_gram_hashes(self.prefix, usable, length))
            clip = self._clip_grams(intervals, length)
            found = np.searchsorted(train, clip)
            if (train[np.minimum(found, len(train) - 1)] == clip).any():
                low = length
            else:
                high = length - 1
        return low

    def _clip_grams(self, intervals: np.ndarray, length: int) -> np.ndarray:
        symbols = np.asarray(intervals, np.int64) + 127
        starts = np.arange(max(0, len(symbols) - length + 1))
        return _gram_hashes(_prefix_hashes(symbols), starts, length)

    def _found(self, grams: np.ndarray) -> np.ndarray:
        if not len(self.gram_sorted):
            return np.zeros(len(grams), bool)
        at = np.minimum(np.searchsorted(self.gram_sorted, grams), len(self.gram_sorted) - 1)
        return self.gram_sorted[at] == grams

    def copying(self, clips: Sequence[Notes]) -> dict:
        """Copy measures of a set of clips.

        Args:
            clips: Continuations.

        Returns:
            {"share": per-clip 8-gram shares, "longest": per-clip longest
            matches, "mean_share", "mean_longest", "max_longest"}.
        """
        sequences = [interval_sequence(clip) for clip in clips]
        shares = [self.copied_share(s) for s in sequences]
        longest = [self.longest_match(s) for s in sequences]
        return {"share": shares, "longest": longest,
                "mean_share": float(np.nanmean(shares)) if not np.isnan(shares).all() else 0.0,
                "mean_longest": float(np.mean(longest)), "max_longest": int(max(longest))}


def _prefix_hashes(symbols: np.ndarray) -> np.ndarray:
    """P[i] = sum_{k<i} (s_k + 1) B^(i-1-k) mod 2**64, for all i at once.

    The recurrence P[i+1] = P[i] B + s_i is a loop; written as
    B^(i-1) * sum_{k<i} (s_k + 1) B^-k it is two cumulative products and a
    cumulative sum, all wrapping modulo 2**64 as uint64 arithmetic does.
    """
    n = len(symbols)
    prefix = np.zeros(n + 1, np.uint64)
    if not n:
        return prefix
    with np.errstate(over="ignore"):
        powers = _powers(_BASE, n)
        inverse_powers = _powers(pow(_BASE, -1, _MASK), n)
        sums = np.cumsum((np.asarray(symbols, np.uint64) + np.uint64(1)) * inverse_powers,
                         dtype=np.uint64)
        prefix[1:] = powers * sums
    return prefix


def _powers(base: int, n: int) -> np.ndarray:
    """base^0 .. base^(n-1) modulo 2**64."""
    factors = np.full(n, base, np.uint64)
    factors[0] = 1
    with np.errstate(over="ignore"):
        return np.cumprod(factors, dtype=np.uint64)


def _gram_hashes(prefix: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Hashes of the `length`-grams beginning at `starts`: P[t+L] - P[t] B^L (mod 2**64)."""
    with np.errstate(over="ignore"):
        return prefix[starts + length] - prefix[starts] * np.uint64(pow(_BASE, length, _MASK))
