"""Tests for musicgen.audio: FluidSynth rendering, its reuse, the fallback, files out."""

from __future__ import annotations

import logging
import sys
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pretty_midi
import pytest

from musicgen import audio
from musicgen.errors import UserError

FLUID_R3 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


def make_midi(notes=(), pedal=(), program: int = 0) -> pretty_midi.PrettyMIDI:
    """One instrument with (pitch, velocity, start, end) notes and (time, value) CC64 events."""
    midi = pretty_midi.PrettyMIDI()
    instrument = pretty_midi.Instrument(program=program)
    instrument.notes += [pretty_midi.Note(v, p, s, e) for p, v, s, e in notes]
    instrument.control_changes += [pretty_midi.ControlChange(64, v, t) for t, v in pedal]
    midi.instruments.append(instrument)
    return midi


def peak_hz(rendering: audio.Rendering) -> float:
    mono = rendering.audio.astype(np.float64).sum(axis=1)
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return float(np.fft.rfftfreq(len(mono), 1 / rendering.sample_rate)[np.argmax(spectrum)])


def log_spectrogram(samples: np.ndarray, size: int = 2048, hop: int = 512) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(samples.sum(axis=1), size)[::hop]
    return 20 * np.log10(np.abs(np.fft.rfft(frames * np.hanning(size), axis=1)) + 1e-9)


@pytest.fixture
def fluid_r3() -> Path:
    if audio._import_fluidsynth() is None:
        pytest.skip("FluidSynth is not available (pyfluidsynth or libfluidsynth missing)")
    if not FLUID_R3.is_file():
        pytest.skip(f"soundfont {FLUID_R3} is not installed")
    return FLUID_R3


def test_a4_with_fluidsynth_is_440_hz_at_target_loudness(fluid_r3):
    rendering = audio.Renderer().render(make_midi([(69, 100, 0.0, 1.0)]), soundfont=str(fluid_r3))

    assert rendering.engine == "fluidsynth"
    assert rendering.soundfont == str(fluid_r3)
    assert rendering.note == ""
    assert rendering.audio.dtype == np.float32 and rendering.audio.shape[1] == 2
    assert rendering.sample_rate == audio.SAMPLE_RATE
    assert rendering.seconds == pytest.approx(len(rendering.audio) / audio.SAMPLE_RATE)
    assert rendering.seconds >= 1.0 + 1.0
    assert np.abs(rendering.audio).max() > 0.1
    assert np.abs(rendering.audio).max() <= 10 ** (-1 / 20) + 1e-6
    assert abs(rendering.rms_dbfs - -18.0) <= 1.0
    measured = 20 * np.log10(np.sqrt(np.mean(np.square(rendering.audio, dtype=np.float64))))
    assert measured == pytest.approx(rendering.rms_dbfs, abs=0.01)
    assert peak_hz(rendering) == pytest.approx(440.0, abs=3.0)


def test_renderer_loads_soundfont_once_and_leaks_nothing(fluid_r3, monkeypatch):
    import fluidsynth

    calls = {"Synth": 0, "sfload": 0}
    original_init, original_sfload = fluidsynth.Synth.__init__, fluidsynth.Synth.sfload

    def counting_init(self, *args, **kwargs):
        calls["Synth"] += 1
        original_init(self, *args, **kwargs)

    def counting_sfload(self, *args, **kwargs):
        calls["sfload"] += 1
        return original_sfload(self, *args, **kwargs)

    monkeypatch.setattr(fluidsynth.Synth, "__init__", counting_init)
    monkeypatch.setattr(fluidsynth.Synth, "sfload", counting_sfload)
    renderer = audio.Renderer()
    a4 = make_midi([(69, 100, 0.5, 1.5)])
    # Loud, pedal held to the end, and on another program: all of it must be gone next time.
    loud = make_midi([(p, 127, 0.0, 0.5) for p in range(36, 96, 3)], pedal=[(0.0, 127)],
                     program=48)

    first = renderer.render(a4, soundfont=str(fluid_r3))
    renderer.render(loud, soundfont=str(fluid_r3))
    again = renderer.render(a4, soundfont=str(fluid_r3))

    assert calls == {"Synth": 1, "sfload": 1}
    assert again.audio.shape == first.audio.shape
    # Reverb modulation alone moves the level: four renders of this note in a
    # row, with nothing between them, spread over 0.15 dB at 32 kHz (0.03 dB at
    # 44.1 kHz). A tail of the loud chord would add decibels.
    assert again.rms_dbfs == pytest.approx(first.rms_dbfs, abs=0.2)
    # Before the note starts there is only dither, not the tail of the loud chord.
    assert np.abs(again.audio[: int(0.45 * audio.SAMPLE_RATE)]).max() < 3e-3
    # FluidSynth's reverb modulation keeps running between renders (no call resets
    # it), so the waveforms are not bit-identical; what is heard must be.
    ours, theirs = log_spectrogram(first.audio), log_spectrogram(again.audio)
    audible = ours > ours.max() - 60
    assert np.abs(ours - theirs)[audible].mean() < 3.0
    assert peak_hz(again) == pytest.approx(440.0, abs=3.0)


