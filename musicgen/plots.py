"""Pictures for people, as SVG: the piano roll of seed + continuation (with the app's
playback cursor), the sampler's confidence, and the listening test's leaderboard.

SVG written as text, not matplotlib: the app needs no plotting library (with
its fonts, 65 MB of the app's install), a browser draws SVG sharply at any
size, and concurrent requests share nothing.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
import pretty_midi

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
        path: SVG file to write.
        title: Optional title.

    Returns:
        The SVG's path.
    """
    entropy = np.asarray(entropy, np.float64)
    chosen_probability = np.asarray(chosen_probability, np.float64)
    width, height, left, right, top, bottom = 900.0, 280.0, 58.0, 62.0, 34.0, 40.0
    inner_width, inner_height = width - left - right, height - top - bottom
    steps = max(len(entropy) - 1, 1)
    top_entropy = max(1.0, float(np.ceil(entropy.max()))) if len(entropy) else 1.0

    def x(step: np.ndarray) -> np.ndarray:
        return left + np.asarray(step) / steps * inner_width

    def y(fraction: np.ndarray) -> np.ndarray:
        return top + (1 - np.asarray(fraction)) * inner_height

    parts = [_svg_open(width, height, "confidence of the sampler"),
             f'<rect x="{left:g}" y="{top:g}" width="{inner_width:g}" '
             f'height="{inner_height:g}" fill="#fafafa" stroke="#ddd"/>']
    for k in range(5):  # four intervals on both axes
        level = y(k / 4)
        parts.append(f'<line x1="{left:g}" x2="{width - right:g}" y1="{level:.1f}" '
                     f'y2="{level:.1f}" stroke="#eee"/>')
        parts.append(_text(left - 6, level + 4, f"{top_entropy * k / 4:g}", SEED_COLOUR, "end"))
        parts.append(_text(width - right + 6, level + 4, f"{k / 4:g}", CONTINUATION_COLOUR))
    for tick in _ticks(steps):
        parts.append(_text(float(x(tick)), height - bottom + 16, str(tick), "#777", "middle"))
    parts.append(_text(left + inner_width / 2, height - 6, "generated event", "#555", "middle"))
    parts.append(_text(12, top - 12, "entropy (nats)", SEED_COLOUR))
    parts.append(_text(width - 12, top - 12, "p(chosen event)", CONTINUATION_COLOUR, "end"))
    # Hundreds of events per clip: each step as a faint dot, and the trend as
    # a running mean over CONFIDENCE_WINDOW events (a raw line is a solid wall).
    positions = x(np.arange(len(entropy)))
    for values, scale, colour in ((entropy, top_entropy, SEED_COLOUR),
                                  (chosen_probability, 1.0, CONTINUATION_COLOUR)):
        heights = y(np.clip(values / scale, 0, 1))
        parts.append(f'<g fill="{colour}" fill-opacity="0.25">' + "".join(
            f'<circle cx="{a:.1f}" cy="{b:.1f}" r="1.3"/>' for a, b in zip(
                positions, heights, strict=True)) + "</g>")
        trend = y(np.clip(_running_mean(values) / scale, 0, 1))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                     + " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(positions, trend, strict=True))
                     + '"/>')
    parts.append(_text(width / 2, top - 12, title, "#222", "middle", size=13))
    parts.append(_text(width - right, height - bottom + 30,
                       f"lines: running mean over {CONFIDENCE_WINDOW} events", "#777", "end"))
    parts.append("</svg>")
    path = Path(path)
    path.write_text("".join(parts), encoding="utf-8")
    return path


