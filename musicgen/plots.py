"""Pictures for people: a piano roll of seed + continuation, and the sampler's confidence.

Figures are built with matplotlib's object API (no pyplot state machine), so
concurrent requests in the app never share a figure.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from musicgen.notes import Notes

SEED_COLOUR = "#5b7db1"
CONTINUATION_COLOUR = "#e0823d"


def piano_roll(notes: Notes, prompt_end: float, path: str | os.PathLike,
               title: str = "") -> Path:
    """Draw notes as bars (pitch over time), the seed and the continuation in two colours.

    Args:
        notes: All notes of the clip.
        prompt_end: Seconds where the continuation starts (0: all continuation).
        path: PNG to write.
        title: Optional title.

    Returns:
        The PNG's path.
    """
    figure, axis = _figure(height=3.2)
    is_seed = notes.start < prompt_end - 1e-9
    for mask, colour, label in ((is_seed, SEED_COLOUR, "seed"),
                                (~is_seed, CONTINUATION_COLOUR, "continuation")):
        if not mask.any():
            continue
        start, end, pitch = notes.start[mask], notes.end[mask], notes.pitch[mask]
        alpha = 0.35 + 0.65 * notes.velocity[mask] / 127
        boxes = [((s, p - 0.4), (e, p - 0.4), (e, p + 0.4), (s, p + 0.4))
                 for s, e, p in zip(start, end, pitch, strict=True)]
        colours = np.zeros((len(boxes), 4))
        colours[:] = _rgb(colour) + (1.0,)
        colours[:, 3] = alpha
        axis.add_collection(PolyCollection(boxes, facecolors=colours, edgecolors="none",
                                           label=label))
    if prompt_end > 0:
        axis.axvline(prompt_end, color="#333333", linewidth=1, linestyle="--")
    if len(notes):
        axis.set_xlim(0, max(notes.end.max(), prompt_end) + 0.2)
        axis.set_ylim(notes.pitch.min() - 2, notes.pitch.max() + 2)
        axis.legend(loc="upper right", fontsize=8)
    axis.set_xlabel("seconds")
    axis.set_ylabel("MIDI pitch")
    return _save(figure, axis, title, path)


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
    axis.plot(steps, entropy, color="#5b7db1", linewidth=0.8, label="entropy (nats)")
    axis.set_xlabel("generated event")
    axis.set_ylabel("entropy (nats)", color="#5b7db1")
    twin = axis.twinx()
    twin.plot(steps, chosen_probability, color="#e0823d", linewidth=0.6, alpha=0.8,
              label="p(chosen event)")
    twin.set_ylim(0, 1.02)
    twin.set_ylabel("p(chosen event)", color="#e0823d")
    return _save(figure, axis, title, path)


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


def _rgb(hex_colour: str) -> tuple[float, float, float]:
    value = hex_colour.lstrip("#")
    return tuple(int(value[i:i + 2], 16) / 255 for i in (0, 2, 4))