def test_sustain_pedal_keeps_a_note_sounding(fluid_r3):
    renderer = audio.Renderer()
    dry = renderer.render(make_midi([(60, 100, 0.0, 0.2)], pedal=[(1.5, 0)]), str(fluid_r3))
    held = renderer.render(make_midi([(60, 100, 0.0, 0.2)], pedal=[(0.0, 127), (1.5, 0)]),
                           str(fluid_r3))

    def level_near(rendering, seconds):
        rate = audio.SAMPLE_RATE
        window = rendering.audio[int(seconds * rate):int((seconds + 0.2) * rate)]
        return np.sqrt(np.mean(np.square(window))) / 10 ** (rendering.rms_dbfs / 20)

    assert level_near(held, 1.0) > 10 * level_near(dry, 1.0)


def test_overlapping_notes_of_one_pitch_hold_until_the_last_ends(fluid_r3):
    renderer = audio.Renderer()
    overlapping = renderer.render(make_midi([(69, 100, 0.0, 2.0), (69, 100, 0.5, 1.0)]))
    restruck = renderer.render(make_midi([(69, 100, 0.0, 0.5), (69, 100, 0.5, 2.0)]))

    def level_at_1_5_s(rendering):
        window = rendering.audio[int(1.5 * audio.SAMPLE_RATE):int(1.7 * audio.SAMPLE_RATE)]
        return np.sqrt(np.mean(np.square(window))) / 10 ** (rendering.rms_dbfs / 20)

    # Had the inner note's note-off released the key, the sound would be fading by 1.5 s.
    assert level_at_1_5_s(overlapping) == pytest.approx(level_at_1_5_s(restruck), rel=0.4)


@pytest.mark.parametrize("synths", [1, 2])
def test_concurrent_renders_on_one_renderer(fluid_r3, synths):
    renderer = audio.Renderer(synths=synths)
    midis = [make_midi([(60 + i, 100, 0.2, 0.7)]) for i in range(6)]

    with ThreadPoolExecutor(max_workers=6) as pool:
        renderings = list(pool.map(renderer.render, midis))

    assert 1 <= sum(renderer._made.values()) <= synths  # never more synths than allowed

    for i, rendering in enumerate(renderings):
        assert rendering.engine == "fluidsynth"
        assert np.abs(rendering.audio[: int(0.15 * audio.SAMPLE_RATE)]).max() < 3e-3
        expected = 440.0 * 2 ** ((60 + i - 69) / 12)
        assert peak_hz(rendering) == pytest.approx(expected, rel=0.01)


def test_unloadable_soundfont_falls_back_and_missing_one_raises(fluid_r3, tmp_path):
    broken = tmp_path / "broken.sf2"
    broken.write_bytes(b"not a soundfont")
    renderer = audio.Renderer()

    rendering = renderer.render(make_midi([(69, 100, 0.0, 1.0)]), soundfont=str(broken))

    assert rendering.engine == "numpy-fallback"
    assert "could not load" in rendering.note
    with pytest.raises(UserError, match="no soundfont file"):
        renderer.render(make_midi([(69, 100, 0.0, 1.0)]), soundfont=str(tmp_path / "no.sf2"))
    # "" is what a cleared picker sends: the default soundfont, not a missing file.
    assert renderer.render(make_midi([(69, 100, 0.0, 1.0)]), soundfont="").engine == (
        "fluidsynth")


def test_fallback_when_fluidsynth_cannot_be_imported(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "fluidsynth", None)  # makes `import fluidsynth` fail
    assert audio._import_fluidsynth() is None

    with caplog.at_level(logging.WARNING, logger="musicgen.audio"):
        rendering = audio.Renderer().render(make_midi([(69, 100, 0.0, 1.0)]))

    assert rendering.engine == "numpy-fallback"
    assert rendering.soundfont is None
    assert "FluidSynth is not available" in rendering.note
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert peak_hz(rendering) == pytest.approx(440.0, abs=3.0)
    assert rendering.seconds >= 2.0
    assert abs(rendering.rms_dbfs - -18.0) <= 1.0


