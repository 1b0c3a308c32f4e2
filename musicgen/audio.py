"""MIDI to audio: FluidSynth with a reused synthesizer, and a numpy fallback.

pretty_midi's own `fluidsynth()` builds a synthesizer and loads the soundfont on
every call (0.1-0.6 s for FluidR3_GM before a single note is played). A
`Renderer` instead keeps one `fluidsynth.Synth` per soundfont, loaded once,
resets it before each render and drives it event by event. Every clip is then
normalised to the same RMS loudness so that clips compare fairly by ear.

When FluidSynth or a soundfont is missing, a small additive synth in numpy
stands in, so that callers (the CLI, the app) always get audio back; the
`Rendering` says which engine made it and why.
"""

from __future__ import annotations

import logging
import os
import threading
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi

from musicgen.errors import UserError
from musicgen.resources import soundfont_dir

log = logging.getLogger(__name__)

# 32 kHz: 16 kHz of bandwidth is more than a piano's audible overtones need, and
# rendering takes 0.43 s for a 40 s clip where 44.1 kHz took 0.68 s (one run on
# this project's 2-core machine, an evaluation job running beside it).
SAMPLE_RATE = 32000
TAIL_SECONDS = 1.0  # rendered after the last event so releases and reverb ring out
FADE_SECONDS = 0.05  # appended after the tail: ends the clip without a click
SILENCE_SECONDS = 1.0  # length of the clip for a MIDI without notes
MAX_RENDER_SECONDS = 30 * 60.0  # beyond this the audio alone would take gigabytes
PEAK_DBFS = -1.0
SILENCE_DBFS = -120.0  # reported level of digital silence, instead of -inf
# Quieter than this is silence or FluidSynth's dither (about -96 dBFS), which
# normalising would only turn into loud noise, so it is left as it is.
QUIETEST_DBFS = -90.0
SOUNDFONT_ENV = "MUSICGEN_SOUNDFONT"
SOUNDFONT_SUFFIXES = (".sf2", ".sf3")
SYSTEM_SOUNDFONT_DIRS = (Path("/usr/share/sounds/sf2"), Path("/usr/share/sounds/sf3"))
COMPRESSED_FORMATS = ("mp3", "ogg")
# 48 kbit/s a channel: a 39 s mono clip is 229 KiB, with an SNR of 19.9 dB
# against the render where libsndfile's variable rate (186 KiB) had 17.0 dB.
# LAME's quality 5 is its default; 7 encoded in half the time (73 ms).
MP3_KBPS_PER_CHANNEL = 48
MP3_QUALITY = 5

# FluidSynth's default gain (0.2) is quiet, about -38 dBFS for one piano note,
# but its int16 output clips irreversibly while quietness is undone by
# normalisation, so the headroom is kept.
SYNTH_GAIN = 0.2
DRUM_CHANNEL = 9
MELODIC_CHANNELS = tuple(c for c in range(16) if c != DRUM_CHANNEL)
RESET_SAMPLES = 4096  # rendered and dropped at a time while resetting the synth
MAX_RESET_SECONDS = 5.0
DITHER_PEAK = 1  # FluidSynth dithers its int16 output: silence reads 0 or +-1
# FluidSynth renders 64-sample blocks and applies events at block starts. Every
# render asks for whole blocks (RESET_SAMPLES and the clip length are padded),
# so each render starts on a block boundary and its timing repeats exactly.
BLOCK = 64

# Sort order of simultaneous events: a note-off before a note-on lets a key be
# struck again at the instant it is released.
NOTE_OFF, CONTROL, PITCH_BEND, NOTE_ON = range(4)


