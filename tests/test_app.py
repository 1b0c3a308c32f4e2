"""The Gradio app, driven by real clients: gradio_client over HTTP, and headless Chromium.

The browser tests save a screenshot of each step under tmp/screenshots/ for review.
"""

import os
import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import REPO, midi_bytes, tiny_checkpoint

from musicgen.audio import SAMPLE_RATE
from musicgen.midi import read_midi
from musicgen.recipe import read_recipe

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]
SCREENSHOTS = REPO / "tmp" / "screenshots"
DESKTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(studio):
    """The real app around `studio` on a free port of 127.0.0.1: (its URL, the Blocks)."""
    import app

    demo = app.build_app(studio)
    port = _free_port()
    app.launch(demo, studio, server_name="127.0.0.1", server_port=port,
               prevent_thread_lock=True, quiet=True)
    return f"http://127.0.0.1:{port}/", demo


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The real app on 127.0.0.1 with a small randomly initialised LSTM that reads a key,
    register and density (so that the page shows those controls)."""
    from musicgen.studio import Studio

    root = tmp_path_factory.mktemp("app")
    tiny_checkpoint(root / "checkpoints" / "lstm", "lstm-controls")
    studio = Studio(root / "checkpoints", output_dir=root / "outputs",
                    ratings_path=root / "var" / "ratings.sqlite")
    url, demo = serve(studio)
    yield url, studio
    demo.close()


@pytest.fixture(scope="module")
def app_url(served):
    return served[0]


@pytest.fixture
def client(app_url):
    from gradio_client import Client
    return Client(app_url, verbose=False)


def _generate(client, upload=None, seed_kind="upload", n=2, seconds=5, variation=1,
              new_variation=False) -> dict:
    """One Generate call; the outputs by name."""
    from gradio_client import handle_file

    import app
    result = client.predict(
        seed_kind=seed_kind, example="Beethoven: Ode to Joy",
        upload=handle_file(str(upload)) if upload else None, seed_seconds=5, seed_start=None,
        model="lstm", soundfont=None, seconds=seconds, temperature=0.8, top_k=0, top_p=0.95,
        min_p=0.05, variation=variation, n=n, include_seed=True, max_silence=4, paired_notes=True,
        keep_timing=False, release_held_keys=False, key="E minor", register="free",
        density="sparser", new_variation=new_variation, api_name="/generate")
    # gradio_client leaves out layout blocks (the slot columns) and session state.
    names = [name for name in [*app.GENERATE_OUTPUTS, "status"]
             if not name.startswith("slot") and name != "session"]
    return dict(zip(names, result, strict=True))


def test_upload_generate_two_candidates_that_decode(client, tmp_path):
    seed = tmp_path / "seed.mid"
    seed.write_bytes(midi_bytes([(60, 80, 0.0, 0.5), (64, 80, 0.5, 1.0), (67, 80, 1.0, 2.0)]))
    out = _generate(client, seed)
    for i in (0, 1):
        midi, audio = sorted(out[f"files{i}"], key=lambda f: not str(f).endswith(".mid"))
        decoded, rate = soundfile.read(audio)
        assert audio.endswith(".mp3") and rate == SAMPLE_RATE and decoded.ndim == 1
        assert len(decoded) > SAMPLE_RATE and os.path.getsize(audio) < 200_000
        assert len(read_midi(midi)) > 0
        recipe = read_recipe(midi)  # the Advanced settings, none at its default, reached it
        assert recipe["paired_notes"] is True and recipe["keep_timing"] is False
        assert recipe["release_held_keys"] is False
        assert recipe["min_p"] == 0.05 and recipe["temperature"] == 0.8
        assert (recipe["key"], recipe["register"], recipe["density"]) == ("E minor", "free",
                                                                          "sparser")
        assert "<svg" in out[f"player{i}"] and "mg-cursor" in out[f"player{i}"]
        assert f"variation {1 + i}," in out[f"info{i}"]
    assert out["files2"] is None  # the third slot stays empty
    assert out["status"].startswith("Done: variation 1.")
    assert "A variation number gives the same notes again" in out["status"]


def test_a_corrupt_upload_is_a_plain_message_and_the_app_keeps_serving(client, tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\x40\x00")
    assert "truncated" in _generate(client, bad)["status"]
    not_midi = tmp_path / "notes.mid"
    not_midi.write_bytes(b"just some text")
    assert "not a MIDI file" in _generate(client, not_midi)["status"]
    out = _generate(client, seed_kind="example", n=1)
    assert out["files0"] and Path(out["files0"][0]).is_file()


def test_a_too_large_upload_is_refused_in_our_words_before_it_is_sent(client, app_url,
                                                                       tmp_path):
    import httpx

    big = midi_bytes([(60, 90, 0, 1)]) + b"\0" * (6 * 2**20)
    refused = httpx.post(app_url + "gradio_api/upload", files={"files": ("big.mid", big)})
    assert refused.status_code == 413
    assert refused.text == "That file is 6.0 MB; seed MIDI files are limited to 5 MB."
    chunked = httpx.post(app_url + "gradio_api/upload", content=iter([b"--x\r\n"]),
                         headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert chunked.status_code == 411  # no length said: it could run on without end
    # Just over the limit, within the form's slack: the file is read and refused by prompt.py.
    edge = tmp_path / "edge.mid"
    edge.write_bytes(midi_bytes([(60, 90, 0, 1)]) + b"\0" * (5 * 2**20))
    assert "seed MIDI files are limited to 5 MB" in _generate(client, edge)["status"]


def test_an_emptied_variation_field_plays_a_new_variation_and_shows_it(client):
    out = _generate(client, seed_kind="example", n=1, variation=None)
    assert isinstance(out["variation"], int | float)
    assert f"variation {int(out['variation'])}," in out["info0"]


def test_sliders_take_their_limits_from_the_settings(client):
    from gradio_client.exceptions import AppError

    from musicgen.settings import LIMITS
    with pytest.raises(AppError, match=f"maximum value {LIMITS['seconds'].high:g}"):
        _generate(client, seed_kind="example", n=1, seconds=LIMITS["seconds"].high + 1)


def test_upload_missing_gives_a_plain_message(client):
    assert "upload a .mid or .midi file first" in _generate(client, None)["status"]


def test_ratings_are_one_row_per_clip_and_session(client, served):
    studio = served[1]
    with pytest.raises(Exception, match="generate something first"):
        studio.rate("s", [], ["5"])
    recipes = [{"model": "lstm", "seed": 1}, {"model": "lstm", "seed": 2}]
    studio.rate("session-a", recipes, ["4", None])
    studio.rate("session-a", recipes, ["2", "5"])  # saving again updates
    studio.rate("session-b", recipes, ["3", None])
    rows = studio.ratings.clip_ratings()
    by_session = sorted((r["session"], r["recipe"]["seed"], r["score"]) for r in rows)
    assert by_session == [("session-a", 1, 2), ("session-a", 2, 5), ("session-b", 1, 3)]


def test_the_ratings_database_is_not_downloadable(client, served, app_url):
    import httpx
    studio = served[1]
    for path in (studio.ratings.path, studio.ratings.path.resolve()):
        response = httpx.get(f"{app_url}gradio_api/file={path}")
        assert response.status_code in (403, 404), response.status_code


def test_the_api_cannot_skip_the_queue(app_url):
    """Off Spaces Gradio leaves /gradio_api/run/... open, around every concurrency limit."""
    import httpx
    for name in ("generate", "results", "rate"):
        response = httpx.post(f"{app_url}gradio_api/run/{name}", json={"data": []}, timeout=30)
        assert response.status_code >= 400, (name, response.status_code, response.text[:200])


def test_a_database_in_gradio_s_temp_folder_is_refused_at_start_up(tmp_path):
    """On a Space, GRADIO_TEMP_DIR=/data beside /data/musicgen/ratings.sqlite served it."""
    import subprocess
    import sys

    tiny_checkpoint(tmp_path / "checkpoints" / "lstm", "lstm")
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp_path / "data"),
           "MUSICGEN_RATINGS_DB": str(tmp_path / "data" / "musicgen" / "ratings.sqlite")}
    run = subprocess.run([sys.executable, "app.py", "--checkpoints", str(tmp_path / "checkpoints"),
                          "--port", str(_free_port())], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]  # libraries may print notices before it
    assert last.startswith("musicgen app: the ratings database "), run.stderr
    assert "would be downloadable from the app's folder" in last
    assert "Traceback" not in run.stderr


# --- headless Chromium ---

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


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _chromium_or_skip()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS,
                                              headless=True)
        yield launched
        launched.close()


def _open(browser, url, viewport=DESKTOP):
    page = browser.new_page(viewport=viewport)
    page.goto(url, wait_until="domcontentloaded")
    # Gradio pages never reach "networkidle" (heartbeat): wait for what we need.
    page.locator("#generate-button").wait_for(timeout=60_000)
    page.locator("input[type=file]").first.wait_for(state="attached", timeout=60_000)
    # The page is whole once its load event has rendered the example's excerpt.
    page.locator("audio[src]").first.wait_for(state="attached", timeout=60_000)
    return page


def _shot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _generate_in(page, timeout=120_000):
    """Click Generate and wait until the button is back (the whole chain has run)."""
    button = page.locator("#generate-button")
    button.click()
    page.get_by_role("button", name="Generating…").wait_for(timeout=30_000)
    page.get_by_role("button", name="Generate", exact=True).wait_for(timeout=timeout)


def _performance(tmp_path, minutes=3.0, band: bool = False) -> Path:
    """A MAESTRO-like performance: minutes of dense playing, then a long final chord
    (with `band`, a bass track and drums besides)."""
    rng = np.random.default_rng(0)
    notes, t = [], 0.0
    while t < 60 * minutes:
        for _ in range(3):
            notes.append((int(rng.integers(40, 84)), int(rng.integers(40, 100)), t,
                          t + float(rng.uniform(0.1, 0.8))))
        t += float(rng.uniform(0.1, 0.4))
    notes += [(pitch, 50, t, t + 8.0) for pitch in (36, 48, 55, 60)]
    path = tmp_path / "performance.mid"
    extra = {"extra_instruments": [[(36, 80, 0.0, 4.0)]], "drums": [(36, 100, 0.0, 0.1)]}
    path.write_bytes(midi_bytes(notes, **(extra if band else {})))
    return path


def test_generate_is_in_view_and_a_long_upload_continues_a_lively_part(browser, app_url,
                                                                        tmp_path):
    page = _open(browser, app_url)
    box = page.locator("#generate-button").bounding_box()
    assert box["y"] + box["height"] <= DESKTOP["height"], box
    # Room under the button for the progress bar and queue position.
    assert page.locator(".mg-status").first.bounding_box()["height"] >= 30
    _shot(page, "generate-tab")
    page.locator("input[type=file]").first.set_input_files(str(_performance(tmp_path,
                                                                           band=True)))
    page.get_by_text("notes; 2 tracks merged into one piano part; drums left out.").wait_for(
        timeout=30_000)
    assert page.get_by_label("Your MIDI file").is_checked()  # dropping a file chose it
    start = float(page.get_by_label("Excerpt starts at (seconds)").input_value())
    assert 30 < start < 170  # not the final chord
    page.wait_for_timeout(1000)  # let the excerpt's preview, started by the upload, finish
    _generate_in(page)
    _shot(page, "generate-upload-result")
    status = page.locator(".mg-status").first.inner_text()
    assert "⚠️" not in status, status
    info = page.get_by_text("notes/s").first.inner_text()
    assert "No notes" not in info and "upload:performance.mid" in page.content()
    # What a screen reader is told: the roll's range and length, and the player's name.
    roll = page.get_by_role("img", name=re.compile(r"^Piano roll: \d+ notes over \d+ s, "
                                                   r"\S+ to \S+; the seed to 10 s"))
    assert roll.count() >= 1
    assert page.get_by_label(re.compile(r"^LSTM #1: audio, \d+ s$")).count() == 1
    audio = page.locator(".mg-player audio").first
    duration = audio.evaluate("a => new Promise(done => a.readyState >= 1 ? done(a.duration)"
                              " : a.addEventListener('loadedmetadata', () => done(a.duration)))")
    assert duration > 5
    # The cursor follows playback: seek, and it moves along the roll.
    cursor = page.locator(".mg-cursor").first
    before = float(cursor.get_attribute("x1"))
    audio.evaluate("a => { a.currentTime = a.duration / 2; }")
    page.wait_for_function("x => +document.querySelector('.mg-cursor').getAttribute('x1') > x",
                           arg=before + 100, timeout=10_000)
    _shot(page, "generate-result")


def test_an_error_keeps_the_last_result_and_every_input_usable(browser, app_url, tmp_path):
    page = _open(browser, app_url)
    _generate_in(page)
    players = page.locator(".mg-player audio")
    first_src = players.first.get_attribute("src")
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\x40\x00")
    page.locator("input[type=file]").first.set_input_files(str(bad))
    page.get_by_text("⚠️").first.wait_for(timeout=30_000)
    # Dropping even a bad file chooses it: Generate must say why, not continue the example.
    assert page.get_by_label("Your MIDI file").is_checked()
    _generate_in(page)
    message = page.locator(".mg-status").first.inner_text()
    assert "truncated" in message, message
    assert players.first.get_attribute("src") == first_src  # the last good result stays
    assert not page.locator(".error").count()  # no error badge over anything
    _shot(page, "error-kept-result")
    # Every input still works: back to an example, and Generate plays again. The message
    # was about the file; choosing another seed takes it away.
    page.get_by_label("Built-in example").check()
    page.wait_for_function("!document.querySelector('.mg-status').innerText.includes('⚠️')",
                           timeout=5_000)
    page.get_by_label("Example", exact=True).click()
    page.get_by_role("option", name="Slow waltz in D").click()
    _generate_in(page)
    assert players.first.get_attribute("src") != first_src
    assert "Slow waltz" in page.content()


def test_what_is_said_about_a_file_goes_with_it_and_its_limit_is_said_in_our_words(
        browser, app_url, tmp_path):
    page = _open(browser, app_url)
    upload = page.locator("input[type=file]").first
    upload.set_input_files(str(_performance(tmp_path, minutes=2)))
    page.get_by_text("The excerpt starts at").wait_for(timeout=30_000)
    assert page.get_by_label("Excerpt starts at (seconds)").is_visible()
    page.get_by_label("Clear").first.click()
    page.get_by_text("The excerpt starts at").wait_for(state="detached", timeout=10_000)
    assert not page.get_by_label("Excerpt starts at (seconds)").is_visible()
    page.get_by_text("The excerpt the model continues").wait_for(state="hidden",
                                                                  timeout=10_000)
    _shot(page, "upload-cleared")
    big = tmp_path / "big.mid"
    big.write_bytes(midi_bytes([(60, 90, 0, 1)]) + b"\0" * (6 * 2**20))
    upload.set_input_files(str(big))
    page.get_by_text("That file is 6.0 MB; seed MIDI files are limited to 5 MB.").wait_for(
        timeout=30_000)
    _shot(page, "upload-too-large")


def test_a_second_click_on_generate_does_not_start_a_second_generation(browser, served):
    url, studio = served
    page = _open(browser, url)
    before = {path.parent for path in studio.output_dir.rglob("candidate-*")}
    button = page.locator("#generate-button")
    button.click()
    for gap_ms in (50, 300):  # a double click, and an impatient second press
        page.wait_for_timeout(gap_ms)
        button.click(force=True)  # as a person would, whether it looks enabled or not
    page.get_by_role("button", name="Generate", exact=True).wait_for(timeout=60_000)
    page.wait_for_timeout(1500)  # a second run, had one started, would be writing by now
    after = {path.parent for path in studio.output_dir.rglob("candidate-*")}
    assert len(after - before) == 1


def _no_error_shown(page) -> None:
    """Neither a Gradio error toast nor an "Error" badge anywhere on the page."""
    assert not page.locator(".toast-body").count(), page.locator(".toast-body").all_inner_texts()
    assert not page.locator(".error").count(), page.locator(".error").all_inner_texts()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_every_advanced_control_can_be_typed_dragged_and_clicked(browser, served, viewport):
    page = _open(browser, served[0], viewport)
    page.get_by_text("Advanced").first.click()
    numbers = page.locator("input[data-testid=number-input]")  # each slider's typed value
    labels = [label.removeprefix("number input for ")
              for label in numbers.evaluate_all("inputs => inputs.map(i => i.ariaLabel)")]
    assert {"Temperature", "Top-p", "Top-k", "Min-p", "Candidates"} <= set(labels), labels
    for label in labels:
        number = page.get_by_label(f"number input for {label}", exact=True)
        track = page.get_by_label(f"range slider for {label}", exact=True)
        if not track.is_visible():
            continue
        number.fill(number.get_attribute("min"))
        number.press("Enter")
        page.wait_for_timeout(300)
        _no_error_shown(page)
        track.scroll_into_view_if_needed()
        box = track.bounding_box()  # the mouse goes where the page is now
        middle = box["y"] + box["height"] / 2
        page.mouse.click(box["x"] + box["width"] * 0.3, middle)
        page.mouse.move(box["x"] + box["width"] * 0.3, middle)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.6, middle, steps=5)
        page.mouse.up()
        page.wait_for_timeout(300)
        _no_error_shown(page)
        assert float(number.input_value()) > float(number.get_attribute("min")), label
    assert not page.get_by_label("Balanced").is_checked()  # moved by hand: no preset now
    checkboxes = page.locator("input[type=checkbox]")
    for i in range(checkboxes.count()):
        if checkboxes.nth(i).is_visible():
            checkboxes.nth(i).click()
            page.wait_for_timeout(200)
            _no_error_shown(page)
    page.get_by_label("Balanced").check()  # a preset still sets the sliders after all that
    page.wait_for_timeout(500)
    _no_error_shown(page)
    for label, option in (("Key", "D minor"), ("Density", "denser"), ("Register", "higher")):
        page.get_by_label(label, exact=True).click()
        page.get_by_role("option", name=option, exact=True).click()
        page.wait_for_timeout(200)
        _no_error_shown(page)
    length = page.get_by_label("number input for Length of the continuation (seconds)")
    length.fill("3")
    length.press("Enter")
    _generate_in(page)
    _no_error_shown(page)
    status = page.locator(".mg-status").first.inner_text()
    assert "⚠️" not in status and "Done" in status, status
    newest = max(served[1].output_dir.rglob("*.mid"), key=os.path.getmtime)
    recipe = read_recipe(newest)  # what was picked reached the sampler's recipe
    assert (recipe["key"], recipe["density"], recipe["register"]) == ("D minor", "denser",
                                                                      "higher")
    _shot(page, f"advanced-touched-{'phone' if viewport is PHONE else 'desktop'}")


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_the_new_result_scrolls_into_view(browser, app_url, viewport):
    page = _open(browser, app_url, viewport)
    assert page.evaluate("window.scrollY") == 0
    _generate_in(page)
    player = page.locator(".mg-player").first
    page.wait_for_function("() => { const box = document.querySelector('.mg-player')"
                           ".getBoundingClientRect(); return box.top >= 0 && "
                           "box.bottom <= window.innerHeight; }", timeout=10_000)
    assert player.is_visible()
    _shot(page, f"result-in-view-{'phone' if viewport is PHONE else 'desktop'}")


def test_continue_from_this_and_undo(browser, app_url):
    page = _open(browser, app_url)
    _generate_in(page)
    first = page.locator(".mg-player audio").first.get_attribute("src")
    page.get_by_role("button", name="Continue from this").first.click()
    page.get_by_text("Continuing from candidate 1").wait_for(timeout=30_000)
    page.get_by_role("button", name="Generate", exact=True).wait_for(timeout=120_000)
    page.wait_for_function("src => document.querySelector('.mg-player audio').getAttribute("
                           "'src') !== src", arg=first, timeout=60_000)
    assert "of upload:candidate-1-variation" in page.content()
    _shot(page, "continued")
    page.get_by_role("button", name="Undo continue").click()
    page.get_by_text("Back to the seed MIDI").wait_for(timeout=30_000)
    page.wait_for_function("src => document.querySelector('.mg-player audio').getAttribute("
                           "'src') === src", arg=first, timeout=30_000)
    assert page.get_by_label("Built-in example").is_checked()
    assert page.get_by_role("button", name="Undo continue").is_disabled()


def test_the_phone_layout_puts_generate_first_and_stacks_player_and_files(browser, app_url):
    page = _open(browser, app_url, PHONE)
    box = page.locator("#generate-button").bounding_box()
    assert box["y"] + box["height"] <= PHONE["height"], box
    assert page.get_by_role("tab").count() == 5  # all of them: none hidden behind a menu
    _generate_in(page)
    player = page.locator(".mg-player").first.bounding_box()
    files = page.get_by_text("Download (MIDI with its recipe, MP3)").first.bounding_box()
    assert files["y"] >= player["y"] + player["height"] - 1  # below, not beside
    assert player["width"] <= PHONE["width"]
    _shot(page, "phone")


def test_the_confidence_plot_of_the_last_clip_has_nothing_over_it(browser, app_url):
    page = _open(browser, app_url)
    _generate_in(page)
    page.get_by_role("tab", name="Temperature").click()
    page.get_by_role("button", name="Plot my last generated clip (candidate 1)").click()
    plot = page.locator("#mg-last-plot img")
    plot.wait_for(timeout=30_000)
    # Gradio's label badge and its buttons sit over the picture's top corners.
    covering = page.locator("#mg-last-plot :is([data-testid=block-label], button:not(:has(img)))")
    assert not [element.evaluate("e => e.outerHTML") for element in covering.all()
                if element.is_visible()]
    _shot(page, "temperature-plot")


def test_screenshots_of_every_tab(browser, app_url):
    page = _open(browser, app_url)
    for tab in ("Compare", "Temperature", "About"):
        page.get_by_role("tab", name=tab).click()
        page.wait_for_timeout(500)
        _shot(page, f"tab-{tab.lower()}")
    assert "<this repository>" not in page.content()
    keep = os.environ.get("MUSICGEN_SCREENSHOT")
    if keep:  # for the README: MUSICGEN_SCREENSHOT=docs/screenshot.png make test
        shutil.copy(SCREENSHOTS / "generate-result.png", keep)


def test_every_slider_takes_its_range_and_default_from_the_settings(served):
    import app
    from musicgen.prompt import DEFAULT_PROMPT_SECONDS, PROMPT_SECONDS
    from musicgen.settings import LIMITS, Settings

    demo = app.build_app(served[1])
    by_label = {limit.label: (limit.low, limit.high, getattr(Settings(), name))
                for name, limit in LIMITS.items()}
    by_label[PROMPT_SECONDS.label] = (PROMPT_SECONDS.low, PROMPT_SECONDS.high,
                                      DEFAULT_PROMPT_SECONDS)
    sliders = [block for block in demo.blocks.values() if block.get_block_name() == "slider"]
    assert len(sliders) >= 6
    for slider in sliders:
        assert (slider.minimum, slider.maximum, slider.value) == by_label[slider.label]


def test_compare_and_greedy_versus_sampled_through_the_api(client):
    common = dict(seed_kind="example", example="Slow waltz in D", upload=None, seed_seconds=4,
                  seed_start=None, soundfont=None, seconds=3, temperature=0.0, top_k=0,
                  top_p=0.95, min_p=0.0, variation=7, include_seed=True, max_silence=4,
                  paired_notes=False, keep_timing=False, release_held_keys=False,
                  new_variation=False)
    compared = client.predict(**common, use_maestro=False, maestro_piece=0, maestro_start=0,
                              api_name="/compare")
    html = [value for value in compared if isinstance(value, str) and "mg-player" in value]
    assert len(html) == 1 and "Variation 7." in compared  # one model here, no human column
    versus = client.predict(**common, model="lstm", api_name="/versus")
    players = [value for value in versus if isinstance(value, str) and "mg-player" in value]
    assert len(players) == 2
    assert "greedy (temperature 0)" in players[0]
    assert "the default: yours is 0" in players[1]