def test_fallback_when_no_soundfont_is_found():
    renderer = audio.Renderer()
    renderer.soundfonts = []

    rendering = renderer.render(make_midi([(69, 100, 0.0, 1.0)]))

    assert rendering.engine == "numpy-fallback"
    assert "soundfont" in rendering.note
    assert peak_hz(rendering) == pytest.approx(440.0, abs=3.0)


def test_find_soundfonts_order(tmp_path, monkeypatch):
    explicit, from_env = tmp_path / "explicit.sf2", tmp_path / "env.sf3"
    repo_dir = tmp_path / "soundfonts"
    repo_dir.mkdir()
    in_repo = repo_dir / "repo.sf2"
    for path in (explicit, from_env, in_repo, repo_dir / "notes.txt"):
        path.write_bytes(b"RIFF")
    monkeypatch.setenv("MUSICGEN_SOUNDFONT", str(from_env))
    monkeypatch.setenv("MUSICGEN_ROOT", str(tmp_path))

    found = audio.find_soundfonts(explicit)

    assert found[:3] == [explicit, from_env, in_repo]
    assert len(found) == len({p.resolve() for p in found})
    assert audio.find_soundfonts(from_env)[:2] == [from_env, in_repo]  # env path listed once
    with pytest.raises(UserError, match="missing.sf2"):
        audio.find_soundfonts(tmp_path / "missing.sf2")


def test_write_wav_round_trips(tmp_path):
    renderer = audio.Renderer()
    rendering = renderer.render(make_midi([(60, 90, 0.0, 0.5), (64, 90, 0.25, 0.75)]))

    path = audio.write_wav(tmp_path / "clip.wav", rendering)

    with wave.open(str(path), "rb") as wav:
        assert wav.getframerate() == audio.SAMPLE_RATE
        assert wav.getnchannels() == 2
        assert wav.getsampwidth() == 2
        assert wav.getnframes() == len(rendering.audio)
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
    np.testing.assert_allclose(pcm / 32767, rendering.audio, atol=1 / 32767)


def test_empty_midi_renders_short_silence():
    renderer = audio.Renderer()
    for midi in (pretty_midi.PrettyMIDI(), make_midi()):
        rendering = renderer.render(midi)
        assert 0.5 <= rendering.seconds <= 2.0
        assert rendering.audio.shape == (round(rendering.seconds * audio.SAMPLE_RATE), 2)
        assert not rendering.audio.any()
        assert rendering.rms_dbfs == audio.SILENCE_DBFS


def test_compressed_output_plays_back(tmp_path):
    import soundfile

    rendering = audio.Renderer().render(make_midi([(60, 90, 0.0, 0.5), (64, 90, 0.5, 1.0)]))
    wav = audio.write_audio(tmp_path / "clip.wav", rendering)
    for suffix in (".mp3", ".ogg"):
        path = audio.write_audio(tmp_path / f"clip{suffix}", rendering)
        assert path.suffix == suffix
        decoded, rate = soundfile.read(path, dtype="float32")
        assert rate == audio.SAMPLE_RATE and decoded.shape[1] == 2
        assert abs(len(decoded) - len(rendering.audio)) < 0.1 * rate  # encoder padding only
        assert np.abs(decoded).max() > 0.05
        assert path.stat().st_size < wav.stat().st_size / 4
    with pytest.raises(ValueError, match="flac"):
        audio.write_compressed(tmp_path / "clip.flac", rendering, fmt="flac")


def test_mp3_size_depends_on_length_only(tmp_path):
    renderer = audio.Renderer()
    sparse = audio.fitted(renderer.render(make_midi([(60, 40, 0.0, 0.5)])), 4.0)
    busy = audio.fitted(renderer.render(make_midi(
        [(48 + t % 24, 110, t / 8, t / 8 + 0.4) for t in range(30)])), 4.0)
    for mono in (True, False):
        sizes = {audio.write_compressed(tmp_path / f"{name}.mp3", clip, mono=mono).stat().st_size
                 for name, clip in (("sparse", sparse), ("busy", busy))}
        assert len(sizes) == 1  # a listener's browser cannot tell the music by its size