def find_soundfonts(explicit: str | os.PathLike | None = None) -> list[Path]:
    """Soundfont files that exist, most preferred first, each file once.

    Looked for in order: `explicit`; the `MUSICGEN_SOUNDFONT` environment
    variable; `.sf2`/`.sf3` files in `musicgen.resources.soundfont_dir()`;
    `/usr/share/sounds/sf2` and `/usr/share/sounds/sf3`; where none of those
    gave any, the small `TimGM6mb.sf2` inside pretty_midi. Files reached twice (for
    example through the `default-GM.sf2` symlink) are listed once, under the
    path found first.

    Args:
        explicit: A soundfont the caller asks for by path ("" or None: none).

    Returns:
        Paths of the soundfonts found; empty when there are none.

    Raises:
        UserError: `explicit` is given but is not a file.
    """
    candidates: list[Path] = []
    if explicit:
        candidates.append(soundfont_path(explicit))
    if env_value := os.environ.get(SOUNDFONT_ENV):
        path = Path(env_value).expanduser()
        if path.is_file():
            candidates.append(path)
        else:
            log.warning("%s=%s is not a file; ignoring it", SOUNDFONT_ENV, env_value)
    for folder in (soundfont_dir(), *SYSTEM_SOUNDFONT_DIRS):
        if folder.is_dir():
            candidates += sorted(
                p for p in folder.iterdir()
                if p.suffix.lower() in SOUNDFONT_SUFFIXES and p.is_file()
            )
    # pretty_midi's small TimGM6mb sounds thin next to FluidR3 or MuseScore
    # General: offered only where no other soundfont is installed.
    bundled = Path(pretty_midi.__file__).resolve().parent / "TimGM6mb.sf2"
    if bundled.is_file() and not candidates:
        candidates.append(bundled)

    found, seen = [], set()
    for path in candidates:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append(path)
    return found


def soundfont_path(choice: str | os.PathLike | None) -> Path | None:
    """A soundfont a person chose, checked: None for the default ("" or None).

    Front ends call this before sampling, so a wrong path fails at once.

    Raises:
        UserError: A path that is not a file.
    """
    if not choice:
        return None
    path = Path(choice).expanduser()
    if not path.is_file():
        raise UserError(f"there is no soundfont file {path}; give the path of an .sf2 or "
                        ".sf3 file, or none for the default")
    return path


def _import_fluidsynth():
    # pyfluidsynth raises ImportError when it cannot find libfluidsynth, and
    # ctypes raises OSError when the library is found but cannot be loaded.
    try:
        import fluidsynth
    except (ImportError, OSError):
        return None
    return fluidsynth


@dataclass(frozen=True)
class Rendering:
    """Audio rendered from MIDI, with how it was made.

    Attributes:
        audio: float32 samples in [-1, 1], shape [samples, 2] (left, right).
        sample_rate: Samples per second (`SAMPLE_RATE`).
        engine: "fluidsynth" or "numpy-fallback".
        soundfont: Path of the soundfont used, or None for the fallback.
        seconds: Length of the audio in seconds.
        rms_dbfs: RMS level after normalisation, in dB relative to full scale
            (a full-scale sine reads -3 dB; silence reads -120 dB). Below the
            target when the peak cap applied; audio quieter than -90 dB is
            left unnormalised.
        note: Why the fallback was used, or what else is worth knowing; "" if nothing.
    """

    audio: np.ndarray
    sample_rate: int
    engine: str
    soundfont: str | None
    seconds: float
    rms_dbfs: float
    note: str = ""


