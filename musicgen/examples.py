"""Built-in seeds, entered by hand here (public-domain melodies and our own figures).

None of these comes from a data set: each is a few bars written as note
lists, so the demo has something to continue before anyone uploads a file.
"""

from __future__ import annotations

from musicgen.errors import UserError
from musicgen.notes import Notes


def _sequence(events: list[tuple[float, float, list[int], int]]) -> Notes:
    """(start beat, length in beats, pitches, velocity) at 0.5 s per beat -> Notes."""
    beat = 0.5
    pitch, velocity, start, end = [], [], [], []
    for at, length, pitches, loudness in events:
        for p in pitches:
            pitch.append(p)
            velocity.append(loudness)
            start.append(at * beat)
            end.append((at + 0.98 * length) * beat)  # a slight gap: legato, not tied
    return Notes.from_arrays(pitch, velocity, start, end)


def _prelude_in_c() -> Notes:
    """J. S. Bach, Prelude in C major BWV 846 (public domain), bars 1-4."""
    bars = [(48, 52, [55, 60, 64]), (48, 50, [57, 62, 65]), (47, 50, [55, 62, 65]),
            (48, 52, [55, 60, 64])]
    events = []
    for bar, (bass, tenor, upper) in enumerate(bars):
        for half in range(2):
            at = bar * 4 + half * 2
            events.append((at, 2.0, [bass], 62))
            events.append((at + 0.25, 1.75, [tenor], 58))
            for k, p in enumerate(upper + upper):
                events.append((at + 0.5 + 0.25 * k, 0.25, [p], 66 if k % 3 == 0 else 56))
    return _sequence(events)


def _ode_to_joy() -> Notes:
    """L. van Beethoven, 'Ode to Joy' theme (public domain), melody over simple chords."""
    melody = [64, 64, 65, 67, 67, 65, 64, 62, 60, 60, 62, 64, 64, 62, 62]
    lengths = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1.5, 0.5, 2]
    events, at = [], 0.0
    for p, length in zip(melody, lengths, strict=True):
        events.append((at, length, [p + 12], 78))
        at += length
    for bar, chord in enumerate([[48, 55, 64], [43, 55, 59], [48, 55, 64], [43, 53, 59]]):
        events.append((bar * 4, 3.8, chord, 52))
    return _sequence(events)


def _slow_waltz() -> Notes:
    """An original slow waltz in D major: bass on one, chords on two and three."""
    harmony = [(38, [57, 62, 66]), (43, [59, 62, 67]), (45, [57, 61, 64]), (38, [57, 62, 66]),
               (47, [59, 62, 66]), (43, [59, 62, 67]), (45, [55, 61, 64]), (38, [54, 57, 62])]
    tune = [(74, 3), (76, 1.5), (78, 1.5), (73, 3), (74, 3), (78, 2), (79, 1), (76, 3), (74, 3)]
    events = []
    for bar, (bass, chord) in enumerate(harmony):
        events.append((bar * 3, 2.9, [bass], 60))
        events.append((bar * 3 + 1, 0.9, chord, 45))
        events.append((bar * 3 + 2, 0.9, chord, 42))
    at = 0.0
    for p, length in tune:
        if at >= len(harmony) * 3:
            break
        events.append((at, length, [p], 70))
        at += length
    return _sequence(events)


def _blues_shuffle() -> Notes:
    """An original boogie-woogie left hand in C with a right-hand riff."""
    events = []
    pattern = [0, 4, 7, 9, 10, 9, 7, 4]
    for bar, root in enumerate([36, 36, 41, 36]):
        for k, interval in enumerate(pattern):
            at = bar * 4 + k * 0.5 + (0.16 if k % 2 else 0.0)  # swung eighths
            events.append((at, 0.45, [root + interval], 72 if k % 2 == 0 else 60))
        events.append((bar * 4 + 1, 0.4, [root + 24 + 4, root + 24 + 10], 66))
        events.append((bar * 4 + 3, 0.4, [root + 24 + 3, root + 24 + 10], 70))
    return _sequence(events)


def _minor_chorale() -> Notes:
    """An original four-part chorale phrase in A minor."""
    chords = [[45, 57, 60, 64], [50, 57, 62, 65], [52, 56, 62, 64], [45, 57, 60, 64],
              [41, 57, 60, 65], [38, 53, 62, 65], [40, 56, 59, 64], [45, 57, 60, 69]]
    return _sequence([(k * 2, 1.9 if k < 7 else 3.8, chord, 55 + 3 * (k % 3))
                      for k, chord in enumerate(chords)])


EXAMPLES = {
    "Bach: Prelude in C (opening)": _prelude_in_c,
    "Beethoven: Ode to Joy": _ode_to_joy,
    "Slow waltz in D": _slow_waltz,
    "Boogie-woogie in C": _blues_shuffle,
    "Chorale in A minor": _minor_chorale,
}


def example_names() -> list[str]:
    """Names of the built-in seeds, in menu order."""
    return list(EXAMPLES)


def example_notes(name: str) -> Notes:
    """The notes of a built-in seed.

    Raises:
        UserError: No example has that name (the message lists them).
    """
    if name not in EXAMPLES:
        raise UserError(f"there is no example called {name}; choose one of: "
                        f"{', '.join(EXAMPLES)}")
    return EXAMPLES[name]()
