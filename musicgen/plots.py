"""Pictures for people: the piano roll of seed + continuation (SVG, for the app's
player) and the sampler's confidence (PNG).

Figures are built with matplotlib's object API (no pyplot state machine), so
concurrent requests in the app never share a figure.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from musicgen.notes import Notes

SEED_COLOUR = "#5b7db1"
CONTINUATION_COLOUR = "#e0823d"
CONFIDENCE_WINDOW = 25


def confidence(entropy: np.ndarray, chosen_probability: np.ndarray, path: str | os.PathLike,
               title: str = "") -> Path:
    """Plot per-step entropy and the chosen token's probability of one generation.

    Args:
        entropy: Nats per step (of the model's own distribution).
        chosen_probability: Probability of the token chosen at each step.
        path: PNG to write.
        title: Optional title.

    Returns:
        The PNG's path.
    """
    figure, axis = _figure(height=3.0)
    steps = np.arange(len(entropy))
    # Hundreds of events per clip: each step as a faint dot, and the trend as
    # a running mean over CONFIDENCE_WINDOW events (a raw line is a solid wall).
    axis.scatter(steps, entropy, s=2, color=SEED_COLOUR, alpha=0.25, linewidths=0)
    axis.plot(steps, _running_mean(entropy), color=SEED_COLOUR, linewidth=2,
              label="entropy (nats)")
    axis.set_xlabel("generated event")
    axis.set_ylabel("entropy (nats)", color=SEED_COLOUR)
    twin = axis.twinx()
    twin.scatter(steps, chosen_probability, s=2, color=CONTINUATION_COLOUR, alpha=0.25,
                 linewidths=0)
    twin.plot(steps, _running_mean(chosen_probability), color=CONTINUATION_COLOUR,
              linewidth=2, label="p(chosen event)")
    twin.set_ylim(0, 1.02)
    twin.set_ylabel("p(chosen event)", color=CONTINUATION_COLOUR)
    axis.set_title(f"running mean over {CONFIDENCE_WINDOW} events", fontsize=8, loc="right")
    return _save(figure, axis, title, path)


def _running_mean(values: np.ndarray) -> np.ndarray:
    """Mean over a centred window of CONFIDENCE_WINDOW (shorter at the ends)."""
    values = np.asarray(values, np.float64)
    if not len(values):
        return values
    window = min(CONFIDENCE_WINDOW, len(values))
    kernel = np.ones(window)
    return (np.convolve(values, kernel, "same") / np.convolve(np.ones(len(values)), kernel,
                                                             "same"))


def piano_roll_svg(notes: Notes, prompt_end: float, seconds: float,
                   pitch_range: tuple[int, int] | None = None) -> str:
    """The piano roll as an inline SVG, with a playback cursor line (class `mg-cursor`).

    The x axis runs from 0 to `seconds` (the audio's length, so that a cursor
    at currentTime / duration of the width sits on the note being heard).

    Args:
        notes: All notes of the clip.
        prompt_end: Seconds where the continuation starts (0: all continuation).
        seconds: Length of the time axis.
        pitch_range: (lowest, highest) MIDI pitch shown; give clips that are
            shown side by side the same one. None: the notes' own range.

    Returns:
        SVG markup.
    """
    low, high = pitch_range or ((int(notes.pitch.min()), int(notes.pitch.max())) if len(notes)
                                else (48, 72))
    low, high = low - 1, high + 1
    width, height, left, bottom = 1000.0, 240.0, 34.0, 16.0
    x_scale = (width - left) / max(seconds, 1e-6)
    y_scale = (height - bottom) / (high - low + 1)
    parts = [f'<svg class="mg-roll" viewBox="0 0 {width:g} {height:g}" '
             f'preserveAspectRatio="none" role="img" aria-label="piano roll" '
             f'data-left="{left:g}" data-width="{width:g}" data-seconds="{seconds:.3f}">',
             f'<rect x="{left:g}" y="0" width="{width - left:g}" height="{height - bottom:g}" '
             'fill="#fafafa"/>']
    for pitch in range(low, high + 1):
        if pitch % 12 == 0:  # a line and a name at every C
            y = (high - pitch + 1) * y_scale
            parts.append(f'<line x1="{left:g}" x2="{width:g}" y1="{y:.1f}" y2="{y:.1f}" '
                         'stroke="#e3e3e3"/>')
            parts.append(f'<text x="2" y="{y:.1f}" font-size="11" fill="#777">C{pitch // 12 - 1}'
                         '</text>')
    for tick in range(0, int(seconds) + 1, 5):
        parts.append(f'<text x="{left + tick * x_scale:.1f}" y="{height - 3:g}" font-size="11" '
                     f'fill="#777">{tick}s</text>')
    for start, end, pitch, velocity in zip(notes.start, notes.end, notes.pitch, notes.velocity,
                                           strict=True):
        colour = SEED_COLOUR if start < prompt_end - 1e-9 else CONTINUATION_COLOUR
        parts.append(f'<rect x="{left + start * x_scale:.1f}" '
                     f'y="{(high - pitch) * y_scale:.1f}" '
                     f'width="{max((end - start) * x_scale, 1.0):.1f}" '
                     f'height="{max(y_scale - 0.5, 1.0):.1f}" fill="{colour}" '
                     f'fill-opacity="{0.35 + 0.65 * velocity / 127:.2f}"/>')
    if prompt_end > 0:
        x = left + prompt_end * x_scale
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height - bottom:g}" '
                     'stroke="#333" stroke-dasharray="4 3"/>')
    parts.append(f'<line class="mg-cursor" x1="{left:g}" x2="{left:g}" y1="0" '
                 f'y2="{height - bottom:g}" stroke="#c0392b" stroke-width="2"/>')
    parts.append("</svg>")
    return "".join(parts)


def _figure(height: float):
    figure = Figure(figsize=(9, height), dpi=90)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _save(figure: Figure, axis, title: str, path: str | os.PathLike) -> Path:
    if title:
        axis.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    return Path(path)