class Renderer:
    """Renders `pretty_midi.PrettyMIDI` objects to normalised stereo audio.

    A `fluidsynth.Synth` is created per soundfont on first use and kept, so
    the soundfont is read from disk once. Each render has a synth to itself,
    which makes one `Renderer` safe to share between threads (the app's
    requests); while all of a soundfont's synths are busy, another render
    waits for one, or gets a new one if fewer than `synths` exist. FluidSynth
    renders outside Python's lock, so two synths render two clips at once on
    two cores (the app's: measured, 30 clients at once were otherwise served
    one render after another). A `LiveRender` holds a synth while its music
    is sampled, so it only gets one where another is left for other renders
    (none with `synths=1`).

    Args:
        synths: Most synths per soundfont (each holds the soundfont in memory).

    Attributes:
        soundfonts: What `find_soundfonts()` found when the renderer was made;
            the first one is used when `render` is not told otherwise.
    """

    def __init__(self, synths: int = 1) -> None:
        self.soundfonts: list[Path] = find_soundfonts()
        self.max_synths = max(1, synths)
        self._free: dict[str, list[tuple[object, int]]] = {}  # resolved path -> idle synths
        self._made: dict[str, int] = {}  # resolved path -> synths made
        self._live = 0  # synths held by live renders
        self._lock = threading.Condition()

    def live(self, soundfont: str | os.PathLike | None = None) -> LiveRender:
        """Begin a render of music still being written; close it when done.

        Args:
            soundfont: As for `render`, which must be given the same one.

        Returns:
            A `LiveRender`. It holds a synth only if one was free and another
            is left for other renders; without, it does nothing.

        Raises:
            UserError: `soundfont` is given but is not a file.
        """
        soundfont = self._chosen(soundfont)
        fluidsynth = _import_fluidsynth()
        loaded = None
        with self._lock:
            # A live render holds its synth for the whole sampling (seconds):
            # others' renders, such as a seed preview, must not wait that long.
            taking = self._live + 1 < self.max_synths
            self._live += taking
        if taking and fluidsynth is not None and soundfont is not None:
            # No waiting for a synth: without one the render is made at the end, as always.
            loaded = self._take_synth(fluidsynth, soundfont, wait=False)
        if taking and loaded is None:
            with self._lock:
                self._live -= 1
        return LiveRender(self, soundfont, loaded)

    def render(self, midi: pretty_midi.PrettyMIDI, soundfont: str | os.PathLike | None = None,
               target_dbfs: float = -18.0, live: LiveRender | None = None) -> Rendering:
        """Render MIDI to audio, with FluidSynth when it can and numpy when not.

        Notes, control changes (the sustain pedal among them) and pitch bends
        are played; each instrument keeps its program on a channel of its own,
        drums on channel 9. After the last event the audio runs on for
        `TAIL_SECONDS`, then fades out over `FADE_SECONDS`. The result is scaled
        to `target_dbfs` RMS, then down again if its peak would pass -1 dBFS.

        The synth is reset first, so nothing of an earlier render is heard and
        identical MIDI gives the same notes at the same samples. The waveforms
        still differ slightly (about -25 dB): FluidSynth's reverb modulation runs
        on between renders and no call resets it.

        Without FluidSynth, without any soundfont, or with a soundfont FluidSynth
        cannot load, the numpy fallback renders instead and a warning is logged.

        Args:
            midi: The music. It is not modified.
            soundfont: Path of the soundfont; None or "" uses `self.soundfonts[0]`.
            target_dbfs: RMS loudness to normalise to.
            live: Where this MIDI was begun while it was written (a
                `LiveRender` of this renderer, with the same soundfont; else it
                is not used): only the rest is played, on its synth, which
                then goes back to the renderer.

        Returns:
            The `Rendering`. A MIDI without notes gives `SILENCE_SECONDS` of silence.

        Raises:
            UserError: `soundfont` is given but is not a file, or the MIDI
                lasts longer than `MAX_RENDER_SECONDS`.
        """
        soundfont = self._chosen(soundfont)
        events = _collect_events(midi)
        end_sample = events[-1][0] if events else 0
        if end_sample > MAX_RENDER_SECONDS * SAMPLE_RATE:
            raise UserError(f"the music lasts {end_sample / SAMPLE_RATE:.0f} s; at most "
                            f"{MAX_RENDER_SECONDS:.0f} s can be rendered")

        fluidsynth = _import_fluidsynth()
        reason = ""
        if fluidsynth is None:
            reason = "FluidSynth is not available (pyfluidsynth or libfluidsynth missing)"
        elif soundfont is None:
            reason = "no soundfont found (set MUSICGEN_SOUNDFONT or add one to soundfonts/)"

        if not any(event[1] == NOTE_ON for event in events):
            n_samples = round(SILENCE_SECONDS * SAMPLE_RATE)
            engine = "numpy-fallback" if reason else "fluidsynth"
            note = "; ".join(filter(None, ["no notes to render", reason]))
            return _finish(np.zeros((n_samples, 2), np.float32), engine,
                           None if reason else soundfont, target_dbfs, note)

        n_samples = end_sample + round((TAIL_SECONDS + FADE_SECONDS) * SAMPLE_RATE)
        n_samples += -n_samples % BLOCK
        audio = None
        if not reason and live is not None and live.plays_on(self, soundfont):
            try:
                audio = live._whole_clip(midi, events, n_samples)
            finally:
                live.close()
        if not reason and audio is None:
            loaded = self._take_synth(fluidsynth, soundfont)
            if loaded is None:
                reason = f"FluidSynth could not load the soundfont {soundfont}"
            else:
                try:
                    performance = _Performance(*loaded, midi)
                    performance.play(events, n_samples)
                    audio = performance.audio()
                finally:
                    self._give_back(soundfont, loaded)
        if audio is None:
            log.warning("Rendering with the numpy fallback synth: %s", reason)
            return _finish(_additive_synth(midi, n_samples), "numpy-fallback", None,
                           target_dbfs, reason)
        return _finish(audio, "fluidsynth", soundfont, target_dbfs, "")

    def _chosen(self, soundfont: str | os.PathLike | None) -> str | None:
        """The soundfont to use: the one given (checked), else the first found, else None."""
        if soundfont:
            return str(soundfont_path(soundfont))
        return str(self.soundfonts[0]) if self.soundfonts else None

    def _take_synth(self, fluidsynth, soundfont: str,
                    wait: bool = True) -> tuple[object, int] | None:
        """An idle (Synth, sfont id) for a soundfont, made on first use.

        Returns:
            None if the soundfont cannot load, or if all its synths are busy
            and `wait` is False.
        """
        key = str(Path(soundfont).resolve())
        with self._lock:
            while True:
                if self._free.get(key):
                    return self._free[key].pop()
                if self._made.get(key, 0) < self.max_synths:
                    self._made[key] = self._made.get(key, 0) + 1
                    break
                if not wait:
                    return None
                self._lock.wait()
        synth = sfont_id = None
        try:
            synth = fluidsynth.Synth(gain=SYNTH_GAIN, samplerate=float(SAMPLE_RATE))
            sfont_id = synth.sfload(key)
        finally:
            if sfont_id is None or sfont_id < 0:  # it failed, or raised: the slot is free again
                if synth is not None:
                    synth.delete()
                with self._lock:
                    self._made[key] -= 1
                    self._lock.notify_all()
        return None if sfont_id < 0 else (synth, sfont_id)

    def _give_back(self, soundfont: str, loaded: tuple[object, int]) -> None:
        with self._lock:
            self._free.setdefault(str(Path(soundfont).resolve()), []).append(loaded)
            # All waiters: they may wait for other soundfonts, and only these can use it.
            self._lock.notify_all()


