"""Performance events: notes <-> token ids (Oore et al. 2018, Performance RNN).

Pure numpy, so training machines without MIDI libraries can import it.

The vocabulary is a table of event ranges. Encoding, decoding and the
per-type accuracy in evaluation all read the same table, so adding or resizing
a range changes every stage at once. Its `version` is stored with the token
cache and with every checkpoint; a mismatch is refused rather than guessed.

Token layout (VOCAB.size == 391):

    0        PAD
    1        BOS
    2        EOS
    3..130   NOTE_ON   pitch 0..127
    131..258 NOTE_OFF  pitch 0..127
    259..358 TIME_SHIFT 1..100 steps of 10 ms (10 ms .. 1 s)
    359..390 VELOCITY  bin 1..32 (MIDI velocity 1..127 in bins of 4)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from musicgen.errors import UserError
from musicgen.notes import Notes

STEPS_PER_SECOND = 100
MAX_SHIFT_STEPS = 100
VELOCITY_BINS = 32
VELOCITY_BIN_SIZE = -(-127 // VELOCITY_BINS)  # ceil: 4 velocities per bin
DEFAULT_VELOCITY = 64
MAX_NOTE_SECONDS = 5.0


@dataclass(frozen=True)
class EventRange:
    """A contiguous block of token ids for one event type.

    Attributes:
        name: Event type, e.g. "note_on".
        min_value: Smallest event value (e.g. pitch 0, shift 1 step).
        max_value: Largest event value, inclusive.
        offset: Token id of `min_value`.
    """

    name: str
    min_value: int
    max_value: int
    offset: int

    @property
    def size(self) -> int:
        return self.max_value - self.min_value + 1

    @property
    def stop(self) -> int:
        """One past the last token id of this range."""
        return self.offset + self.size

    def token(self, value):
        """Token id(s) for event value(s); works on ints and numpy arrays."""
        return self.offset + (value - self.min_value)

    def value(self, token):
        """Event value(s) for token id(s) of this range."""
        return self.min_value + (token - self.offset)


def _layout(specs: list[tuple[str, int, int]]) -> tuple[EventRange, ...]:
    ranges, offset = [], 0
    for name, lo, hi in specs:
        ranges.append(EventRange(name, lo, hi, offset))
        offset += hi - lo + 1
    return tuple(ranges)


@dataclass(frozen=True)
class Vocabulary:
    """The versioned event table shared by encoder, decoder, models and checkpoints."""

    version: str = "performance-v1"
    ranges: tuple[EventRange, ...] = field(default_factory=lambda: _layout([
        ("pad", 0, 0), ("bos", 0, 0), ("eos", 0, 0),
        ("note_on", 0, 127), ("note_off", 0, 127),
        ("time_shift", 1, MAX_SHIFT_STEPS), ("velocity", 1, VELOCITY_BINS),
    ]))

    def __getitem__(self, name: str) -> EventRange:
        for event_range in self.ranges:
            if event_range.name == name:
                return event_range
        raise KeyError(name)

    @property
    def size(self) -> int:
        return self.ranges[-1].stop

    @property
    def pad(self) -> int:
        return self["pad"].offset

    @property
    def bos(self) -> int:
        return self["bos"].offset

    @property
    def eos(self) -> int:
        return self["eos"].offset

    def event_types(self) -> np.ndarray:
        """Index into `ranges` for every token id (shape [size])."""
        return np.repeat(np.arange(len(self.ranges)), [r.size for r in self.ranges])

    def describe(self, token: int) -> str:
        """Human-readable form of one token, e.g. 'note_on(60)'."""
        event_range = self.ranges[self.event_types()[token]]
        if event_range.size == 1:
            return event_range.name.upper()
        return f"{event_range.name}({event_range.value(token)})"

    def to_dict(self) -> dict:
        """JSON-ready description, stored in caches and checkpoints."""
        return {"version": self.version, "size": self.size,
                "ranges": [[r.name, r.min_value, r.max_value] for r in self.ranges]}

    def check_compatible(self, described: dict) -> None:
        """Raise UserError unless `described` (from `to_dict`) is this vocabulary."""
        if described != self.to_dict():
            raise UserError(f"this was made with the event vocabulary "
                            f"{described.get('version')}, which differs from this code's "
                            f"{self.version}; use a matching musicgen version")


VOCAB = Vocabulary()


def velocity_to_bin(velocity):
    """MIDI velocity 1..127 -> bin 1..32 (ints or arrays)."""
    return (np.clip(velocity, 1, 127) - 1) // VELOCITY_BIN_SIZE + 1


def bin_to_velocity(velocity_bin):
    """Bin 1..32 -> the middle MIDI velocity of that bin."""
    return np.minimum((velocity_bin - 1) * VELOCITY_BIN_SIZE + 1 + VELOCITY_BIN_SIZE // 2, 127)


def quantize_notes(notes: Notes) -> tuple[np.ndarray, np.ndarray]:
    """Onset and offset steps (10 ms) such that every note keeps at least one step.

    Times round to the nearest step. A note that would round to zero length
    takes the step it starts in (floor), which keeps both ends within one
    step of the truth. A re-strike of a pitch inside the step its previous
    note ends in is pushed to that step, so no note of a pitch is lost.

    Args:
        notes: Notes without overlaps per pitch.

    Returns:
        (on_step, off_step) int64 arrays in the order of `notes`.
    """
    start = notes.start * STEPS_PER_SECOND
    end = notes.end * STEPS_PER_SECOND
    on_step = np.rint(start).astype(np.int64)
    off_step = np.rint(end).astype(np.int64)
    short = off_step <= on_step
    on_step[short] = np.floor(start[short]).astype(np.int64)
    off_step[short] = on_step[short] + 1
    order = np.lexsort((notes.start, notes.pitch))
    same_pitch = np.append(False, notes.pitch[order][1:] == notes.pitch[order][:-1])
    on, off = on_step[order], off_step[order]
    while True:  # a chain of re-strikes settles in a few passes
        previous_off = np.where(same_pitch, np.append(0, off[:-1]), 0)
        previous_on = np.append(-1, on[:-1])
        late = on < previous_off
        if not late.any():
            break
        # Rounding let the previous note end after this onset: end it here
        # instead, unless both began in the same step; then move this one on.
        pull_back = np.nonzero(late & (previous_on < on))[0]
        off[pull_back - 1] = on[pull_back]
        push = late & (previous_on >= on)
        on[push] = previous_off[push]
        off = np.maximum(off, on + 1)
    on_step[order], off_step[order] = on, off
    return on_step, off_step


def encode_notes(notes: Notes, vocab: Vocabulary = VOCAB) -> np.ndarray:
    """Turn notes into performance-event tokens (no BOS/EOS added).

    Times are rounded to 10 ms steps. A note shorter than one step is given
    one step, so its NOTE_OFF never precedes its NOTE_ON. At equal times,
    note-offs come before note-ons, so a re-struck pitch ends and restarts.
    A VELOCITY token precedes a NOTE_ON only when the velocity bin changes.

    Args:
        notes: Notes without overlaps per pitch (as `read_midi` returns them).
        vocab: The event table.

    Returns:
        int64 array of token ids.
    """
    if not len(notes):
        return np.zeros(0, dtype=np.int64)
    on_step, off_step = quantize_notes(notes)
    pitch = notes.pitch.astype(np.int64)
    n = len(pitch)
    time = np.concatenate((off_step, on_step))
    is_on = np.concatenate((np.zeros(n, bool), np.ones(n, bool)))
    pitches = np.concatenate((pitch, pitch))
    bins = np.concatenate((np.zeros(n, np.int64), velocity_to_bin(notes.velocity.astype(np.int64))))
    order = np.lexsort((pitches, is_on, time))
    time, is_on, pitches, bins = time[order], is_on[order], pitches[order], bins[order]

    on_bins = bins[is_on]
    needs_velocity = np.zeros(len(time), bool)
    needs_velocity[is_on] = on_bins != np.concatenate(([-1], on_bins[:-1]))
    note_tokens = np.where(is_on, vocab["note_on"].token(pitches), vocab["note_off"].token(pitches))

    # A VELOCITY token is an event at the time of the NOTE_ON it precedes.
    per_event = 1 + needs_velocity
    owner = np.repeat(np.arange(len(time)), per_event)
    event_tokens = note_tokens[owner]
    group_start = np.cumsum(per_event) - per_event
    event_tokens[group_start[needs_velocity]] = vocab["velocity"].token(bins[needs_velocity])
    return interleave_time_shifts(time[owner], event_tokens, vocab)


def interleave_time_shifts(steps: np.ndarray, event_tokens: np.ndarray,
                           vocab: Vocabulary = VOCAB) -> np.ndarray:
    """Put TIME_SHIFT tokens between events so each lands at its time.

    Args:
        steps: Non-decreasing event times in 10 ms steps, from time zero.
        event_tokens: One non-shift token per event.
        vocab: The event table.

    Returns:
        int64 tokens: before each event, its gap as full 1 s shifts and a remainder.
    """
    delta = np.diff(np.asarray(steps, np.int64), prepend=0)
    full_shifts, last_shift = np.divmod(delta, MAX_SHIFT_STEPS)
    n_shifts = full_shifts + (last_shift > 0)
    per_event = n_shifts + 1
    first = np.cumsum(per_event) - per_event
    tokens = np.empty(int(per_event.sum()), dtype=np.int64)
    owner = np.repeat(np.arange(len(delta)), n_shifts)
    within = np.arange(len(owner)) - np.repeat(np.cumsum(n_shifts) - n_shifts, n_shifts)
    shift = np.where(within < full_shifts[owner], MAX_SHIFT_STEPS, last_shift[owner])
    tokens[first[owner] + within] = vocab["time_shift"].token(shift)
    tokens[first + n_shifts] = event_tokens
    return tokens


def event_steps(tokens: np.ndarray, vocab: Vocabulary = VOCAB) -> tuple[np.ndarray, np.ndarray]:
    """Split tokens into non-shift events and the step time of each.

    The inverse of `interleave_time_shifts`, except that trailing shifts
    after the last event are dropped.

    Returns:
        (steps, event_tokens) as int64 arrays.
    """
    tokens = np.asarray(tokens, np.int64)
    shift = vocab["time_shift"]
    is_shift = (tokens >= shift.offset) & (tokens < shift.stop)
    elapsed = np.cumsum(np.where(is_shift, shift.value(tokens), 0))
    return elapsed[~is_shift], tokens[~is_shift]


@dataclass(frozen=True)
class DecodeReport:
    """What `decode_events` had to repair in a token sequence.

    Attributes:
        cut_notes: Notes ended after `max_note_seconds` without a NOTE_OFF.
        closed_at_end: Notes still sounding at the end, closed there.
        ignored_note_offs: NOTE_OFFs for pitches that were not sounding.
        restarted_notes: NOTE_ONs of a sounding pitch (the old note ended).
        dropped_empty_notes: Notes that ended in the step they began.
        stopped_at_eos: True if an EOS token ended decoding early.
    """

    cut_notes: int = 0
    closed_at_end: int = 0
    ignored_note_offs: int = 0
    restarted_notes: int = 0
    dropped_empty_notes: int = 0
    stopped_at_eos: bool = False


def decode_events(tokens, vocab: Vocabulary = VOCAB,
                  max_note_seconds: float | None = MAX_NOTE_SECONDS,
                  ) -> tuple[Notes, DecodeReport]:
    """Turn any sequence of valid token ids into notes, repairing what is odd.

    Args:
        tokens: Token ids (any integer sequence).
        vocab: The event table.
        max_note_seconds: A note held this long without NOTE_OFF is ended
            there; None keeps notes of any length.

    Returns:
        The notes and a report of every repair made.

    Raises:
        ValueError: A token id outside the vocabulary.
    """
    tokens = np.asarray(tokens, dtype=np.int64).ravel()
    if len(tokens) and (tokens.min() < 0 or tokens.max() >= vocab.size):
        bad = tokens[(tokens < 0) | (tokens >= vocab.size)][0]
        raise ValueError(f"token id {bad} is outside the vocabulary (0..{vocab.size - 1})")
    max_steps = None if max_note_seconds is None else round(max_note_seconds * STEPS_PER_SECOND)
    on, off = vocab["note_on"], vocab["note_off"]
    shift, vel = vocab["time_shift"], vocab["velocity"]
    counts = dict.fromkeys(("cut_notes", "closed_at_end", "ignored_note_offs",
                            "restarted_notes", "dropped_empty_notes"), 0)
    out_pitch, out_velocity, out_start, out_end = [], [], [], []
    sounding: dict[int, tuple[int, int]] = {}  # pitch -> (start step, velocity)
    step, velocity, stopped_at_eos = 0, DEFAULT_VELOCITY, False

    def close(pitch: int, at: int) -> None:
        start, note_velocity = sounding.pop(pitch)
        if at <= start:
            counts["dropped_empty_notes"] += 1
            return
        out_pitch.append(pitch)
        out_velocity.append(note_velocity)
        out_start.append(start)
        out_end.append(at)

    for token in tokens.tolist():
        if on.offset <= token < on.stop:
            pitch = on.value(token)
            if pitch in sounding:
                counts["restarted_notes"] += 1
                close(pitch, step)
            sounding[pitch] = (step, velocity)
        elif off.offset <= token < off.stop:
            pitch = off.value(token)
            if pitch in sounding:
                close(pitch, step)
            else:
                counts["ignored_note_offs"] += 1
        elif shift.offset <= token < shift.stop:
            step += shift.value(token)
            if max_steps is not None:
                for pitch in [p for p, (s, _) in sounding.items() if step - s > max_steps]:
                    counts["cut_notes"] += 1
                    close(pitch, sounding[pitch][0] + max_steps)
        elif vel.offset <= token < vel.stop:
            velocity = int(bin_to_velocity(vel.value(token)))
        elif token == vocab.eos:
            stopped_at_eos = True
            break
    counts["closed_at_end"] = len(sounding)
    for pitch in list(sounding):
        close(pitch, step)
    notes = Notes.from_arrays(out_pitch, out_velocity,
                              np.asarray(out_start, np.float64) / STEPS_PER_SECOND,
                              np.asarray(out_end, np.float64) / STEPS_PER_SECOND)
    return notes, DecodeReport(stopped_at_eos=stopped_at_eos, **counts)


# --------------------------------------------------------------------------- held notes
# Which pitches sound after each token, and for how long: an input that tells
# a model what it would otherwise have to remember. A note that nobody ends
# is a stuck note, and the models left 3% of their notes held 4 s or more
# where pianists leave 1.2% (docs/evaluation/timing).

PITCHES = 128
HELD_SECONDS_CAP = 4.0  # ages are told up to here: about where a note counts as stuck
HELD_FEATURES = 2 * PITCHES  # per pitch: sounding or not, and its age up to the cap


def held_ages(tokens: np.ndarray, before: np.ndarray | None = None,
              vocab: Vocabulary = VOCAB) -> np.ndarray:
    """How long each pitch has been sounding after each token, in 10 ms steps.

    A NOTE_ON starts its pitch at age 0 (again, if it was sounding), a NOTE_OFF
    silences it and time shifts age every sounding pitch. Unlike
    `decode_events`, nothing is cut at `MAX_NOTE_SECONDS`: the data's held notes
    are not cut either, and the model should see what it was trained on.

    Args:
        tokens: Token ids [..., T] (a leading batch dimension is optional).
        before: The ages after the token before `tokens` [..., 128] (what the
            last row of an earlier call returned), or None: nothing sounding.
        vocab: The event table.

    Returns:
        int64 [..., T, 128]: the age of each pitch after each token, -1 where silent.
    """
    tokens = np.asarray(tokens, np.int64)
    batch, steps = tokens.shape[:-1], tokens.shape[-1]
    tokens = tokens.reshape(-1, steps)
    elapsed, is_on, pitch = note_events(tokens, vocab)
    row, time = np.nonzero(pitch >= 0)
    pitch = pitch[row, time]
    # The index of each pitch's latest NOTE_ON or NOTE_OFF, carried forward in time.
    latest = np.full((len(tokens), steps, PITCHES), -1, np.int64)
    latest[row, time, pitch] = time
    latest = np.maximum.accumulate(latest, axis=1)
    seen = latest >= 0
    at = np.maximum(latest, 0)
    rows = np.arange(len(tokens))[:, None, None]
    started = np.take_along_axis(elapsed, at.reshape(len(tokens), -1), 1).reshape(at.shape)
    ages = np.where(seen & is_on[rows, at], elapsed[..., None] - started, -1)
    if before is not None:
        before = np.asarray(before, np.int64).reshape(-1, 1, PITCHES)
        ages = np.where(~seen & (before >= 0), before + elapsed[..., None], ages)
    return ages.reshape(*batch, steps, PITCHES)


def advance_held_ages(before: np.ndarray, tokens: np.ndarray,
                      vocab: Vocabulary = VOCAB) -> np.ndarray:
    """`held_ages` after one more token per row: what a sampler needs at each step.

    The same rule as `held_ages(tokens[:, None], before)[:, 0]`, in a handful of
    numpy calls instead of that function's sums along a time axis: that call
    took 34 us of the served LSTM's 470 us step (one row, timeit; BENCHMARKS.md,
    "Fewer numpy calls per token").

    Args:
        before: int64 [n, 128], the ages after each row's previous token.
        tokens: [n], the token that comes next in each row.
        vocab: The event table.

    Returns:
        int64 [n, 128], a new array.
    """
    on, off, shift = vocab["note_on"], vocab["note_off"], vocab["time_shift"]
    tokens = np.asarray(tokens, np.int64)
    steps = np.where((tokens >= shift.offset) & (tokens < shift.stop),
                     tokens - shift.offset + shift.min_value, 0)
    ages = np.where(before >= 0, before + steps[:, None], -1)
    rows = np.arange(len(tokens))
    is_on = (tokens >= on.offset) & (tokens < on.stop)
    ages[rows[is_on], tokens[is_on] - on.offset] = 0
    is_off = (tokens >= off.offset) & (tokens < off.stop)
    ages[rows[is_off], tokens[is_off] - off.offset] = -1
    return ages


def held_after(tokens: np.ndarray, vocab: Vocabulary = VOCAB) -> np.ndarray:
    """The last row of `held_ages(tokens)` [128], in time linear in len(tokens).

    How a training window that starts inside a piece learns which notes its
    first tokens find sounding.
    """
    tokens = np.asarray(tokens, np.int64)
    if not len(tokens):
        return np.full(PITCHES, -1, np.int64)
    elapsed, is_on, pitch = note_events(tokens, vocab)
    time = np.nonzero(pitch >= 0)[0]
    pitch = pitch[time]
    latest = np.full(PITCHES, -1, np.int64)
    np.maximum.at(latest, pitch, time)
    at = np.maximum(latest, 0)
    return np.where((latest >= 0) & is_on[at], elapsed[-1] - elapsed[at], -1)


def note_events(tokens: np.ndarray, vocab: Vocabulary) -> tuple[np.ndarray, ...]:
    """Per token (last axis): steps elapsed after it, NOTE_ON or not, and its pitch (-1: none)."""
    on, off, shift = vocab["note_on"], vocab["note_off"], vocab["time_shift"]
    is_shift = (tokens >= shift.offset) & (tokens < shift.stop)
    elapsed = np.cumsum(np.where(is_shift, tokens - shift.offset + shift.min_value, 0), axis=-1)
    is_on = (tokens >= on.offset) & (tokens < on.stop)
    is_off = (tokens >= off.offset) & (tokens < off.stop)
    pitch = np.where(is_on, tokens - on.offset, np.where(is_off, tokens - off.offset, -1))
    return elapsed, is_on, pitch


def held_features(ages: np.ndarray) -> np.ndarray:
    """A model's input from `held_ages`: float32 [..., 256].

    The first 128 say which pitches sound (1 or 0), the next 128 how long,
    as a share of `HELD_SECONDS_CAP` (1 from the cap on, 0 where silent).
    """
    ages = np.asarray(ages)
    cap = HELD_SECONDS_CAP * STEPS_PER_SECOND
    sounding = ages >= 0
    age = np.where(sounding, np.minimum(ages, cap) / cap, 0.0)
    return np.concatenate((sounding, age), axis=-1).astype(np.float32)
