"""The Gradio app, driven by real clients: gradio_client over HTTP, and headless Chromium."""

import os
import shutil
import socket
import wave
from pathlib import Path

import pytest
from conftest import midi_bytes, tiny_checkpoint

from musicgen.midi import read_midi

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """The real app on 127.0.0.1 with a small randomly initialised LSTM."""
    import app
    from musicgen.studio import Studio

    root = tmp_path_factory.mktemp("app")
    tiny_checkpoint(root / "checkpoints" / "lstm", "lstm")
    studio = Studio(root / "checkpoints", output_dir=root / "outputs")
    demo = app.build_app(studio)
    demo.queue(default_concurrency_limit=1)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                max_file_size="5mb", allowed_paths=[str(studio.output_dir)], quiet=True,
                show_error=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture
def client(app_url):
    from gradio_client import Client
    return Client(app_url, verbose=False)


def _generate(client, upload=None, source="upload", n=2, seconds=5, seed=1, new_seed=False):
    from gradio_client import handle_file
    return client.predict(
        source=source, example="Beethoven: Ode to Joy",
        upload=handle_file(str(upload)) if upload else None, seed_seconds=5, model="lstm",
        soundfont=None, seconds=seconds, temperature=1.0, top_k=0, top_p=0.95, seed=seed, n=n,
        include_seed=True, new_seed=new_seed, api_name="/generate")


def test_upload_generate_two_candidates_that_decode(client, tmp_path):
    seed = tmp_path / "seed.mid"
    seed.write_bytes(midi_bytes([(60, 80, 0.0, 0.5), (64, 80, 0.5, 1.0), (67, 80, 1.0, 2.0)]))
    result = _generate(client, seed)
    # Per visible slot: audio, MIDI, piano roll, text, rating.
    for variation, slot in ((1, result[0:5]), (2, result[5:10])):
        audio, midi, roll, text = slot[:4]
        with wave.open(audio) as handle:
            assert handle.getframerate() == 44100 and handle.getnframes() > 44100
        assert len(read_midi(midi)) > 0
        assert Path(roll).stat().st_size > 1000
        assert f"variation {variation}," in text
    assert result[10] is None  # the third slot stays empty


def test_a_corrupt_upload_is_an_error_and_the_app_keeps_serving(client, tmp_path):
    from gradio_client.exceptions import AppError
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\x40\x00")
    with pytest.raises(AppError, match="truncated"):
        _generate(client, bad)
    not_midi = tmp_path / "notes.mid"
    not_midi.write_bytes(b"just some text")
    with pytest.raises(AppError, match="not a MIDI file"):
        _generate(client, not_midi)
    result = _generate(client, source="example", n=1)
    assert result[0] and Path(result[0]).is_file()


def test_an_emptied_variation_field_plays_a_new_variation_and_shows_it(client):
    result = _generate(client, source="example", n=1, seed=None)
    variation = result[-1]  # written back into the field
    assert isinstance(variation, int | float) and f"variation {int(variation)}" in result[3]


def test_sliders_take_their_limits_from_the_settings(client):
    from gradio_client.exceptions import AppError

    from musicgen.settings import LIMITS
    with pytest.raises(AppError, match=f"maximum value {LIMITS['seconds'].high:g}"):
        _generate(client, source="example", n=1, seconds=LIMITS["seconds"].high + 1)


def test_upload_missing_gives_a_plain_message(client):
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match="upload a .mid"):
        _generate(client, None)


def test_ratings_are_saved(client, app_url):
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match="Generate something first"):
        client.predict("5", None, None, None, api_name="/rate")


def _chromium_or_skip():
    if not os.path.exists(CHROMIUM):
        reason = f"{CHROMIUM} is not installed (make test installs it where it may)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("SKIP: playwright is not installed")
        pytest.skip("playwright is not installed")
    return sync_playwright


def test_browser_pick_example_generate_and_hear(app_url, tmp_path):
    sync_playwright = _chromium_or_skip()
    shot = tmp_path / "app-after-generate.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS,
                                             headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.goto(app_url, wait_until="domcontentloaded")
            page.get_by_role("button", name="Generate", exact=True).wait_for(timeout=60_000)
            page.get_by_label("Example", exact=True).click()
            page.get_by_role("option", name="Slow waltz in D").click()
            page.get_by_label("Length of the continuation (seconds)").first.fill("5")
            page.get_by_role("button", name="Generate", exact=True).click()
            page.get_by_text("notes/s").first.wait_for(timeout=120_000)
            audio = page.locator(".candidate-audio audio[src]").first
            audio.wait_for(state="attached", timeout=30_000)
            assert audio.get_attribute("src")
            # The browser decoded the clip: it knows how long it is (seed + 5 s + tail).
            for _ in range(60):
                duration = audio.evaluate("a => a.duration")
                if duration and duration > 5:
                    break
                page.wait_for_timeout(500)
            assert duration > 5
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("MUSICGEN_SCREENSHOT")
    if keep:  # for the README: MUSICGEN_SCREENSHOT=docs/screenshot.png make test
        shutil.copy(shot, keep)