class LiveRender:
    """A render begun while its music is still being sampled: how the app's first clip is made.

        with renderer.live(soundfont) as live:
            (candidate,) = compose(model, prompt, settings,
                                   on_music=lambda _, midi, final: live.advance(midi, final))
            rendering = renderer.render(candidate.midi, soundfont, live=live)

    `advance` plays the music so far, up to where it is final, on a synth held
    for this render: in the caller's thread, beside the sampling on the other
    core. `Renderer.render` then plays only the rest, and the audio is what it
    makes of the finished MIDI alone: the same events reach the synth at the
    same samples, from the same reset. If the finished MIDI does not begin
    with what was played (a caller's bug), it is played again from the start
    and a warning is logged.

    Without FluidSynth, a soundfont, or a synth to spare, it does nothing, and
    `render` renders the whole clip as usual; so too if playing the music so
    far fails (logged as the bug it is). Made by `Renderer.live` only.

    Attributes:
        soundfont: The soundfont it plays with (`render` must be given the same).
        restarts: How often the music so far had to be played again.
        played_samples: How much was played before `render` was called.
    """

    def __init__(self, renderer: Renderer, soundfont: str | None,
                 loaded: tuple[object, int] | None) -> None:
        self.soundfont = soundfont
        self.restarts = 0
        self.played_samples = 0
        self._renderer, self._loaded = renderer, loaded
        self._performance: _Performance | None = None

    def plays_on(self, renderer: Renderer, soundfont: str | None) -> bool:
        """Whether it holds a synth of this renderer for this soundfont."""
        return (self._loaded is not None and renderer is self._renderer
                and soundfont is not None
                and Path(soundfont).resolve() == Path(self.soundfont).resolve())

    def advance(self, midi: pretty_midi.PrettyMIDI, final_seconds: float) -> None:
        """Play the music so far up to where it is final.

        Args:
            midi: The music so far.
            final_seconds: Every event of the finished music before this time
                is in `midi` as it will be; later ones may still change.
        """
        if self._loaded is None:
            return
        # A block short of the time given, in whole blocks as `render` asks
        # for (BLOCK): an event at that time rounds to no earlier sample.
        until = _to_sample(final_seconds) - BLOCK
        until -= until % BLOCK
        if self._performance is not None and until <= self._performance.cursor:
            return
        try:
            self._play(midi, _collect_events(midi), until)
            self.played_samples = self._performance.cursor
        except Exception:  # a bug, but the clip can still be rendered after sampling
            log.exception("Playing the music so far failed; it is rendered after sampling")
            self.close()

    def _whole_clip(self, midi: pretty_midi.PrettyMIDI,
                    events: list[tuple[int, int, int, int, int]], n_samples: int) -> np.ndarray:
        """The whole clip, going on from what was played (for `Renderer.render`).

        Returns:
            float32 [n_samples, 2]. The music so far may have been played past
            the finished music's end (it ended in silence): rendering is
            causal, so the first `n_samples` are the clip.
        """
        self._play(midi, events, n_samples)
        audio = self._performance.audio()[:n_samples]
        self._performance = None  # played out: a second render starts afresh
        return audio

    def close(self) -> None:
        """Give the synth back to the renderer (`render` does, once it has used it)."""
        if self._loaded is not None:
            self._renderer._give_back(self.soundfont, self._loaded)
            self._loaded = self._performance = None
            with self._renderer._lock:
                self._renderer._live -= 1

    def __enter__(self) -> LiveRender:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _play(self, midi: pretty_midi.PrettyMIDI,
              events: list[tuple[int, int, int, int, int]], until: int) -> None:
        if self._performance is not None and not self._performance.follows(midi, events):
            log.warning("The music changed where it had been played; playing it again "
                        "from the start")
            self.restarts += 1
            self._performance = None
        if self._performance is None:
            self._performance = _Performance(*self._loaded, midi)
        self._performance.play(events, until)


