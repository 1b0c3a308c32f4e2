"""The page's keyboard in the real app: played by mouse, computer keys, touch and a stubbed
Web MIDI device in headless Chromium; a played seed, a duet, and what a page must not send.

Served with the shipped LSTM (not a random one): a continuation of a played phrase must
stay in the phrase's register. Screenshots go to tmp/screenshots/keyboard-*.png.
"""

import io
import json
import time

import httpx
import numpy as np
import pretty_midi
import pytest
from conftest import REPO
from test_app import CHROMIUM, CHROMIUM_FLAGS, DESKTOP, PHONE, _chromium_or_skip, _shot, serve

from musicgen.midi import read_midi
from musicgen.recipe import read_recipe

# A stand-in for a MIDI keyboard and a digital piano: the page finds them through
# navigator.requestMIDIAccess; the test plays through `__midi.play` and reads `__midi.sent`.
MIDI_STUB = """
window.__midi = {sent: []};
navigator.requestMIDIAccess = async () => {
  const input = {name: 'Test piano', onmidimessage: null};
  const output = {name: 'Test synth', send: (data) => window.__midi.sent.push([...data]),
                  clear: () => {}};
  window.__midi.input = input;
  return {inputs: new Map([['in', input]]), outputs: new Map([['out', output]]),
          onstatechange: null};
};
window.__midi.play = (status, pitch, velocity) => window.__midi.input.onmidimessage(
  {data: new Uint8Array([status, pitch, velocity]), timeStamp: performance.now()});
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from musicgen.studio import Studio

    root = tmp_path_factory.mktemp("keyboard")
    studio = Studio(REPO / "checkpoints", output_dir=root / "outputs",
                    ratings_path=root / "var" / "ratings.sqlite")
    url, demo = serve(studio)
    studio.sample_bank(wait_s=60)
    yield url, studio
    demo.close()


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _chromium_or_skip()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=[*CHROMIUM_FLAGS, "--autoplay-policy=no-user-gesture-required"])
        yield launched
        launched.close()


def _keyboard_page(browser, url, viewport=DESKTOP, touch=False, midi=True):
    context = browser.new_context(viewport=viewport, has_touch=touch, is_mobile=touch)
    if midi:
        context.add_init_script(MIDI_STUB)
    page = context.new_page()
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_label("Play it").check()
    page.locator("#mg-keyboard .mg-keys [data-pitch='60']").wait_for(timeout=60_000)
    # Without FluidSynth on the server there is no piano sound; everything else works.
    page.wait_for_function("['ready', 'none'].includes(window.mgPiano?.state)", timeout=60_000)
    return page


def _duet_page(browser, url, answer_s: float):
    """A page in Duet mode that answers after half a second, for `answer_s` seconds."""
    page = _keyboard_page(browser, url)
    page.locator("#mg-keyboard .mg-mode[data-mode='duet']").click()
    page.evaluate(f"window.mgKeyboard.pauseS = 0.5; window.mgKeyboard.answerS = {answer_s}")
    return page


def _replies(page) -> list[dict]:
    return page.evaluate("window.mgKeyboard.messages")


def _wait_replies(page, count: int, timeout=30_000) -> dict:
    page.wait_for_function(f"window.mgKeyboard.messages.length >= {count}", timeout=timeout)
    return _replies(page)[count - 1]


def _midi_phrase(page, pitches, step=0.15):
    for pitch in pitches:
        page.evaluate(f"window.__midi.play(0x90, {pitch}, 90)")
        time.sleep(step)
        page.evaluate(f"window.__midi.play(0x80, {pitch}, 0)")


def _download(url: str, page, name: str) -> bytes:
    link = page.locator(f"a[href*='{name}']").first
    link.wait_for(state="attached", timeout=30_000)
    href = link.get_attribute("href")
    return httpx.get(href if href.startswith("http") else url + href.lstrip("/")).content


def test_clicked_and_typed_notes_are_recorded_heard_and_kept_as_the_seed(browser, served):
    url, studio = served
    page = _keyboard_page(browser, url)
    for pitch in (60, 62, 64):
        page.locator(f"#mg-keyboard .mg-keys [data-pitch='{pitch}']").click()
    for key in "fgh":  # F4 G4 A4 from C4 ('a') in the lowest octave shown
        page.keyboard.press(key)
    reply = _wait_replies(page, 1)
    assert reply["ok"]
    page.wait_for_function("window.mgKeyboard.notes.length === 6")
    notes = page.evaluate("window.mgKeyboard.notes")
    low = page.evaluate("window.mgKeyboard.low")
    assert [n[0] for n in notes] == [60, 62, 64, low + 5, low + 7, low + 9]
    sound = studio.sample_bank() is not None
    assert len(page.evaluate("window.mgKeyboard.pressTimings")) == 6 * sound  # each sounded
    page.get_by_text("You played 6 notes").wait_for(timeout=30_000)
    midi = read_midi(_download(url, page, "played.mid"))
    assert sorted(midi.pitch.tolist()) == sorted(n[0] for n in notes)
    page.locator("#mg-keyboard .mg-playback").click()
    assert page.evaluate("window.mgKeyboard.playback.voices.filter(Boolean).length") == 6 * sound
    _shot(page, "keyboard-recorded")
    page.locator("#mg-keyboard .mg-clear").click()
    _wait_replies(page, 2)
    assert page.evaluate("window.mgKeyboard.notes.length") == 0
    page.locator("#generate-button").click()
    page.get_by_text("play something on the keyboard first").wait_for(timeout=30_000)
    page.context.close()


@pytest.mark.parametrize("played_on", ["screen", "midi"])
def test_a_played_phrase_is_continued_in_its_register(browser, served, played_on):
    url, studio = served
    page = _keyboard_page(browser, url)
    phrase = [84, 86, 88, 89, 91, 89, 88, 86, 84, 91]  # two octaves above middle C
    if played_on == "midi":
        page.get_by_text("MIDI keyboard: Test piano").wait_for(timeout=10_000)
        _midi_phrase(page, phrase)
    else:
        while page.locator("#mg-keyboard .mg-keys [data-pitch='91']").count() == 0:
            page.locator("#mg-keyboard .mg-higher").click()  # up an octave until they show
        for pitch in phrase:
            page.locator(f"#mg-keyboard .mg-keys [data-pitch='{pitch}']").click()
    assert _wait_replies(page, 1)["ok"]
    page.get_by_text("You played 10 notes").wait_for(timeout=30_000)
    # No excerpt player for a played seed (the keyboard plays it back), not even the
    # example's from the page's load.
    page.get_by_text("The excerpt the model continues").wait_for(state="hidden")
    before = set(studio.output_dir.rglob("candidate-1-*.mid"))
    # 10 s: over 30 s, the LSTM drifts from so high a seed towards the middle of the piano.
    length = page.get_by_label("number input for Length of the continuation (seconds)")
    length.fill("10")
    length.press("Enter")
    page.get_by_text("Advanced").first.click()
    variation = page.get_by_label("Variation", exact=True)  # the same notes every run
    variation.fill("7")
    variation.press("Enter")
    page.locator("#generate-button").click()
    page.get_by_text("Done: variation").wait_for(timeout=120_000)
    (midi_path,) = set(studio.output_dir.rglob("candidate-1-*.mid")) - before
    recipe = read_recipe(midi_path)
    assert recipe["prompt_source"] == "played:played.mid"
    notes = read_midi(midi_path)
    continuation = notes.pitch[notes.start >= recipe["prompt_seconds"] - 1e-6]
    assert len(continuation) > 10
    # In the phrase's register: nearer it than the middle of the keyboard (C4), where the
    # music of a seed there would sit. Over 10 s the LSTM comes down from C6 a little.
    assert float(np.median(continuation)) > (np.mean(phrase) + 60) / 2
    _shot(page, f"keyboard-{played_on}-generated")
    page.context.close()


def test_a_duet_of_three_turns_sounds_each_answer_and_downloads_them_all_in_order(browser,
                                                                                  served):
    url, studio = served
    page = _duet_page(browser, url, 2)
    page.locator("#mg-keyboard .mg-send-out").check()  # the model's part to the "digital piano"
    for turn in range(3):
        _midi_phrase(page, [60 + turn, 64 + turn, 67 + turn])
        reply = _wait_replies(page, turn + 1)
        assert reply.get("answer"), reply
        page.wait_for_function("window.mgKeyboard.answer === null", timeout=30_000)
        if turn == 0:
            _shot(page, "keyboard-duet")
    assert len(page.evaluate("window.mgKeyboard.duetTimings")) == 3
    sent = page.evaluate("window.__midi.sent")
    assert any(status == 0x90 for status, *_ in sent)  # the answers went to the MIDI output
    midi = pretty_midi.PrettyMIDI(io.BytesIO(_download(url, page, "duet.mid")))
    you, model = midi.instruments
    assert (you.name, model.name) == ("You", "musicgen")
    assert [n.pitch for n in sorted(you.notes, key=lambda n: n.start)] == [
        60, 64, 67, 61, 65, 68, 62, 66, 69]
    recipes = [t for t in midi.text_events if t.text.startswith("musicgen-recipe")]
    assert len(recipes) == 3
    # In order: each answer after the phrase it answers, before the next phrase.
    phrases = [sorted(you.notes, key=lambda n: n.start)[3 * i:3 * i + 3] for i in range(3)]
    for i, recipe in enumerate(recipes):
        assert recipe.time >= phrases[i][-1].start
        if i < 2:
            assert recipe.time < phrases[i + 1][0].start
    page.context.close()


def test_the_model_can_be_stopped_mid_answer_and_the_download_holds_only_what_sounded(
        browser, served):
    url, _ = served
    page = _duet_page(browser, url, 12)
    _midi_phrase(page, [60, 62, 64, 65, 67])
    _wait_replies(page, 1)
    page.wait_for_function("window.mgKeyboard.answer !== null")
    link = page.locator("a[href*='duet.mid']").first
    link.wait_for(state="attached", timeout=30_000)
    answered = link.get_attribute("href")
    time.sleep(1.0)
    page.locator("#mg-keyboard .mg-stop-model").click()
    assert _wait_replies(page, 2)["ok"]
    page.wait_for_function("old => document.querySelector(\"a[href*='duet.mid']\")"
                           ".getAttribute('href') !== old", arg=answered, timeout=30_000)
    midi = pretty_midi.PrettyMIDI(io.BytesIO(_download(url, page, "duet.mid")))
    you, model = midi.instruments
    began = min(n.start for n in model.notes)
    # Of 12 s, about 1 s was heard: the file holds that, as the page does.
    heard = max(n.end for n in model.notes) - began
    assert heard < 6.0
    shown = page.evaluate("Math.max(...window.mgKeyboard.notes.filter(n => n[4] === 'model')"
                          ".map(n => n[3]))")
    assert abs((began + heard) - shown) < 0.01
    page.context.close()


def test_playing_on_while_the_model_thinks_and_clearing_mid_answer_keep_the_duet_in_step(
        browser, served):
    url, _ = served
    page = _duet_page(browser, url, 2)
    # A second phrase, with a pause of its own, while the first's answer is on its way.
    page.evaluate("""async () => {
        const play = async (pitch) => {
            window.__midi.play(0x90, pitch, 90);
            await new Promise(r => setTimeout(r, 100));
            window.__midi.play(0x80, pitch, 0);
        };
        await play(60);
        await new Promise(r => setTimeout(r, 520));  // the pause ends: the first goes
        await play(62);
        await new Promise(r => setTimeout(r, 520));  // and the second is asked for
    }""")
    answers = "window.mgKeyboard.messages.filter(m => m.answer)"
    page.wait_for_function(f"{answers}.length === 2", timeout=30_000)  # both turns taken
    assert not [reply for reply in _replies(page) if "error" in reply]
    page.wait_for_function("window.mgKeyboard.answer === null", timeout=30_000)
    mine = page.evaluate("window.mgKeyboard.notes.filter(n => n[4] === 'you').map(n => n[5])")
    assert mine == [True, True]
    _midi_phrase(page, [64, 65])
    page.wait_for_function(f"{answers}.length === 3", timeout=30_000)
    # Clear with a phrase on its way: its answer, when it comes, is not played.
    _midi_phrase(page, [67])
    page.wait_for_function("window.mgKeyboard.inFlight !== null", timeout=10_000)
    page.locator("#mg-keyboard .mg-clear").click()
    page.wait_for_function(f"{answers}.length === 4", timeout=30_000)
    page.wait_for_function("window.mgKeyboard.queue.length === 0 && !window.mgKeyboard.inFlight")
    assert page.evaluate("window.mgKeyboard.notes.length") == 0
    assert page.evaluate("window.mgKeyboard.answer") is None
    _midi_phrase(page, [60, 64])  # a new duet begins at its first turn
    page.wait_for_function(f"{answers}.length === 5", timeout=30_000)
    assert page.evaluate(f"{answers}.at(-1).turn") == 1
    assert not [reply for reply in _replies(page) if "error" in reply]
    page.context.close()


def test_a_bad_message_from_the_page_is_refused_in_plain_words_and_nothing_is_lost(browser,
                                                                                   served):
    url, _ = served
    page = _keyboard_page(browser, url)
    _midi_phrase(page, [60, 64, 67])
    _wait_replies(page, 1)
    # Sent as the page sends its own messages, so that the answer comes back to it.
    for message, saying in (
            ({"action": "seed", "notes": [[200, 80, 0, 1]]},
             "note 1 from the page has a pitch outside MIDI's 0-127"),
            ({"action": "seed", "notes": "all of them"},
             "the notes from the page did not arrive as a list of notes"),
            ({"action": "duet", "phrase": [[60, 80, 2, 1]], "seconds": 4, "turns": 0},
             "note 1 from the page ends before it starts"),
            ({"action": "sing"}, "the keyboard sent a message this page does not know")):
        page.evaluate("(m) => window.mgKeyboard.send(m)", message)
        page.locator("#mg-keyboard .mg-kb-status").get_by_text(f"⚠️ {saying}").wait_for(
            timeout=10_000)
    assert page.evaluate("window.mgKeyboard.notes.length") == 3
    # What was played before is still the seed.
    assert read_midi(_download(url, page, "played.mid")).pitch.tolist() == [60, 64, 67]
    _shot(page, "keyboard-refused")
    page.context.close()


def test_on_a_phone_the_keyboard_fits_and_takes_several_fingers(browser, served):
    url, _ = served
    page = _keyboard_page(browser, url, viewport=PHONE, touch=True, midi=False)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    keys = page.locator("#mg-keyboard .mg-keys")
    box = keys.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    assert page.evaluate("window.mgKeyboard.octaves") == 2
    whites = page.locator("#mg-keyboard .mg-white")
    assert whites.count() == 15 and whites.first.bounding_box()["width"] >= 20
    # Two fingers at once: a chord (CDP touch events, as a phone sends them). Touches go
    # where the keys are in the window, so the keys must be in it.
    keys.scroll_into_view_if_needed()
    page.wait_for_timeout(300)  # the page settles (a file block may appear above)
    keys.scroll_into_view_if_needed()
    client = page.context.new_cdp_session(page)
    points = []
    for pitch in (60, 64):
        key = page.locator(f"#mg-keyboard [data-pitch='{pitch}']").bounding_box()
        points.append({"x": key["x"] + key["width"] / 2, "y": key["y"] + key["height"] * 0.85})
    client.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": points})
    page.wait_for_timeout(200)
    client.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    page.wait_for_function("window.mgKeyboard.notes.length === 2")
    notes = page.evaluate("window.mgKeyboard.notes")
    assert sorted(n[0] for n in notes) == [60, 64]
    assert abs(notes[0][2] - notes[1][2]) < 0.05  # struck together
    for tab in ("Generate", "Compare", "Temperature", "Listen", "About"):
        tab_box = page.get_by_role("tab", name=tab).bounding_box()
        assert tab_box["x"] + tab_box["width"] <= PHONE["width"]
    generate = page.locator("#generate-button").bounding_box()
    assert generate["x"] + generate["width"] <= PHONE["width"]
    _shot(page, "keyboard-phone")
    page.context.close()


def test_the_keyboard_answers_a_script_in_plain_words_too(served):
    from gradio_client import Client

    url, _ = served
    client = Client(url, verbose=False)
    reply = json.loads(client.predict(keyboard=json.dumps(
        {"action": "duet", "id": 1, "phrase": [[60, 80, 0, 0.5]], "seconds": 99}),
        api_name="/keyboard")[0])
    assert reply["error"] == "an answer lasts 1 to 15 seconds, not 99."
    *_, status = client.predict(keyboard="x" * 1_000_000, api_name="/keyboard")
    assert status.startswith("⚠️ the keyboard sent more than a played phrase can hold")
    for damaged in ("not json at all", "[" * 100_000):  # deep enough to break the parser
        reply, *_, status = client.predict(keyboard=damaged, api_name="/keyboard")
        assert status.startswith("⚠️ the keyboard's message was damaged on the way")
        assert json.loads(reply) == {"reply": True, "id": None, "error": status[3:]}
    reply = json.loads(client.predict(keyboard=json.dumps(
        {"action": "duet", "id": 2, "phrase": [[60, 80, 0, 0.5]], "seconds": 10**400}),
        api_name="/keyboard")[0])
    assert "must be a number" in reply["error"]
    reply = json.loads(client.predict(keyboard=json.dumps(
        {"action": "duet", "id": 3, "phrase": [[60, 80, 0, 0.5]], "seconds": 2, "turns": 4}),
        api_name="/keyboard")[0])
    assert "lost step" in reply["error"]
