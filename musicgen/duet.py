"""A duet: a person plays a phrase, the model answers, and so on, on one clock.

The page keeps the clock (seconds since the duet began) and sends each of
the player's phrases when they pause; the answer continues everything played
so far, the player's and the model's, as a seed MIDI of `PROMPT_SECONDS`.
The duet itself is plain data (`Duet`, JSON-able, kept per browser session by
the app), so the server holds the model's part: a page cannot rewrite what
the model played.

    duet = Duet()
    duet = duet.with_phrase(notes_from_page(rows), at=4.2)
    answer = answer_duet(model, duet, settings)        # a compose.Candidate
    duet = duet.with_answer(answer, at=4.2)
    write_duet_midi(duet, "duet.mid")                  # both parts, each answer's recipe
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pretty_midi

from musicgen import compose
from musicgen.errors import MidiError
from musicgen.midi import notes_to_pretty_midi
from musicgen.notes import Notes
from musicgen.played import MAX_PLAYED_NOTES, MAX_PLAYED_SECONDS, PLAYED_TEXT, notes_to_rows
from musicgen.prompt import prompt_from_notes
from musicgen.recipe import recipe_text
from musicgen.settings import Settings

PROMPT_SECONDS = 10.0  # what the model hears of the duet: as much as a default seed MIDI
PLAYER, MODEL = "you", "model"
MAX_ANSWER_DELAY_S = 30.0  # an answer begins to sound this long after it was asked for, at most


@dataclass(frozen=True)
class Turn:
    """One turn: whose, its notes as the page's rows on the duet's clock, and for an
    answer its recipe (`musicgen.recipe`), where it was asked for (`asked`) and where
    it begins now (`began`: moved there when the page says where it played it)."""

    who: str
    rows: list[list]
    recipe: dict | None = None
    asked: float = 0.0
    began: float = 0.0

    @property
    def notes(self) -> Notes:
        if not self.rows:
            return Notes.empty()
        pitch, velocity, start, end = np.asarray(self.rows, dtype=np.float64).T
        return Notes.from_arrays(pitch, velocity, start, end)

    @property
    def start(self) -> float:
        """Where it begins on the duet's clock (an answer without notes: where it was)."""
        if self.who == MODEL:
            return self.began
        return float(self.rows[0][2]) if self.rows else 0.0