def leaderboard_chart(rows: list[dict], title: str, path: str | os.PathLike) -> Path:
    """Each condition's rating with its 95% interval, best first, as an SVG.

    Args:
        rows: Dicts with condition, rating, ci ([low, high] or None) and votes.
        title: Above the chart.
        path: SVG file to write.

    Returns:
        The SVG's path.
    """
    width, left, right, row_height, top = 640.0, 190.0, 30.0, 34.0, 40.0
    height = top + row_height * max(1, len(rows)) + 44
    ends = [value for row in rows for value in (row["ci"] or [row["rating"]] * 2)] + [1000.0]
    low, high = min(ends), max(ends)
    margin = max(20.0, 0.08 * (high - low))
    low, high = low - margin, high + margin

    def x(rating: float) -> float:
        return left + (rating - low) / (high - low) * (width - left - right)

    bottom = top + row_height * max(1, len(rows))
    parts = [_svg_open(width, height, "leaderboard"),
             _text(width / 2, 22, title, "#222", "middle", size=13),
             f'<line x1="{x(1000):.1f}" x2="{x(1000):.1f}" y1="{top - 6:g}" y2="{bottom:g}" '
             'stroke="#ccc"/>']
    for k, row in enumerate(rows):
        middle = top + (k + 0.5) * row_height
        parts.append(_text(left - 10, middle + 4, f"{row['condition']} ({row['votes']})",
                           "#333", "end"))
        if row["ci"]:
            a, b = x(row["ci"][0]), x(row["ci"][1])
            parts.append(f'<path d="M{a:.1f} {middle:.1f}H{b:.1f}M{a:.1f} {middle - 6:.1f}'
                         f'V{middle + 6:.1f}M{b:.1f} {middle - 6:.1f}V{middle + 6:.1f}" '
                         f'stroke="{SEED_COLOUR}" stroke-width="1.5" fill="none"/>')
        parts.append(f'<circle cx="{x(row["rating"]):.1f}" cy="{middle:.1f}" r="5" '
                     f'fill="{SEED_COLOUR}"/>')
    spacing = next(step for step in (25, 50, 100, 200, 500, 1000) if (high - low) / step <= 6)
    for tick in np.arange(np.ceil(low / spacing) * spacing, high, spacing):  # round numbers
        parts.append(_text(x(tick), bottom + 18, f"{tick:.0f}", "#777", "middle"))
    parts.append(_text(left + (width - left - right) / 2, bottom + 36,
                       "Bradley-Terry rating (Elo scale), 95% bootstrap interval", "#555",
                       "middle"))
    parts.append("</svg>")
    path = Path(path)
    path.write_text("".join(parts), encoding="utf-8")
    return path


def _svg_open(width: float, height: float, label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:g} {height:g}" '
            f'width="{width:g}" height="{height:g}" role="img" aria-label="{label}" '
            'font-family="sans-serif">')


def _text(x: float, y: float, words: str, colour: str, anchor: str = "start",
          size: int = 11) -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{colour}" '
            f'text-anchor="{anchor}">{html.escape(words)}</text>')


def _ticks(steps: int) -> list[int]:
    """About six round numbers from 0 to `steps`."""
    raw = steps / 6
    magnitude = 10 ** int(np.floor(np.log10(max(raw, 1))))
    spacing = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return list(range(0, steps + 1, int(spacing)))


def _running_mean(values: np.ndarray) -> np.ndarray:
    """Mean over a centred window of CONFIDENCE_WINDOW (shorter at the ends)."""
    values = np.asarray(values, np.float64)
    if not len(values):
        return values
    window = min(CONFIDENCE_WINDOW, len(values))
    kernel = np.ones(window)
    return (np.convolve(values, kernel, "same") / np.convolve(np.ones(len(values)), kernel,
                                                             "same"))


def roll_label(notes: Notes, prompt_end: float, seconds: float) -> str:
    """What a piano roll shows, in words, for a screen reader."""
    if not len(notes):
        return f"Piano roll: no notes in {seconds:.0f} s"
    low, high = (pretty_midi.note_number_to_name(int(p)) for p in (notes.pitch.min(),
                                                                    notes.pitch.max()))
    where = (f"the seed to {prompt_end:.0f} s, the continuation after it" if prompt_end > 0
             else "all of it continuation")
    return f"Piano roll: {len(notes)} notes over {seconds:.0f} s, {low} to {high}; {where}"


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
    label = roll_label(notes, prompt_end, seconds)
    parts = [f'<svg class="mg-roll" viewBox="0 0 {width:g} {height:g}" '
             f'preserveAspectRatio="none" role="img" aria-label="{label}" '
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