_default_renderer: Renderer | None = None
_default_renderer_lock = threading.Lock()


def default_renderer() -> Renderer:
    """The process-wide shared `Renderer`, made on first call.

    Sharing it keeps each soundfont loaded once per process. It is safe to use
    from several threads at once: renders take turns on its lock.

    Returns:
        The same `Renderer` on every call.
    """
    global _default_renderer
    with _default_renderer_lock:
        if _default_renderer is None:
            _default_renderer = Renderer()
        return _default_renderer


def _channels(midi: pretty_midi.PrettyMIDI) -> list[int]:
    """The MIDI channel of each instrument: drums on 9, the others one channel each."""
    channels = []
    melodic = 0
    for instrument in midi.instruments:
        if instrument.is_drum:
            channels.append(DRUM_CHANNEL)
        else:
            # Beyond 15 melodic instruments channels are shared; rare in practice.
            channels.append(MELODIC_CHANNELS[melodic % len(MELODIC_CHANNELS)])
            melodic += 1
    return channels


def _collect_events(midi: pretty_midi.PrettyMIDI) -> list[tuple[int, int, int, int, int]]:
    """All events as (sample, kind, channel, data1, data2), sorted by time then kind."""
    events = []
    for instrument, channel in zip(midi.instruments, _channels(midi), strict=True):
        for note in instrument.notes:
            if note.velocity <= 0 or not 0 <= note.pitch <= 127:
                continue
            start = _to_sample(note.start)
            # A note must last a sample, or its note-off would sort before its note-on.
            end = max(_to_sample(note.end), start + 1)
            events.append((start, NOTE_ON, channel, note.pitch, min(note.velocity, 127)))
            events.append((end, NOTE_OFF, channel, note.pitch, 0))
        for cc in instrument.control_changes:
            events.append((_to_sample(cc.time), CONTROL, channel, cc.number, cc.value))
        for bend in instrument.pitch_bends:
            events.append((_to_sample(bend.time), PITCH_BEND, channel, bend.pitch, 0))
    events.sort()
    return events


def _to_sample(seconds: float) -> int:
    return max(0, round(seconds * SAMPLE_RATE))


def _reset(synth) -> None:
    """Silence the synth and return it to power-on state, so no render hears the last."""
    for channel in range(16):
        synth.all_sounds_off(channel)
    synth.get_samples(RESET_SAMPLES)  # killed voices fade out over a few samples
    synth.system_reset()  # controllers, programs, and most of the reverb state
    # What the reset leaves of the reverb rings on for up to half a second;
    # silence renders some 400x faster than real time, so wait it out.
    for _ in range(round(MAX_RESET_SECONDS * SAMPLE_RATE / RESET_SAMPLES)):
        if np.abs(synth.get_samples(RESET_SAMPLES)).max() <= DITHER_PEAK:
            break


