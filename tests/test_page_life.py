"""A page's life in the real app, in headless Chromium: closing it stops its work, and a
reload brings back what the browser made last. With the shipped models: a random one
finishes too quickly to be caught mid-sampling."""

import time

from test_app import DESKTOP, _generate_in, _shot
from test_keyboard import browser, served  # noqa: F401 - the app with the shipped models


def _open(context, url):
    page = context.new_page()
    page.goto(url, wait_until="domcontentloaded")
    page.locator("#generate-button").wait_for(timeout=60_000)
    page.locator("audio[src]").first.wait_for(state="attached", timeout=60_000)
    return page


def test_closing_the_page_stops_its_generation(browser, served):  # noqa: F811
    url, studio = served
    context = browser.new_context(viewport=DESKTOP)
    page = _open(context, url)
    page.get_by_label("Model").click()
    page.get_by_role("option", name="Transformer").click()  # about 10 s for 120 s of music
    length = page.get_by_label("number input for Length of the continuation (seconds)")
    length.fill("120")
    length.press("Enter")
    before, folders = studio.requests_stopped, set(studio.output_dir.iterdir())
    page.locator("#generate-button").click()
    page.get_by_role("button", name="Generating…").wait_for(timeout=30_000)
    time.sleep(1.0)
    page.close()
    deadline = time.monotonic() + 10
    while studio.requests_stopped == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert studio.requests_stopped == before + 1
    new = set(studio.output_dir.iterdir()) - folders
    assert new and not [path for folder in new for path in folder.glob("candidate-*")]
    context.close()


def test_a_reload_brings_back_the_browser_s_last_result_and_no_one_else_s(
        browser, served):  # noqa: F811
    url, _ = served
    context = browser.new_context(viewport=DESKTOP)
    page = _open(context, url)
    _generate_in(page)
    audio = page.locator("#mg-first-player audio").get_attribute("src")
    page.reload(wait_until="domcontentloaded")
    page.get_by_text("Your last result is back").wait_for(timeout=30_000)
    assert page.locator("#mg-first-player audio").get_attribute("src") == audio
    _shot(page, "reload-restored")
    # It can be continued and rated as before the reload.
    page.get_by_role("button", name="Continue from this").first.click()
    page.get_by_text("Continuing from candidate 1").wait_for(timeout=30_000)
    stranger = browser.new_context(viewport=DESKTOP)  # another browser: its own cookie
    other = _open(stranger, url)
    time.sleep(2.0)
    assert not other.get_by_text("Your last result is back").is_visible()
    assert not other.locator("#mg-first-player audio").count()
    stranger.close()
    context.close()


def test_a_result_opens_from_its_link_in_another_browser(browser, served):  # noqa: F811
    url, _ = served
    mine = browser.new_context(viewport=DESKTOP)
    page = _open(mine, url)
    _generate_in(page)
    audio = page.locator("#mg-first-player audio").get_attribute("src")
    href = page.get_by_role("link", name="A link to share it").get_attribute("href")
    assert href.startswith("?result=")
    theirs = browser.new_context(viewport=DESKTOP)
    other = _open(theirs, url + href)
    other.get_by_text("A result shared with you.").wait_for(timeout=30_000)
    assert other.locator("#mg-first-player audio").get_attribute("src") == audio
    _shot(other, "shared-result")
    gone = _open(theirs, url + "?result=" + "0" * 32)
    gone.get_by_text("That link's result is no longer kept").wait_for(timeout=30_000)
    theirs.close()
    mine.close()