def test_fitted_clips_have_one_length_and_loudness():
    renderer = audio.Renderer()
    quiet = renderer.render(make_midi([(60 + t % 5, 30, t / 4, t / 4 + 0.3) for t in range(16)]))
    loud = renderer.render(make_midi([(60, 120, t / 4, t / 4 + 0.2) for t in range(40)]))
    clips = [audio.fitted(r, 3.0) for r in (quiet, loud)]
    for clip in clips:
        assert clip.audio.shape == (3 * audio.SAMPLE_RATE, 2) and clip.seconds == 3.0
        assert clip.audio[0].max() == 0.0 and np.abs(clip.audio[-1]).max() < 1e-3  # faded
    assert abs(clips[0].rms_dbfs - clips[1].rms_dbfs) < 0.5
    assert abs(clips[1].rms_dbfs - 20 * np.log10(np.sqrt(np.mean(clips[1].audio ** 2)))) < 0.01


def test_matched_clips_share_one_level_that_no_peak_caps():
    renderer = audio.Renderer()
    even = renderer.render(make_midi([(60 + t % 5, 70, t / 4, t / 4 + 0.3) for t in range(16)]))
    # Quiet playing with one loud accent: a high peak for its RMS, as real performances have.
    accented = renderer.render(make_midi([(60, 20, t / 4, t / 4 + 0.3) for t in range(16)]
                                         + [(48, 127, 2.0, 2.5), (72, 127, 2.0, 2.5)]))
    fitted = [audio.fitted(r, 4.0) for r in (even, accented)]
    assert fitted[1].rms_dbfs < fitted[0].rms_dbfs - 1  # fitted() alone caps the accented one
    clips = audio.matched(fitted)
    levels = [20 * np.log10(np.sqrt(np.mean(c.audio.astype(np.float64) ** 2))) for c in clips]
    assert abs(levels[0] - levels[1]) < 0.05
    assert all(np.abs(c.audio).max() <= 10 ** (audio.PEAK_DBFS / 20) + 1e-4 for c in clips)
    assert audio.matched([audio.fitted(renderer.render(make_midi()), 1.0)])[0].rms_dbfs == \
        audio.SILENCE_DBFS  # silence stays silence


def test_default_renderer_is_shared():
    assert audio.default_renderer() is audio.default_renderer()


class _FakeSynth:
    """Stands in for fluidsynth.Synth where only the pool's bookkeeping is tested."""

    def __init__(self, **settings):
        pass

    def sfload(self, path):
        return -1 if "broken" in str(path) else 1

    def delete(self):
        pass


class _FakeFluidsynth:
    Synth = _FakeSynth


def test_a_synth_given_back_reaches_the_render_waiting_for_its_soundfont(tmp_path):
    import threading
    import time

    renderer = audio.Renderer(synths=1)
    a, b = str(tmp_path / "a.sf2"), str(tmp_path / "b.sf2")
    held_a = renderer._take_synth(_FakeFluidsynth, a)
    held_b = renderer._take_synth(_FakeFluidsynth, b)
    got = {}
    waiters = [threading.Thread(target=lambda path=path: got.update(
        {path: renderer._take_synth(_FakeFluidsynth, path)}), daemon=True) for path in (b, a)]
    for waiter in waiters:  # the waiter for b first: a single wake-up would reach it
        waiter.start()
        while len(renderer._lock._waiters) < waiters.index(waiter) + 1:  # asleep in the pool
            time.sleep(0.001)
    renderer._give_back(a, held_a)
    waiters[1].join(timeout=10)
    assert got.get(a) is held_a  # not left asleep beside an idle synth
    renderer._give_back(b, held_b)
    waiters[0].join(timeout=10)
    assert got.get(b) is held_b


def test_a_soundfont_that_fails_to_load_frees_its_slot(tmp_path):
    renderer = audio.Renderer(synths=1)
    broken = str(tmp_path / "broken.sf2")
    assert renderer._take_synth(_FakeFluidsynth, broken) is None
    assert renderer._take_synth(_FakeFluidsynth, broken) is None  # would block if the slot leaked

    class Raising(_FakeFluidsynth):
        class Synth(_FakeSynth):
            def sfload(self, path):
                raise OSError("unreadable")

    with pytest.raises(OSError):
        renderer._take_synth(Raising, str(tmp_path / "c.sf2"))
    assert renderer._take_synth(_FakeFluidsynth, str(tmp_path / "c.sf2")) is not None


def _so_far(notes, seconds: float) -> pretty_midi.PrettyMIDI:
    """The music as known at `seconds`: later notes unknown, notes still sounding closed there."""
    return make_midi([(p, v, s, min(e, seconds)) for p, v, s, e in notes if s < seconds])