class _Performance:
    """One clip played on a synth event by event, in time order; it may be played in parts.

    Args:
        synth: A `fluidsynth.Synth`; it is reset first.
        sfont_id: Its loaded soundfont.
        midi: The instruments to select programs for.
    """

    def __init__(self, synth, sfont_id: int, midi: pretty_midi.PrettyMIDI) -> None:
        self.synth, self.sfont_id = synth, sfont_id
        self.voices = _voices(midi)
        _reset(synth)
        for channel, bank, preset in self.voices:
            if synth.program_select(channel, sfont_id, bank, preset) != 0:
                # Small soundfonts lack many General MIDI presets: use the bank's first.
                synth.program_select(channel, sfont_id, bank, 0)
        self.played: list[tuple[int, int, int, int, int]] = []
        self.cursor = 0  # samples rendered
        self._pcm: list[np.ndarray] = []  # interleaved left, right int16, in parts
        self._sounding: dict[tuple[int, int], int] = {}  # (channel, pitch) -> notes holding it

    def follows(self, midi: pretty_midi.PrettyMIDI,
                events: list[tuple[int, int, int, int, int]]) -> bool:
        """Whether what was played is the start of this music (same programs, same events)."""
        played = len(self.played)
        return (_voices(midi) == self.voices and events[:played] == self.played
                and (played == len(events) or events[played][0] >= self.cursor))

    def play(self, events: list[tuple[int, int, int, int, int]], until: int) -> None:
        """Play the events not yet played that come before sample `until`; render up to it.

        Args:
            events: The clip's events (`_collect_events`), of which those
                played so far are the start (`follows`).
            until: The sample to render up to.
        """
        synth = self.synth
        for event in events[len(self.played):]:
            sample, kind, channel, data1, data2 = event
            if sample >= until:
                break
            self._render_to(sample)
            if kind == NOTE_ON:
                self._sounding[channel, data1] = self._sounding.get((channel, data1), 0) + 1
                synth.noteon(channel, data1, data2)
            elif kind == NOTE_OFF:
                # With overlapping notes of one pitch the key is released by the
                # last of them, not the first, so the later note is not cut short.
                self._sounding[channel, data1] -= 1
                if self._sounding[channel, data1] == 0:
                    synth.noteoff(channel, data1)
            elif kind == CONTROL:
                synth.cc(channel, data1, data2)
            else:
                synth.pitch_bend(channel, data1)
            self.played.append(event)
        self._render_to(until)

    def audio(self) -> np.ndarray:
        """What was rendered, as float32 [samples, 2]."""
        pcm = np.concatenate(self._pcm) if self._pcm else np.zeros(0, np.int16)
        return (pcm.astype(np.float32) / 32768.0).reshape(-1, 2)

    def _render_to(self, sample: int) -> None:
        if sample > self.cursor:
            self._pcm.append(self.synth.get_samples(sample - self.cursor))
            self.cursor = sample


def _voices(midi: pretty_midi.PrettyMIDI) -> list[tuple[int, int, int]]:
    """(channel, bank, preset) of each instrument: drums in bank 128."""
    return [(channel, 128 if instrument.is_drum else 0, instrument.program)
            for instrument, channel in zip(midi.instruments, _channels(midi), strict=True)]


def _additive_synth(midi: pretty_midi.PrettyMIDI, n_samples: int) -> np.ndarray:
    """A plain piano-like tone per note; returns float32 [n_samples, 2].

    Each note is a few harmonics under an exponential decay, higher notes and
    higher harmonics dying faster, as on a piano; a released note dies away
    within a second. Drums and controllers (the pedal too) are ignored.
    """
    attack, release = 0.005, 0.15
    harmonics = np.array([1.0, 0.5, 0.3, 0.2, 0.12, 0.08])
    out = np.zeros(n_samples)
    for instrument in midi.instruments:
        if instrument.is_drum:
            continue
        for note in instrument.notes:
            if note.velocity <= 0 or not 0 <= note.pitch <= 127:
                continue
            start = _to_sample(note.start)
            held = max(_to_sample(note.end), start + 1) - start
            length = min(held + round(5 * release * SAMPLE_RATE), n_samples - start)
            if length <= 0:
                continue
            t = np.arange(length) / SAMPLE_RATE
            freq = 440.0 * 2.0 ** ((note.pitch - 69) / 12)
            decay = np.clip(2.5 * (261.6 / freq) ** 0.7, 0.2, 6.0)  # seconds to 1/e
            envelope = np.minimum(t / attack, 1.0)
            envelope *= np.exp(-np.maximum(t - held / SAMPLE_RATE, 0.0) / release)
            # Harmonic k is sin(k x) * fade**k. Both come by recurrence from
            # k - 1, about twice as fast as calling sin and exp for each harmonic.
            angle = 2 * np.pi * freq * t
            cos_x, fade_1 = np.cos(angle), np.exp(-t / decay)
            sin_before, sin_k, fade_k = np.zeros(length), np.sin(angle), fade_1
            tone = np.zeros(length)
            for k, amplitude in enumerate(harmonics, start=1):
                if k * freq >= 0.45 * SAMPLE_RATE:
                    break
                tone += amplitude * fade_k * sin_k
                sin_before, sin_k = sin_k, 2 * cos_x * sin_k - sin_before
                fade_k = fade_k * fade_1
            out[start:start + length] += (note.velocity / 127) ** 2 * envelope * tone
    return np.repeat(out[:, None], 2, axis=1).astype(np.float32)


