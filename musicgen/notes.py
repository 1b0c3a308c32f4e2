"""Notes of one piano part as parallel numpy arrays: the hand-off between stages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Notes:
    """Notes of one piano part as parallel numpy arrays, sorted by (start, pitch).

    Attributes:
        pitch: MIDI pitch 0..127 (int16).
        velocity: MIDI velocity 1..127 (int16).
        start: Onset in seconds (float64).
        end: Offset in seconds (float64), always > start.
    """

    pitch: np.ndarray
    velocity: np.ndarray
    start: np.ndarray
    end: np.ndarray

    def __len__(self) -> int:
        return len(self.pitch)

    @property
    def duration(self) -> float:
        """Seconds from time zero to the last offset (0.0 when empty)."""
        return float(self.end.max()) if len(self) else 0.0

    @staticmethod
    def from_arrays(pitch, velocity, start, end) -> Notes:
        """Build sorted `Notes` from any array-likes of equal length."""
        pitch = np.asarray(pitch, dtype=np.int16)
        velocity = np.asarray(velocity, dtype=np.int16)
        start = np.asarray(start, dtype=np.float64)
        end = np.asarray(end, dtype=np.float64)
        order = np.lexsort((pitch, start))
        return Notes(pitch[order], velocity[order], start[order], end[order])

    def window(self, start: float, end: float | None = None) -> Notes:
        """The notes with onsets in [start, end), shifted to begin at time 0.

        Onsets within 1 ns before `start` count as at `start` (times decoded
        from 10 ms steps carry float rounding). With `end`, offsets past it are
        cut there.

        Args:
            start: Seconds where the window begins.
            end: Seconds where it ends (None: after the last note).

        Returns:
            The window's notes.
        """
        keep = self.start >= start - 1e-9
        stop = self.end
        if end is not None:
            keep &= self.start < end
            stop = np.minimum(self.end, end)
        return Notes.from_arrays(self.pitch[keep], self.velocity[keep],
                                 np.maximum(self.start[keep] - start, 0.0), stop[keep] - start)

    def shifted(self, seconds: float) -> Notes:
        """The same notes `seconds` later."""
        return Notes(self.pitch, self.velocity, self.start + seconds, self.end + seconds)

    @staticmethod
    def concatenate(*parts: Notes) -> Notes:
        """All notes of several parts as one (sorted again)."""
        return Notes.from_arrays(*(np.concatenate([getattr(part, name) for part in parts])
                                   for name in ("pitch", "velocity", "start", "end")))

    @staticmethod
    def empty() -> Notes:
        """No notes."""
        return Notes.from_arrays([], [], [], [])