@dataclass(frozen=True)
class Duet:
    """The turns so far, oldest first."""

    turns: tuple[Turn, ...] = field(default_factory=tuple)

    @property
    def notes(self) -> Notes:
        """Everything played, both parts, as one."""
        return Notes.concatenate(Notes.empty(), *(turn.notes for turn in self.turns))

    @property
    def note_count(self) -> int:
        return sum(len(turn.rows) for turn in self.turns)

    def with_phrase(self, phrase: Notes) -> Duet:
        """The duet with the player's next phrase (times on the duet's clock).

        Raises:
            MidiError: The phrase starts before the player's previous one did, or
                the duet would pass `MAX_PLAYED_NOTES` or `MAX_PLAYED_SECONDS`.
        """
        if not len(phrase):
            raise MidiError("play a phrase first: the model answers what you play")
        mine = [turn for turn in self.turns if turn.who == PLAYER]
        if mine and phrase.start[0] < mine[-1].notes.start[-1]:
            raise MidiError("that phrase starts before your last one; the duet's clock "
                            "only runs forward. Press Clear to begin a new duet")
        if self.note_count + len(phrase) > MAX_PLAYED_NOTES or phrase.duration > MAX_PLAYED_SECONDS:
            raise MidiError(f"this duet is as long as one can be ({MAX_PLAYED_NOTES:,} notes, "
                            f"{MAX_PLAYED_SECONDS / 60:.0f} minutes); download it, then press "
                            "Clear to begin a new one")
        return replace(self, turns=(*self.turns, Turn(PLAYER, notes_to_rows(phrase))))

    def with_answer(self, answer: compose.Candidate, at: float) -> Duet:
        """The duet with the model's answer, placed at `at` on its clock until the page
        says where it began to play it (`heard_from`)."""
        return replace(self, turns=(*self.turns, Turn(MODEL, notes_to_rows(answer.notes, at),
                                                      answer.recipe, at, at)))

    def heard_from(self, turn: int, seconds: float) -> Duet:
        """The duet with answer `turn` (its index in `turns`) moved to where the page
        began to play it. Saying it again moves it to the same place.

        Raises:
            MidiError: `turn` is no answer, or `seconds` lies before it was asked for or
                more than `MAX_ANSWER_DELAY_S` after.
        """
        answer = self._answer(turn)
        if not answer.asked <= seconds <= answer.asked + MAX_ANSWER_DELAY_S:
            raise MidiError("the page's clock does not match the duet's: press Clear to "
                            "begin a new duet")
        shift = seconds - answer.began
        rows = [[p, v, round(s + shift, 3), round(e + shift, 3)] for p, v, s, e in answer.rows]
        return self._with(turn, replace(answer, rows=rows, began=seconds))

    def stopped_at(self, turn: int, seconds: float) -> Duet:
        """The duet with answer `turn` cut `seconds` after it began: the player stopped
        it there, so what follows was never heard.

        Raises:
            MidiError: `turn` is no answer.
        """
        answer = self._answer(turn)
        cut = answer.began + max(0.0, seconds)
        rows = [[p, v, s, min(e, cut)] for p, v, s, e in answer.rows if s < cut]
        return self._with(turn, replace(answer, rows=rows))

    def _answer(self, turn: object) -> Turn:
        if (not isinstance(turn, int) or isinstance(turn, bool)
                or not 0 <= turn < len(self.turns) or self.turns[turn].who != MODEL):
            raise MidiError("the page named an answer this duet does not have: press Clear "
                            "to begin a new duet")
        return self.turns[turn]

    def _with(self, index: int, turn: Turn) -> Duet:
        return replace(self, turns=(*self.turns[:index], turn, *self.turns[index + 1:]))


def answer_duet(model: compose.LoadedModel, duet: Duet, settings: Settings,
                prompt_seconds: float = PROMPT_SECONDS) -> compose.Candidate:
    """The model's answer to the duet so far: `settings.seconds` of music that continue
    its last `prompt_seconds`, starting at once (times from 0: the silence the model
    would begin with is left out, the player's pause has already passed).

    Raises:
        MidiError: Nothing has been played yet.
    """
    notes = duet.notes
    if not len(notes):
        raise MidiError("play a phrase first: the model answers what you play")
    # The first onset of the last `prompt_seconds`; or, after one long held note,
    # the last onset there is.
    recent = notes.start[notes.start >= float(notes.end.max()) - prompt_seconds]
    start = float(recent[0]) if len(recent) else float(notes.start.max())
    prompt = prompt_from_notes(notes, prompt_seconds, f"played:duet turn {len(duet.turns)}",
                               start=start)
    (answer,) = compose.compose(model, prompt, settings.but(n=1, include_prompt=False))
    if len(answer.notes):
        answer.notes = answer.notes.shifted(-float(answer.notes.start[0]))
    return answer


def write_duet_midi(duet: Duet, path: str | os.PathLike) -> Path:
    """Both parts as one MIDI file: the player's and the model's on two piano tracks,
    each answer's recipe as a text event where it began."""
    midi = pretty_midi.PrettyMIDI()
    for who, name in ((PLAYER, "You"), (MODEL, "musicgen")):
        part = Notes.concatenate(Notes.empty(), *(t.notes for t in duet.turns if t.who == who))
        instrument = notes_to_pretty_midi(part).instruments[0]
        instrument.name = name
        midi.instruments.append(instrument)
    midi.text_events.append(pretty_midi.Text(PLAYED_TEXT + " (a duet with musicgen)", 0.0))
    for turn in duet.turns:
        if turn.recipe is not None:
            midi.text_events.append(pretty_midi.Text(recipe_text(turn.recipe), turn.start))
    path = Path(path)
    midi.write(str(path))
    return path