def _finish(audio: np.ndarray, engine: str, soundfont: str | None, target_dbfs: float,
            note: str) -> Rendering:
    """Fade out the end, normalise loudness, cap the peak, and wrap in a `Rendering`.

    `audio` is faded in place.
    """
    fade = min(round(FADE_SECONDS * SAMPLE_RATE), len(audio))
    if fade:
        audio[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)[:, None]
    audio, rms_dbfs = _normalised(audio, target_dbfs)
    return Rendering(audio=audio, sample_rate=SAMPLE_RATE, engine=engine, soundfont=soundfont,
                     seconds=len(audio) / SAMPLE_RATE, rms_dbfs=rms_dbfs, note=note)


def _normalised(audio: np.ndarray, target_dbfs: float) -> tuple[np.ndarray, float]:
    """`audio` scaled to `target_dbfs` RMS, then down if its peak would pass `PEAK_DBFS`.

    Returns:
        (the audio, its RMS level in dBFS).
    """
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    if rms > 10.0 ** (QUIETEST_DBFS / 20):
        gain = 10.0 ** (target_dbfs / 20) / rms
        peak = float(np.abs(audio).max()) * gain
        gain *= min(1.0, 10.0 ** (PEAK_DBFS / 20) / peak)
        audio = (audio * gain).astype(np.float32)
        rms *= gain
    return audio, float(max(20 * np.log10(max(rms, 1e-12)), SILENCE_DBFS))


def fitted(rendering: Rendering, seconds: float, fade_seconds: float = 0.5,
           target_dbfs: float = -18.0) -> Rendering:
    """A rendering cut or padded to exactly `seconds`, faded, and normalised again.

    Clips compared in a listening test must not differ in length or loudness:
    a listener notices both before the music.

    Args:
        rendering: The audio.
        seconds: The length wanted.
        fade_seconds: The fade-out at the end (a 10 ms fade-in avoids a click).
        target_dbfs: RMS loudness after the cut.

    Returns:
        A new `Rendering`.
    """
    n = round(seconds * rendering.sample_rate)
    audio = np.zeros((n, 2), np.float32)
    kept = min(n, len(rendering.audio))
    audio[:kept] = rendering.audio[:kept]
    for length, ramp in ((round(0.01 * rendering.sample_rate), (0.0, 1.0)),
                         (round(fade_seconds * rendering.sample_rate), (1.0, 0.0))):
        length = min(length, n)
        part = slice(0, length) if ramp[0] == 0.0 else slice(n - length, n)
        audio[part] *= np.linspace(*ramp, length, dtype=np.float32)[:, None]
    audio, rms_dbfs = _normalised(audio, target_dbfs)
    return Rendering(audio, rendering.sample_rate, rendering.engine, rendering.soundfont,
                     n / rendering.sample_rate, rms_dbfs, rendering.note)