# Chords, a restruck key, overlapping notes of one pitch, and notes ending as others begin.
LIVE_NOTES = [(48 + (7 * i) % 30, 40 + (13 * i) % 80, 0.25 * i, 0.25 * i + 0.1 + 0.4 * (i % 5))
              for i in range(40)] + [(60, 90, 1.0, 4.0), (60, 70, 2.0, 2.5), (72, 100, 3.0, 3.25)]


@pytest.mark.parametrize("known", [(0.0, 0.6, 0.6, 2.05, 2.5, 7.3),
                                   (1.013, 4.5, 15.0)])  # past the end: it ended in silence
def test_a_live_render_gives_the_samples_of_a_render_of_the_finished_music(fluid_r3, known):
    final = make_midi(LIVE_NOTES)
    # Fresh renderers: a synth's reverb modulation runs on from one render to
    # the next, so only two first renders can be compared sample for sample.
    alone = audio.Renderer().render(final, str(fluid_r3))
    renderer = audio.Renderer(synths=2)  # one for live renders, one for the others
    with renderer.live(fluid_r3) as live:
        for seconds in known:
            live.advance(_so_far(LIVE_NOTES, seconds), seconds)
        together = renderer.render(final, str(fluid_r3), live=live)
        assert len(renderer._free[str(fluid_r3.resolve())]) == 1  # given back at once

    assert live.played_samples >= min(known[-1] - 0.01, 7.2) * audio.SAMPLE_RATE
    assert live.restarts == 0
    assert together.seconds == alone.seconds and together.rms_dbfs == alone.rms_dbfs
    np.testing.assert_array_equal(together.audio, alone.audio)
    assert renderer._live == 0


def test_a_live_render_plays_again_what_the_finished_music_changed(fluid_r3, caplog):
    final = make_midi(LIVE_NOTES)
    alone = audio.Renderer().render(final, str(fluid_r3))
    renderer = audio.Renderer(synths=2)
    with renderer.live(fluid_r3) as live:
        # Said to be final up to 3 s, but the note at 1 s ends at 4 s, not 2 s.
        live.advance(_so_far(LIVE_NOTES, 2.0), 3.0)
        with caplog.at_level(logging.WARNING, logger="musicgen.audio"):
            together = renderer.render(final, str(fluid_r3), live=live)

    assert live.restarts == 1 and "playing it again" in caplog.text
    # Played again on a synth that already played (its reverb modulation ran
    # on): not the same samples, but the same sound, the long note included.
    assert together.audio.shape == alone.audio.shape
    ours, theirs = log_spectrogram(alone.audio), log_spectrogram(together.audio)
    audible = ours > ours.max() - 60
    assert np.abs(ours - theirs)[audible].mean() < 3.0


def test_a_live_render_leaves_a_synth_for_other_renders(fluid_r3, tmp_path):
    final = make_midi(LIVE_NOTES[:8])
    renderer = audio.Renderer(synths=2)
    with renderer.live(fluid_r3) as first, renderer.live(fluid_r3) as second:
        second.advance(_so_far(LIVE_NOTES[:8], 1.0), 1.0)  # no synth to spare: nothing to do
        assert second.played_samples == 0
        renderer.render(final, str(fluid_r3))  # does not wait for the live render's synth
        # Its soundfont spelled another way, as a link: still its synth, not a wait for it.
        link = tmp_path / "link.sf2"
        link.symlink_to(fluid_r3)
        first.advance(_so_far(LIVE_NOTES[:8], 1.0), 1.0)
        rendering = renderer.render(final, str(link), live=first)
    assert rendering.engine == "fluidsynth" and rendering.seconds > 2.0
    assert first.played_samples > 0 and first.restarts == 0
    with audio.Renderer().live(fluid_r3) as alone:  # a single synth is never held live
        alone.advance(_so_far(LIVE_NOTES[:8], 1.0), 1.0)
        assert alone.played_samples == 0
    with pytest.raises(UserError, match="there is no soundfont file"):
        renderer.live("/nonexistent.sf2")


def test_a_failing_live_render_leaves_the_clip_to_the_render_after(fluid_r3, caplog):
    renderer = audio.Renderer(synths=2)
    with renderer.live(fluid_r3) as live:
        broken = make_midi([(60, 100, 0.0, 1.0)])
        broken.instruments[0].notes[0].pitch = None  # a bug upstream, say
        with caplog.at_level(logging.ERROR, logger="musicgen.audio"):
            live.advance(broken, 2.0)
        assert "rendered after sampling" in caplog.text and renderer._live == 0
        rendering = renderer.render(make_midi(LIVE_NOTES[:8]), str(fluid_r3), live=live)
    assert rendering.engine == "fluidsynth" and rendering.seconds > 2.0
