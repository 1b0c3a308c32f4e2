"""What the demo does, without any UI: the app only wires widgets to a `Studio`.

A `Studio` is made once at start-up. It loads every checkpoint and the
renderer, and never changes afterwards; each request gets its own output
folder, so concurrent users share nothing mutable but the renderer (which
serialises its renders on a lock), the ratings database (one connection
behind a lock) and the list of MAESTRO test files (read once, on first use).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import string
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musicgen import compose
from musicgen.audio import LiveRender, Renderer, soundfont_path, write_audio
from musicgen.batcher import MAX_ROWS
from musicgen.controls import detect_key
from musicgen.duet import Duet, answer_duet, write_duet_midi
from musicgen.errors import MidiError, UserError
from musicgen.examples import example_names
from musicgen.leaderboard import MIN_VOTES, chart, for_the_public, format_summary, summarise
from musicgen.listening import (
    MIN_LISTEN_SECONDS,
    Caps,
    ListeningTest,
    Reveal,
    ServedPair,
    pool_dir,
)
from musicgen.midi import notes_to_pretty_midi, read_midi
from musicgen.notes import Notes
from musicgen.outputs import write_candidate
from musicgen.played import is_finite_number, notes_from_page, notes_to_rows, write_played_midi
from musicgen.plots import confidence, piano_roll_svg
from musicgen.prompt import (
    Prompt,
    choose_prompt,
    default_start,
    prompt_from_notes,
    read_seed_file_parts,
)
from musicgen.ratings import RatingsStore
from musicgen.recipe import recipe_summary, without_tokens
from musicgen.resources import checkpoint_dir as default_checkpoint_dir
from musicgen.sample import Stopped
from musicgen.sample_bank import SampleBank, make_sample_bank
from musicgen.sample_report import CARD_FEATURES, current_samples
from musicgen.samples import FRECHET_FEATURES
from musicgen.settings import Settings, to_number

KEY_FIT_TO_SAY = 0.6  # the correlation with a key profile from which an upload's key is named
DUET_ANSWER_SECONDS = (1.0, 15.0)  # the longest answer: a turn, not a piece
# The leaderboard is recomputed at most this often, and only when votes change.
RESULTS_REFRESH_S = 5.0

OUTPUT_TTL_S = 3600.0
REMEMBERED_BROWSERS = 5000  # browsers whose last result a reload brings back (a few KB each)
# Old request folders and listening pairs never voted on are cleared this often, by a
# thread of their own: done in every request, the clean-up took 422 ms at 50,000 folders.
PRUNE_INTERVAL_S = 60.0
PAIR_TTL_S = 24 * 3600.0  # a pair not voted on within a day is forgotten
# Outputs plus the UI's cache may hold this much; beyond it the oldest go first (a
# maximum Generate writes about 6 MB, so this is some 170 of them).
DISK_CAP_BYTES = 1 << 30
DISK_MIN_AGE_S = 600.0
# What every clip goes to the browser as: mono MP3, about 0.2 MB for a 30 s
# continuation with its 10 s seed, where the WAV was 7 MB (musicgen.audio).
CLIP_SUFFIX = ".mp3"
# How the models answer, in words, by kind (BENCHMARKS.md, 2-core machine: a
# 30 s clip in about 1 s from the LSTM and 2.5 s from the Transformer).
MODEL_SPEED = {"lstm": "quickest", "transformer": "a little slower"}


@dataclass(frozen=True)
class Clip:
    """One playable result for the UI: files, a piano roll and words.

    Attributes:
        title: What to call it.
        audio: Audio file (`CLIP_SUFFIX`).
        midi: MIDI file (with the recipe, for generated clips).
        roll_svg: The piano roll with a playback cursor (`plots.piano_roll_svg`).
        seconds: Length of the audio.
        stats: One line on the notes (and a warning when there are almost none).
        recipe: The recipe in one line.
        recipe_data: The recipe without its tokens (what a rating stores).
        engine_note: Why the audio did not come from FluidSynth, if it did not.
    """

    title: str
    audio: str
    midi: str
    roll_svg: str
    seconds: float
    stats: str
    recipe: str
    recipe_data: dict
    engine_note: str = ""


@dataclass(frozen=True)
class SeedFile:
    """What the UI shows about an uploaded seed MIDI file."""

    seconds: float
    notes: int
    default_start: float
    summary: str


@dataclass(frozen=True)
class DuetTurn:
    """What a duet turn gives the page: the duet so far, the answer's notes as the page's
    rows (times from the answer's start), and the MIDI file of both parts."""

    duet: Duet
    answer: list[list]
    midi: str
    recipe: str


class Studio:
    """Loaded models, the renderer, the ratings, and the demo's operations.

    Requests may come from many threads at once (`concurrent_requests` of
    them): each model's `Batcher` samples those that overlap as one batch.

    Args:
        checkpoint_dir: Folder of checkpoint folders (default: `musicgen.resources`).
        output_dir: Where per-request folders go (old ones are pruned); the app
            serves this folder, so nothing private goes here.
        ratings_path: The ratings database (default: `musicgen.ratings`'s rule).
        maestro_dir: Optional MAESTRO tree for human reference continuations.
        min_listen_s: Seconds each clip of a listening-test pair must play
            before a vote (tests use less).
        caps: Listening-test pairs and votes allowed per listener and address.
        require_account: Take listening-test votes only from signed-in listeners.
    """

    def __init__(self, checkpoint_dir: str | os.PathLike | None = None,
                 output_dir: str | os.PathLike | None = None,
                 ratings_path: str | os.PathLike | None = None,
                 maestro_dir: str | os.PathLike | None = None,
                 min_listen_s: float = MIN_LISTEN_SECONDS, caps: Caps | None = None,
                 require_account: bool = False):
        found = compose.find_checkpoints(checkpoint_dir)
        if not found:
            raise UserError(f"there are no checkpoints in "
                            f"{checkpoint_dir or default_checkpoint_dir()}")
        self.models = {name: compose.load_model(path, name) for name, path in found.items()}
        # A synth per core: requests that finish sampling together (a batch)
        # render at once instead of one after another.
        self.renderer = Renderer(synths=os.cpu_count() or 1)
        self.output_dir = Path(output_dir or Path(tempfile.gettempdir()) / "musicgen-outputs")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.ratings = RatingsStore(ratings_path)
        self.listening = ListeningTest(self.ratings, pool_dir(self.ratings.path), min_listen_s,
                                       caps=caps or Caps(), require_account=require_account)
        self.refuse_to_serve_the_database([*self.served_dirs(), self.listening.audio_root])
        old_ratings = self.output_dir / "ratings.jsonl"  # before the database, the app wrote here
        if old_ratings.is_file():
            self.ratings.import_jsonl(old_ratings)
            old_ratings.unlink()  # it sat in a served folder; its rows are in the database now
        self.maestro_dir = Path(maestro_dir) if maestro_dir else None
        self._maestro_tests: list[Path] | None = None
        self._maestro_titles: dict[Path, str] = {}
        self._maestro_lock = threading.Lock()
        self.examples = example_names()
        self.concurrent_requests = MAX_ROWS
        self._results: tuple | None = None  # ((pool, votes), when, what `results` shows)
        self._results_lock = threading.Lock()
        self.disk_cap_bytes = DISK_CAP_BYTES
        self.cache_dirs: list[Path] = []
        self._pruner: threading.Thread | None = None
        self._stop_pruning = threading.Event()
        self._open_pages: dict[str, threading.Event] = {}  # page (session) -> its stop
        self._pages_lock = threading.Lock()
        self.requests_stopped = 0  # requests stopped because their page went away
        self._last_results: OrderedDict[str, list[Clip]] = OrderedDict()  # browser -> clips
        self._shared: OrderedDict[str, list[Clip]] = OrderedDict()  # share token -> clips
        # Kept beside the outputs, not in them: the pruning there would delete it.
        self.sample_dir = self.output_dir.with_name(self.output_dir.name + "-piano")
        self._sample_bank: SampleBank | None = None
        self._sample_bank_made = threading.Event()

    # --- choices for the UI ---

    def model_names(self) -> list[str]:
        """Shipped models, the default (LSTM) first."""
        return list(self.models)

    def display_name(self, name: str) -> str:
        """A model's name for people: its kind ("LSTM", "Transformer"), or its folder's name."""
        kind = self.models[name].card.get("config", {}).get("kind", "") if (
            name in self.models) else ""
        return {"lstm": "LSTM", "transformer": "Transformer"}.get(kind, name)

    def takes_controls(self) -> bool:
        """Whether any model reads a key, register and density to keep (`musicgen.controls`)."""
        return any(model.model.config.control_input for model in self.models.values())

    def model_choices(self) -> list[tuple[str, str]]:
        """(label, name) per model: the kind, and its speed and quality in words."""
        scores = {name: model.card.get("evaluation", {}).get("test", {}).get("model", {})
                  .get("nll") for name, model in self.models.items()}
        known = [score for score in scores.values() if score is not None]
        choices = []
        for name, model in self.models.items():
            kind = model.card.get("config", {}).get("kind", "")
            words = [MODEL_SPEED.get(kind, "")]
            if known and len(known) > 1 and scores[name] == min(known):
                words.append("closest to real playing")
            label = f"{kind.upper() if kind == 'lstm' else kind.title()}: " + ", ".join(
                word for word in words if word)
            choices.append((label if kind else name, name))
        return choices

    def soundfont_choices(self) -> list[tuple[str, str]]:
        """(label, path) per soundfont found, the default first."""
        return [(f"{path.stem.replace('_', ' ')} ({path.stat().st_size / 2**20:.0f} MB)",
                 str(path)) for path in self.renderer.soundfonts]

    def refuse_to_serve_the_database(self, folders: list[Path]) -> None:
        """Raise UserError if the ratings database (or its -wal, -shm) lies in a served folder.

        The app adds the folders its UI serves besides these (Gradio's temp folder).
        """
        for served in folders:
            if self.ratings.path.resolve().is_relative_to(Path(served).resolve()):
                raise UserError(f"the ratings database {self.ratings.path} would be "
                                f"downloadable from the app's folder {served}; keep it elsewhere "
                                "(MUSICGEN_RATINGS_DB) or move that folder")

    def served_dirs(self) -> list[Path]:
        """The folders the app may serve files from: only the per-request output folders."""
        return [self.output_dir]

    def cards(self) -> list[dict]:
        """The model cards, for the About tab."""
        return [model.card for model in self.models.values()]

    def samples_against_real(self) -> str:
        """Markdown for the About tab: each model's samples at today's default against real playing.

        From the cards' `evaluation.samples` (`evaluate-samples --write-card`),
        where `sample_report.current_samples` says they describe the page as it
        is. "" when no card has such numbers.
        """
        rows = []
        for card in self.cards():
            kept = current_samples(card)
            try:
                *differences, held = (kept["features"][name] for name in CARD_FEATURES)
                rows.append(f"| {card.get('name', '?')} | {kept['prompts']} | "
                            f"{kept['frechet']:.1f} ({kept['ceiling_frechet']:.1f}) | "
                            + " | ".join(f"{feature['d']:+.2f}" for feature in differences)
                            + f" | {held['mean']:.2%} ({held['real_mean']:.2%}) |")
            except (KeyError, TypeError, ValueError):  # none, written by hand, or a NaN
                continue
        if not rows:
            return ""
        return (f"Continuations of MAESTRO test-split prompts at this page's default setting, "
                f"against what the pianists played next: the Fréchet distance over "
                f"{len(FRECHET_FEATURES)} features (real playing against itself in brackets; "
                f"lower is closer), and the difference in standard deviations of the pianists' "
                f"(0 = the same) for three of them.\n\n"
                "| model | prompts | Fréchet distance (real) | notes per second (SD) | median "
                "note length (SD) | loudness (SD) | notes held 4 s or more (pianists) |\n"
                "|---|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n\n")

    # --- the seed MIDI ---

    def prompt(self, kind: str, example: str | None, upload: str | None,
               seconds: float | None, start: float | None = None) -> Prompt:
        """The prompt chosen in the UI (`musicgen.prompt.choose_prompt`).

        Raises:
            UserError: A missing or unusable upload, an unknown example, a bad length.
        """
        return choose_prompt(kind, example=example, path=upload, seconds=seconds, start=start)

    def seed_file(self, path: str, seconds: float) -> SeedFile:
        """How long an uploaded seed MIDI is, and where its excerpt starts by default.

        Raises:
            MidiError: The file cannot be used.
        """
        notes, parts = read_seed_file_parts(path)
        start = default_start(notes, seconds)
        minutes, rest = divmod(notes.duration, 60)
        merged = f"; {parts.text}" if parts.text else ""
        summary = (f"**{Path(path).name}**: {int(minutes)}:{rest:04.1f} long, {len(notes):,} "
                   f"notes{merged}.{_key_heard(notes)} The excerpt starts at {start:.0f} s by "
                   "default: a lively part, not the final bars.")
        return SeedFile(notes.duration, len(notes), start, summary)

    def played_seed(self, rows: object, seconds: float,
                    previous: str | None = None) -> tuple[str, str]:
        """Notes played in the page as a seed MIDI file, checked as an upload is.

        Args:
            rows: What the page sent (`musicgen.played.notes_from_page`).
            seconds: The excerpt's length, for the summary.
            previous: The file this page's playing was written to before: written
                again in its folder (the page sends its playing after every pause).

        Returns:
            The MIDI file's path and a line that says what was played.

        Raises:
            MidiError: What the page sent is not notes a person played.
        """
        notes = notes_from_page(rows)
        if not len(notes):
            raise MidiError("play something on the keyboard first")
        path = write_played_midi(notes, self._folder_for(previous) / "played.mid")
        heard = ("all of it" if notes.duration <= seconds
                 else f"its last {seconds:.0f} s (the excerpt length)")
        return str(path), (f"You played {len(notes):,} notes, {notes.duration:.1f} s."
                           f"{_key_heard(notes)} Generate continues {heard}.")

    def duet_turn(self, model_name: str, duet: Duet | None, phrase: object, settings: Settings,
                  turns: object, answered: object = None,
                  previous: str | None = None) -> DuetTurn:
        """The model's answer to the player's next phrase in a duet.

        Args:
            model_name: Which model answers.
            duet: The duet so far (None: a new one).
            phrase: The player's notes since the last answer, as the page sends them,
                on the duet's clock.
            settings: How the model plays; `seconds` is the answer's length.
            turns: How many turns the page knows of: they must be all there are (a
                page and its server out of step begin again, rather than mix turns).
            answered: `[turn, seconds]`: where on the duet's clock the page began to
                play answer `turn` (it is placed where it was asked for until then).
            previous: The duet's MIDI file so far (written again in its folder).

        Raises:
            UserError: A bad phrase or message, an answer length outside
                `DUET_ANSWER_SECONDS`, an unknown model.
        """
        low, high = DUET_ANSWER_SECONDS
        if not low <= settings.seconds <= high:
            raise UserError(f"an answer lasts {low:g} to {high:g} seconds, not "
                            f"{settings.seconds:g}")
        model = self._model(model_name)
        duet = _heard(_in_step(duet or Duet(), turns), answered)
        duet = duet.with_phrase(notes_from_page(phrase))
        asked_at = float(duet.turns[-1].notes.end.max())
        answer = answer_duet(model, duet, settings)
        duet = duet.with_answer(answer, asked_at)
        midi = write_duet_midi(duet, self._folder_for(previous) / "duet.mid")
        return DuetTurn(duet, notes_to_rows(answer.notes), str(midi),
                        recipe_summary(answer.recipe))

    def duet_stopped(self, duet: Duet | None, turns: object, answered: object,
                     seconds: float, previous: str | None = None) -> tuple[Duet, str | None]:
        """The duet with answer `answered[0]` cut `seconds` after it began (where the player
        stopped it), and its MIDI file; arguments as for `duet_turn`."""
        if duet is None:
            return Duet(), None
        if answered is None:
            raise UserError("the page did not say which answer it stopped; reload it")
        duet = _heard(_in_step(duet, turns), answered)
        duet = duet.stopped_at(answered[0], seconds)
        return duet, str(write_duet_midi(duet, self._folder_for(previous) / "duet.mid"))

    def _folder_for(self, previous: str | None) -> Path:
        """The folder of a file this page wrote before, if it is still kept (its time
        renewed); else a new one."""
        if previous:
            folder = Path(previous).resolve().parent
            if folder.parent == self.output_dir.resolve() and folder.is_dir():
                os.utime(folder)  # still in use: not pruned an hour after it was made
                return folder
        return self._request_folder()

    # --- what a browser last made ---

    def remember(self, browser: str, clips: list[Clip]) -> None:
        """Keep a browser's last result, so that a reload can show it again (`last_result`)."""
        with self._pages_lock:
            _keep_newest(self._last_results, browser, clips)

    def last_result(self, browser: str) -> list[Clip]:
        """The clips this browser generated last, while their files are kept (`OUTPUT_TTL_S`);
        none after that, or for a browser never seen."""
        with self._pages_lock:
            clips = self._last_results.get(browser, [])
        return clips if _kept(clips) else []

    def share(self, clips: list[Clip]) -> str:
        """A token that opens these clips for anyone who has it (`shared`), while their
        files are kept: the name of their request folder, random and not guessable."""
        token = Path(clips[0].audio).parent.name
        with self._pages_lock:
            _keep_newest(self._shared, token, clips)
        return token

    def shared(self, token: str) -> list[Clip]:
        """The clips `share` gave this token, while their files are kept (else none)."""
        with self._pages_lock:
            clips = self._shared.get(token, [])
        return clips if _kept(clips) else []

    # --- pages that go away ---

    def page_stop(self, page: str) -> threading.Event:
        """The event that `page_closed(page)` sets: work for that page stops when it is set."""
        with self._pages_lock:
            return self._open_pages.setdefault(page, threading.Event())

    def page_closed(self, page: str) -> None:
        """A page went away (closed or reloaded): stop what is being sampled for it. Measured
        before: a reload 3 s into a 120 s run left it writing files for 12 s more, and the
        next person's 30 s click took 3.3 s instead of 1.2 s."""
        with self._pages_lock:
            stop = self._open_pages.pop(page, None)
        if stop is not None:
            stop.set()

    @contextlib.contextmanager
    def _counting_stops(self) -> Iterator[None]:
        try:
            yield
        except Stopped:
            with self._pages_lock:
                self.requests_stopped += 1
            raise

    # --- the keyboard's sound ---

    def start_sample_bank(self) -> None:
        """Make the keyboard's piano samples in the background (`sample_bank` waits)."""
        def make() -> None:
            try:
                self._sample_bank = make_sample_bank(self.renderer, self.sample_dir)
            except Exception:
                logging.getLogger(__name__).exception("the keyboard's piano samples failed")
            finally:
                self._sample_bank_made.set()

        threading.Thread(target=make, name="sample-bank", daemon=True).start()

    def sample_bank(self, wait_s: float = 0.0) -> SampleBank | None:
        """The keyboard's piano samples: None until made, or where they cannot be."""
        self._sample_bank_made.wait(wait_s)
        return self._sample_bank

    def sample_bank_tried(self) -> bool:
        """Whether making the samples has ended, with a bank or without."""
        return self._sample_bank_made.is_set()

    def continuation_seed(self, clip: Clip, seconds: float) -> tuple[str, float]:
        """A generated clip as the next seed MIDI: (its MIDI file, the start of its last part)."""
        notes = read_midi(clip.midi)
        return clip.midi, max(0.0, notes.duration - seconds)

    def preview(self, prompt: Prompt, soundfont: str | None = None) -> str | None:
        """A WAV of the prompt's excerpt, for the preview player (None for silence)."""
        if not len(prompt.notes):
            return None
        path = (self._request_folder() / "seed-excerpt").with_suffix(CLIP_SUFFIX)
        return str(write_audio(path, self.renderer.render(notes_to_pretty_midi(prompt.notes),
                                                          soundfont), mono=True))

    # --- generating ---

    def generate_each(self, model_name: str, prompt: Prompt, settings: Settings,
                      soundfont: str | None = None,
                      on_progress: Callable[[float], None] | None = None,
                      stop: threading.Event | None = None,
                      ) -> Iterator[tuple[Clip, compose.Candidate]]:
        """Sample all candidates at once, then yield each as soon as its files are written.

        Args:
            stop: Set it to end the work at the next sampling step (`page_stop`).

        Raises:
            UserError: An unknown model or soundfont (checked before sampling).
            Stopped: `stop` was set.
        """
        model = self._model(model_name)
        soundfont_path(soundfont)
        folder = self._request_folder()
        # The first candidate alone, then the rest as one batch: the first is
        # heard after one candidate's time instead of all of them (the rest
        # share their weight reads). Each row keeps its own seed, so the notes
        # are those of one batch of n (tests/test_sample.py).
        # The first is also rendered while it is sampled (`LiveRender`): on a
        # second core that hides most of the render (BENCHMARKS.md, "Rendering
        # while sampling").
        title = self.display_name(model_name)
        share = 1 / settings.n
        with self._counting_stops(), self.renderer.live(soundfont) as live:
            (first,) = compose.compose(model, prompt, settings.but(n=1),
                                       on_progress=_part(on_progress, 0.0, share),
                                       on_music=lambda _, midi, final: live.advance(midi, final),
                                       stop=stop)
            clip = self._clip(first, folder, f"{title} #1", soundfont, None, live=live)
        yield clip, first
        if settings.n == 1:
            return
        with self._counting_stops():
            rest = compose.compose(model, prompt,
                                   settings.but(seed=settings.seed + 1, n=settings.n - 1),
                                   on_progress=_part(on_progress, share, 1.0), stop=stop)
        for candidate in rest:
            candidate.index += 1
            yield self._clip(candidate, folder, f"{title} #{candidate.index + 1}", soundfont,
                             None), candidate

    def on_one_axis(self, pairs: list[tuple[Clip, compose.Candidate]]) -> list[Clip]:
        """The clips of one request with their piano rolls redrawn on one pitch axis."""
        pitch_range = _pitch_range([candidate.notes for _, candidate in pairs])
        return [dataclasses.replace(clip, roll_svg=piano_roll_svg(
            candidate.notes, candidate.prompt_end, clip.seconds, pitch_range))
            for clip, candidate in pairs]

    def generate(self, model_name: str, prompt: Prompt, settings: Settings,
                 soundfont: str | None = None,
                 on_progress: Callable[[float], None] | None = None,
                 ) -> tuple[list[Clip], list[compose.Candidate]]:
        """All of `generate_each` at once: (clips, candidates)."""
        pairs = list(self.generate_each(model_name, prompt, settings, soundfont, on_progress))
        return [clip for clip, _ in pairs], [candidate for _, candidate in pairs]

    def compare(self, prompt: Prompt, settings: Settings, soundfont: str | None = None,
                on_progress: Callable[[float], None] | None = None,
                stop: threading.Event | None = None,
                human: tuple[Notes, Clip] | None = None) -> list[Clip]:
        """One candidate per model, same prompt, settings and variation, on one pitch axis.

        Args:
            human: A reference (its notes and clip, from `reference`) to put on
                the same axis and return last.
        """
        soundfont_path(soundfont)
        names = self.model_names()
        candidates = []
        for k, name in enumerate(names):
            def progress(fraction: float, k: int = k) -> None:
                if on_progress is not None:
                    on_progress((k + fraction) / len(names))
            with self._counting_stops():
                candidates += compose.compose(self.models[name], prompt, settings.but(n=1),
                                              progress, stop=stop)
        folder = self._request_folder()
        pitch_range = _pitch_range([c.notes for c in candidates] + ([human[0]] if human else []))
        clips = [self._clip(candidate, folder, name, soundfont, pitch_range)
                 for candidate, name in zip(candidates, names, strict=True)]
        if human:
            notes, clip = human
            clips.append(dataclasses.replace(clip, roll_svg=piano_roll_svg(
                notes, prompt.seconds, clip.seconds, pitch_range)))
        return clips

    def greedy_and_sampled(self, model_name: str, prompt: Prompt, settings: Settings,
                           soundfont: str | None = None) -> list[tuple[Clip, str]]:
        """The prompt continued greedily and by sampling, same variation, with confidence plots.

        The sampled clip uses the settings' temperature; where that is 0 (greedy
        itself) it uses the default temperature instead, and its title says so.

        Returns:
            [(greedy clip, its plot), (sampled clip, its plot)].
        """
        temperature = settings.temperature or Settings().temperature
        sampled_title = (f"sampled (temperature {temperature:g}"
                         + (", the default: yours is 0)" if not settings.temperature else ")"))
        candidates = [compose.compose(self._model(model_name), prompt,
                                      settings.but(temperature=value, n=1))[0]
                      for value in (0.0, temperature)]
        folder = self._request_folder()
        pitch_range = _pitch_range([c.notes for c in candidates])
        pairs = []
        for candidate, title in zip(candidates, ("greedy (temperature 0)", sampled_title),
                                    strict=True):
            clip = self._clip(candidate, folder, title, soundfont, pitch_range,
                              stem=title.split()[0])
            plot = confidence(candidate.entropy, candidate.chosen_probability,
                              folder / f"{title.split()[0]}-confidence.svg", title)
            pairs.append((clip, str(plot)))
        return pairs

    def confidence_plot(self, entropy, chosen_probability, title: str) -> str:
        """SVG of a candidate's per-step entropy and chosen probability."""
        path = self._request_folder() / "confidence.svg"
        return str(confidence(entropy, chosen_probability, path, title))

    def reference(self, piece, start, prompt_seconds: float,
                  seconds: float, soundfont: str | None = None,
                  ) -> tuple[Prompt, Clip, Notes]:
        """A MAESTRO test-split excerpt: its first part as the prompt, the rest as reference.

        Args:
            piece: Which test piece (0 .. count - 1); None: 0.
            start: Where the excerpt starts, in seconds (None: 0); a start too
                late for the excerpt and its continuation is moved back, and the
                clip's recipe line says from where it played.

        Returns:
            (the prompt, the human clip, its notes for a shared pitch axis).

        Raises:
            UserError: No MAESTRO folder is configured, it has no test split, or
                `piece` is not one of its pieces.
        """
        tests = self._maestro_test_files()
        piece = 0 if piece in (None, "") else to_number("The test piece number", piece, True)
        if not 0 <= piece < len(tests):
            raise UserError(f"the test piece number must be between 0 and {len(tests) - 1}, "
                            f"not {piece}")
        path = tests[piece]
        title = self._maestro_titles.get(path, path.name)
        notes = read_midi(path)
        start = 0.0 if start in (None, "") else to_number("The excerpt's start", start)
        start = min(max(0.0, start), max(0.0, notes.duration - prompt_seconds - seconds))
        prompt = prompt_from_notes(notes, prompt_seconds, f"maestro-test:{path.name}", start)
        both = notes.window(start, start + prompt_seconds + seconds)
        folder = self._request_folder()
        midi = notes_to_pretty_midi(both)
        midi_path = folder / "reference.mid"
        midi.write(str(midi_path))
        rendering = self.renderer.render(midi, soundfont)
        audio = write_audio((folder / "reference").with_suffix(CLIP_SUFFIX), rendering, mono=True)
        stats = compose.note_stats(both, prompt_seconds)
        recipe = {"reference": path.name, "start_s": round(start, 2)}
        clip = Clip("human performance (MAESTRO test split)", str(audio), str(midi_path),
                    piano_roll_svg(both, prompt_seconds, rendering.seconds),
                    rendering.seconds, compose.describe_stats(stats),
                    f"{title}, {path.name}, from {start:.1f} s (CC BY-NC-SA 4.0)", recipe)
        return prompt, clip, both

    def maestro_pieces(self) -> list[str]:
        """The MAESTRO test pieces `reference` takes by number, in words (none without a
        MAESTRO folder)."""
        try:
            tests = self._maestro_test_files()
        except UserError:
            return []
        return [self._maestro_titles.get(path, path.name) for path in tests]

    def _maestro_test_files(self) -> list[Path]:
        """The test split's files, listed once (the tree is large and does not change)."""
        if self.maestro_dir is None:
            raise UserError("no MAESTRO folder is configured; set MUSICGEN_MAESTRO_DIR to "
                            "use test-split excerpts")
        from musicgen.corpus import list_midi_files, maestro_titles  # noqa: PLC0415 - only with MAESTRO

        with self._maestro_lock:
            if self._maestro_tests is None:
                self._maestro_tests = [path for path, split in list_midi_files(self.maestro_dir)
                                       if split == "test"]
                self._maestro_titles = maestro_titles(self.maestro_dir)
        if not self._maestro_tests:
            raise UserError(f"the MAESTRO folder {self.maestro_dir} has no test-split files")
        return self._maestro_tests

    # --- ratings ---

    def rate(self, session: str, recipes: list[dict], scores: list) -> str:
        """Store one person's 1-5 ratings of the clips they were shown; again replaces them.

        Args:
            session: The browser session's id.
            recipes: The shown clips' `recipe_data`, in order.
            scores: A score ("1".."5", or None for unrated) per clip.

        Returns:
            A thank-you line.

        Raises:
            UserError: Nothing was generated yet, or nothing was scored.
        """
        if not recipes:
            raise UserError("generate something first, then rate it")
        rated = [(recipe, int(score)) for recipe, score in zip(recipes, scores, strict=False)
                 if score]
        if not rated:
            raise UserError("pick a score (1-5) for at least one candidate first")
        for recipe, score in rated:
            self.ratings.rate_clip(session, recipe, score)
        return (f"Saved {len(rated)} rating{'s' if len(rated) > 1 else ''}; saving again "
                "replaces them. Thank you!")

    # --- the blind listening test ---

    def next_pair(self, listener: str, training_years=None, listening_on: str | None = None,
                  address: str | None = None, account: str | None = None) -> ServedPair:
        """Serve this listener the next pair of the listening test.

        Args:
            listener: The listener's id (`ListenerKeys.listener` of their cookie).
            training_years: Optional self-report (a number, or "" for none).
            listening_on: Optional self-report: "headphones", "speakers" or None.
            address: Their network address, for the caps.
            account: The account they signed in with, if any.

        Raises:
            UserError: No pool, no account where one is required, every pair heard,
                a cap reached, or a bad self-report.
        """
        years = (None if training_years in (None, "") else
                 to_number("Years of musical training", training_years, True))
        if listening_on not in (None, "", "headphones", "speakers"):
            raise UserError(f"listening on is 'headphones' or 'speakers', not {listening_on}")
        return self.listening.next_pair(listener, years, {"headphones": True,
                                                          "speakers": False}.get(
                                                              listening_on or ""), address,
                                        account)

    def may_vote(self, listener: str, token: str | None) -> bool:
        """Whether both clips have been downloaded and out long enough for a vote (the
        browser asks once both clips have played for `min_listen_s`)."""
        return self.listening.wait_left(listener, token or "") == 0.0

    def vote(self, listener: str, token: str | None, choice: str, musical_a=None,
             musical_b=None, guess_a=None, guess_b=None, address: str | None = None,
             account: str | None = None) -> Reveal:
        """Store a vote on the pair served to this listener and say what the clips were.

        Scores arrive as the UI gives them ("1".."5" or None; "human"/"computer" or None).

        Raises:
            UserError: No pair served, another vote, too early, a cap, or bad values.
        """
        if not token:
            raise UserError("ask for a pair first")
        return self.listening.vote(listener, token, choice, _score(musical_a),
                                   _score(musical_b), guess_a or None, guess_b or None, address,
                                   account)

    def results(self) -> tuple[str, str | None]:
        """The listening test's aggregates for the Results tab: (Markdown, chart SVG or None).

        Below `MIN_VOTES` votes only the count is shown: early leaderboards mislead.
        Computed when the votes have changed, at most every `RESULTS_REFRESH_S`, one
        computation at a time; every other call gets the last one: a client asking
        65 times at once cost 65 bootstraps of about 1.7 s each and filled the queue.
        """
        pool = self.listening.pool()
        with self._results_lock:
            votes = self.ratings.vote_count(pool)
            if self._results is not None:
                (last_pool, last_votes), computed, shown = self._results
                chart_kept = shown[1] is None or Path(shown[1]).is_file()  # not pruned
                if chart_kept and ((last_pool == pool and last_votes == votes) or (
                        time.monotonic() - computed < RESULTS_REFRESH_S)):
                    return shown
            # Fewer stored votes than the board needs: no bootstrap for a page that shows
            # none. Otherwise the count that decides is the one left after the filter.
            result = (summarise(self.ratings, floor_s=self.listening.listening_floor())
                      if votes >= MIN_VOTES else None)
            counted = votes if result is None else result["votes"]
            if counted < MIN_VOTES:
                shown = (f"{counted} {'vote' if counted == 1 else 'votes'} so far on this "
                         f"listening test. The leaderboard appears from {MIN_VOTES} votes on: "
                         "fewer say too little.", None)
            else:
                path = self._request_folder() / "leaderboard.svg"
                shown = format_summary(for_the_public(result)), str(chart(result, path))
            self._results = ((pool, votes), time.monotonic(), shown)
            return shown

    # --- helpers ---

    def _model(self, name: str) -> compose.LoadedModel:
        if name not in self.models:
            raise UserError(f"there is no model called {name}; choose one of: "
                            f"{', '.join(self.models)}")
        return self.models[name]

    def _clip(self, candidate: compose.Candidate, folder: Path, title: str,
              soundfont: str | None, pitch_range: tuple[int, int] | None,
              stem: str = "", live: LiveRender | None = None) -> Clip:
        stem = folder / (stem or f"candidate-{candidate.index + 1}-variation"
                                 f"{candidate.recipe['seed']}")
        files = write_candidate(candidate, stem.with_suffix(".mid"),
                                stem.with_suffix(CLIP_SUFFIX), renderer=self.renderer,
                                soundfont=soundfont, mono=True, live=live)
        recipe = without_tokens(candidate.recipe)
        note = ("" if files.rendering.engine == "fluidsynth"
                else f"Audio: {files.rendering.note}")
        return Clip(title, str(files.audio), str(files.midi),
                    piano_roll_svg(candidate.notes, candidate.prompt_end,
                                   files.rendering.seconds, pitch_range),
                    files.rendering.seconds, compose.describe_stats(candidate.stats),
                    recipe_summary(candidate.recipe), recipe, note)

    def _request_folder(self) -> Path:
        folder = self.output_dir / uuid.uuid4().hex
        folder.mkdir(parents=True)
        return folder

    def prune(self) -> None:
        """Delete request folders older than `OUTPUT_TTL_S`, then the oldest entries of
        the output and cache folders beyond `disk_cap_bytes` in all, and listening pairs
        served more than `PAIR_TTL_S` ago without a vote (done every `PRUNE_INTERVAL_S`)."""
        cutoff = time.time() - OUTPUT_TTL_S
        for folder in self.output_dir.iterdir():
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        # Only folders named as this app and Gradio name theirs (hex digests): a cache
        # folder set to somewhere shared must not lose anything else.
        entries = [(_last_change(entry), _size(entry), entry)
                   for root in (self.output_dir, *self.cache_dirs) if root.is_dir()
                   for entry in root.iterdir()
                   if entry.is_dir() and len(entry.name) >= 32
                   and all(char in string.hexdigits for char in entry.name)]
        total = sum(size for _, size, _ in entries)
        # Nothing younger than DISK_MIN_AGE_S goes: a page may still be playing it, or an
        # upload still be read.
        young = time.time() - DISK_MIN_AGE_S
        for changed, size, entry in sorted(entries, key=lambda item: item[0]):
            if total <= self.disk_cap_bytes or changed >= young:
                break
            shutil.rmtree(entry, ignore_errors=True)
            total -= size
        self.ratings.forget_pairs_not_voted(time.time() - PAIR_TTL_S)

    def start_pruning(self, cache_dirs: list[Path] = ()) -> None:
        """`prune` every `PRUNE_INTERVAL_S` on a thread of its own, until `stop_pruning`
        (the app starts it: a request never pays for the clean-up).

        Args:
            cache_dirs: Folders the UI writes to (Gradio's cache), counted and
                trimmed with the outputs against `disk_cap_bytes`.
        """
        self.cache_dirs = [Path(folder) for folder in cache_dirs]
        if self._pruner is None or not self._pruner.is_alive():
            self._stop_pruning.clear()
            self._pruner = threading.Thread(target=self._prune_now_and_then, daemon=True,
                                            name="musicgen-prune")
            self._pruner.start()

    def stop_pruning(self) -> None:
        """End the pruning thread (it finishes a clean-up under way first)."""
        self._stop_pruning.set()
        if self._pruner is not None:
            self._pruner.join()

    def _prune_now_and_then(self) -> None:
        while not self._stop_pruning.is_set():
            try:
                self.prune()
            except Exception:  # noqa: BLE001 - a failed clean-up must not end the thread
                logging.getLogger(__name__).exception("pruning old outputs failed")
            self._stop_pruning.wait(PRUNE_INTERVAL_S)


def _in_step(duet: Duet, turns: object) -> Duet:
    """The duet, if the page knows all its turns; else a `UserError`."""
    if turns != len(duet.turns):
        raise UserError("the page and the server lost step in this duet (an answer came "
                        "too late?); press Clear to begin a new one")
    return duet


def _heard(duet: Duet, answered: object) -> Duet:
    """The duet with the answer the page played moved to where it played it."""
    if answered is None:
        return duet
    if not (isinstance(answered, list) and len(answered) == 2
            and is_finite_number(answered[1])):
        raise UserError("the page said when it played an answer in words this server does "
                        "not read; reload it")
    return duet.heard_from(answered[0], float(answered[1]))


def _keep_newest(kept: OrderedDict, key: str, clips: list[Clip]) -> None:
    """Put `clips` under `key` as the newest entry; forget the oldest past
    `REMEMBERED_BROWSERS`."""
    kept.pop(key, None)
    kept[key] = clips
    while len(kept) > REMEMBERED_BROWSERS:
        kept.popitem(last=False)


def _kept(clips: list[Clip]) -> bool:
    """Whether every file of these clips is still there (`prune` deletes old ones)."""
    return all(Path(clip.audio).is_file() and Path(clip.midi).is_file() for clip in clips)


def _key_heard(notes: Notes) -> str:
    """" It is mostly in D minor." where the pitch classes name a key clearly, else ""."""
    key, fit = detect_key(np.bincount(notes.pitch % 12, minlength=12))
    # Below this fit the pitch classes name no key clearly (atonal, or modulating).
    return f" It is mostly in {key}." if fit >= KEY_FIT_TO_SAY else ""


def _size(folder: Path) -> int:
    """Bytes in every file under a folder (0 if it goes while counted)."""
    try:
        return sum(entry.stat().st_size for entry in folder.rglob("*") if entry.is_file())
    except OSError:  # removed while counted
        return 0


def _last_change(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _score(value) -> int | None:
    """A 1-5 score as the UI gives it ("3", 3, None or "") as an int or None."""
    return None if value in (None, "") else to_number("The score", value, True)


def _pitch_range(parts: list[Notes]) -> tuple[int, int] | None:
    """The lowest and highest pitch over several clips: one axis for all of them."""
    pitches = [int(p) for notes in parts if len(notes) for p in (notes.pitch.min(),
                                                                 notes.pitch.max())]
    return (min(pitches), max(pitches)) if pitches else None


def _part(on_progress: Callable[[float], None] | None, low: float,
          high: float) -> Callable[[float], None] | None:
    """Progress of one part of a job, reported as the stretch low..high of the whole."""
    if on_progress is None:
        return None
    return lambda fraction: on_progress(low + (high - low) * fraction)