def matched(renderings: list[Rendering], target_dbfs: float = -18.0) -> list[Rendering]:
    """Renderings scaled to one RMS level that none of their peaks has to be capped at.

    `fitted` aims at `target_dbfs` but turns a clip down where its peak would
    pass `PEAK_DBFS`, and real performances, with their accents, have higher
    peaks than generated ones (measured on a pool: real clips came out 1.5 dB
    quieter on average, 5.4 dB at worst), which a listener hears before the
    music. Here the level is the lower of `target_dbfs` and the highest level
    at which every clip's peak fits. Silent renderings are left as they are.

    Returns:
        New `Rendering`s, in order.
    """
    levels = [(float(np.sqrt(np.mean(np.square(r.audio, dtype=np.float64)))),
               float(np.abs(r.audio).max(initial=0.0))) for r in renderings]
    audible = [(rms, peak) for rms, peak in levels if rms > 10.0 ** (QUIETEST_DBFS / 20)]
    if not audible:
        return list(renderings)
    headroom = min(PEAK_DBFS - 20 * np.log10(peak / rms) for rms, peak in audible)
    level = min(target_dbfs, headroom)
    out = []
    for rendering, (rms, _) in zip(renderings, levels, strict=True):
        if rms <= 10.0 ** (QUIETEST_DBFS / 20):
            out.append(rendering)
            continue
        audio = (rendering.audio * (10.0 ** (level / 20) / rms)).astype(np.float32)
        out.append(Rendering(audio, rendering.sample_rate, rendering.engine,
                             rendering.soundfont, rendering.seconds, float(level),
                             rendering.note))
    return out


def write_wav(path: str | os.PathLike, rendering: Rendering) -> Path:
    """Write a rendering as a 16-bit PCM stereo WAV file.

    Args:
        path: Where to write; an existing file is replaced.
        rendering: The audio.

    Returns:
        The path written.
    """
    path = Path(path)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(rendering.sample_rate)
        wav.writeframes(_to_pcm16(rendering.audio))
    return path


def _to_pcm16(audio: np.ndarray) -> bytes:
    """Interleaved little-endian int16 bytes, as WAV files hold them."""
    return np.round(np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def write_compressed(path: str | os.PathLike, rendering: Rendering, fmt: str = "mp3",
                     mono: bool = False) -> Path:
    """Encode a rendering to MP3 (LAME, through `lameenc`) or Ogg Vorbis (libsndfile).

    A 30 s WAV is 5.3 MB; the same clip as MP3 is about 0.2 MB, which is what
    a browser should download per clip.

    MP3 is at a constant bitrate: a browser knows a constant-rate file's
    length from its size (a variable-rate one needs a header that a streaming
    encoder cannot write first), and the file's size says nothing about the
    music (the listening test's clips). LAME through `lameenc` rather than
    libsndfile, whose encoder was 2-2.5x slower on the app's clips: a 39 s mono
    clip took 343 ms there and 133-162 ms here (BENCHMARKS.md, "Fewer numpy
    calls per token").

    Args:
        path: Where to write; an existing file is replaced.
        rendering: The audio.
        fmt: "mp3" or "ogg".
        mono: Mix down to one channel: what the app sends to browsers.

    Returns:
        The path written.

    Raises:
        ValueError: `fmt` is not "mp3" or "ogg".
    """
    if fmt not in COMPRESSED_FORMATS:
        raise ValueError(f"Unknown format {fmt!r}; use one of {list(COMPRESSED_FORMATS)}")
    path = Path(path)
    audio = np.clip(rendering.audio, -1.0, 1.0)
    if mono and audio.ndim == 2:
        audio = audio.mean(axis=1)
    if fmt == "ogg":
        import soundfile  # noqa: PLC0415 - loads libsndfile; only needed when encoding

        # Mono at a higher compression level, as the app's clips were before MP3.
        soundfile.write(path, audio, rendering.sample_rate, format="OGG", subtype="VORBIS",
                        compression_level=0.7 if mono else 0.5)
        return path
    import lameenc  # noqa: PLC0415 - only needed when encoding

    channels = 1 if audio.ndim == 1 else audio.shape[1]
    encoder = lameenc.Encoder()
    encoder.set_in_sample_rate(rendering.sample_rate)
    encoder.set_out_sample_rate(rendering.sample_rate)  # LAME resamples at low rates otherwise
    encoder.set_channels(channels)
    encoder.set_bit_rate(MP3_KBPS_PER_CHANNEL * channels)
    encoder.set_quality(MP3_QUALITY)
    samples = np.round(audio * 32767).astype("<i2")  # interleaved when stereo
    path.write_bytes(encoder.encode(samples.tobytes()) + encoder.flush())
    return path


def write_audio(path: str | os.PathLike, rendering: Rendering, mono: bool = False) -> Path:
    """Write by the file's suffix: .mp3 or .ogg compressed, anything else as WAV.

    Args:
        path: Target file.
        rendering: The audio.
        mono: For compressed files: see `write_compressed`.

    Returns:
        The path written.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt in COMPRESSED_FORMATS:
        return write_compressed(path, rendering, fmt, mono=mono)
    return write_wav(path, rendering)
