"""The Listen tab of the real app: gradio_client votes, and the vote's lock in headless Chromium."""

from __future__ import annotations

import contextlib
import csv
import re
import time

import httpx
import pytest
from conftest import StepClock, heard, tiny_checkpoint
from test_app import CHROMIUM_FLAGS, DESKTOP, _chromium_or_skip, _shot, serve

from musicgen.leaderboard import export_csv
from musicgen.listening import build_pool

MIN_LISTEN_S = 1.5  # the app's 5 s, shortened so the tests do not wait


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The real app with a small LSTM and a built listening pool."""
    from musicgen.studio import Studio

    root = tmp_path_factory.mktemp("listen")
    tiny_checkpoint(root / "checkpoints" / "lstm", "lstm")
    studio = Studio(root / "checkpoints", output_dir=root / "outputs",
                    ratings_path=root / "var" / "ratings.sqlite", min_listen_s=MIN_LISTEN_S)
    build_pool(studio.ratings, studio.models, prompts=2, seconds=5, renderer=studio.renderer)
    url, demo = serve(studio)
    yield url, studio
    demo.close()


def _outputs(result, names):
    return dict(zip(names, result, strict=True))


def _listener(url: str):
    """A gradio_client that carries the listener cookie a page load gives, and the cookies."""
    from gradio_client import Client

    cookies = httpx.get(url).cookies
    assert cookies.get("musicgen_listener")
    header = "; ".join(f"{name}={value}" for name, value in cookies.items())
    return Client(url, verbose=False, headers={"Cookie": header}), cookies


def _links(pair_html: str) -> list[str]:
    """The excerpt's, A's and B's links, in that order."""
    return re.findall(r'src="(listen/clip/[0-9a-f]{32})"', pair_html)


def _fetched(studio, ticket: str, within_s: float = 10.0):
    """The link's download record, waited for: the server writes it after handing the
    last block to the socket, so a fast client can hold every byte a moment before."""
    deadline = time.monotonic() + within_s
    while (fetched := studio.ratings.clip_link(ticket)["fetched"]) is None:
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)
    return fetched


def _download(url: str, links: list[str], cookies) -> list[bytes]:
    return [httpx.get(url + link, cookies=cookies).content for link in links]


# gradio_client leaves out session state and buttons.
NEXT = ["pair_player", "musical_a", "musical_b", "guess_a", "guess_b", "reveal",
        "listen_status"]
VOTED = ["reveal", "musical_a", "musical_b", "guess_a", "guess_b", "listen_status"]


def test_a_client_gets_a_pair_votes_once_after_listening_and_the_vote_is_exported(served,
                                                                                  tmp_path):
    url, studio = served
    client, cookies = _listener(url)
    pair = _outputs(client.predict(training_years="3", listening_setup="headphones",
                                   api_name="/listen_next"), NEXT)
    assert pair["pair_player"].count("<audio") == 3 and len(_links(pair["pair_player"])) == 3
    for condition in ("lstm", "greedy", "real", "transformer"):
        assert condition not in pair["pair_player"]  # nothing tells what is what
    time.sleep(2 * MIN_LISTEN_S)
    skipped = _outputs(client.predict(musical_a="4", musical_b=None, guess_a="computer",
                                      guess_b=None, api_name="/listen_vote_a"), VOTED)
    assert "listen to both clips first" in skipped["listen_status"]  # nothing downloaded
    _download(url, _links(pair["pair_player"]), cookies)
    early = _outputs(client.predict(musical_a="4", musical_b=None, guess_a="computer",
                                    guess_b=None, api_name="/listen_vote_a"), VOTED)
    assert "listen to both clips first" in early["listen_status"]  # downloaded just now
    time.sleep(2 * MIN_LISTEN_S)
    voted = _outputs(client.predict(musical_a="4", musical_b=None, guess_a="computer",
                                    guess_b=None, api_name="/listen_vote_a"), VOTED)
    assert voted["reveal"].startswith("**Saved, thank you.** A was the ")
    retried = _outputs(client.predict(musical_a="4", musical_b=None, guess_a="computer",
                                      guess_b=None, api_name="/listen_vote_a"), VOTED)
    assert retried["reveal"].startswith("**Saved** (it had reached us already). A was the ")
    again = _outputs(client.predict(musical_a=None, musical_b=None, guess_a=None, guess_b=None,
                                    api_name="/listen_vote_b"), VOTED)
    assert "already has your vote" in again["listen_status"]

    export = tmp_path / "votes.csv"
    export_csv(studio.ratings, export)
    rows = list(csv.DictReader(export.open()))
    (row,) = [r for r in rows if r["guess_a"] == "computer"]
    assert row["choice"] == "a" and row["musical_a"] == "4" and row["training_years"] == "3"
    assert row["headphones"] == "1" and float(row["seconds_since_heard"]) >= 2 * MIN_LISTEN_S
    assert len(row["address"]) == 16 and "127.0.0.1" not in rows[0].values()


def test_a_clip_comes_whole_or_in_ranges_and_counts_as_heard_only_when_all_went_out(served):
    url, studio = served
    client, cookies = _listener(url)
    links = _links(client.predict(training_years="", listening_setup=None,
                                  api_name="/listen_next")[0])
    a, b = url + links[1], url + links[2]
    whole = httpx.get(a, cookies=cookies)
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    size = len(whole.content)
    head = httpx.head(b, cookies=cookies)  # a HEAD would "send" the body without a byte
    assert head.status_code == 405
    probe = httpx.get(b, cookies=cookies, headers={"Range": "bytes=0-1"})  # as Safari does
    assert probe.status_code == 206 and probe.headers["content-range"].startswith("bytes 0-1/")
    total = int(probe.headers["content-range"].split("/")[1])
    ticket = links[2].rsplit("/", 1)[1]
    assert studio.ratings.clip_link(ticket)["fetched"] is None
    rest = httpx.get(b, cookies=cookies, headers={"Range": "bytes=2-"})
    assert rest.status_code == 206 and len(probe.content + rest.content) == total
    assert _fetched(studio, ticket) is not None
    assert _fetched(studio, links[1].rsplit("/", 1)[1]) is not None
    assert httpx.get(a, cookies=cookies, headers={"Range": f"bytes={size + 5}-"}
                     ).status_code == 416
    again = httpx.get(b, cookies=cookies).content
    assert again == probe.content + rest.content  # one link, one serving


def test_the_page_is_sent_compressed_and_the_clips_as_they_are(served):
    url, _ = served
    page = httpx.get(url, headers={"Accept-Encoding": "gzip"})
    assert page.headers["content-encoding"] == "gzip"
    assert int(page.headers["content-length"]) < len(page.content) / 3
    client, cookies = _listener(url)
    links = _links(client.predict(training_years="", listening_setup=None,
                                  api_name="/listen_next")[0])
    clip = httpx.get(url + links[1], cookies=cookies, headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in clip.headers and clip.content[:3] == b"ID3"


def test_without_a_listener_cookie_there_is_no_pair(served):
    from gradio_client import Client

    client = Client(served[0], verbose=False, headers={
        "Cookie": "musicgen_listener=" + "f" * 32 + "." + "0" * 32})  # forged
    out = _outputs(client.predict(training_years="", listening_setup=None,
                                  api_name="/listen_next"), NEXT)
    assert "no listener id yet: reload the page" in out["listen_status"]
    assert "<audio" not in out["pair_player"]


def test_where_the_owner_asks_for_sign_in_the_tab_has_a_login_and_votes_carry_the_account(
        served, monkeypatch):
    from types import SimpleNamespace

    import gradio as gr
    import gradio.oauth

    import app
    from musicgen.errors import UserError

    url, studio = served
    monkeypatch.setattr(studio.listening, "require_account", True)
    # As a Space with `hf_oauth: true` has it (off a Space, Gradio asks for an HF login).
    monkeypatch.setenv("SPACE_ID", "someone/musicgen")
    monkeypatch.setenv("SYSTEM", "spaces")
    for name, value in (("OAUTH_CLIENT_ID", "id"), ("OAUTH_CLIENT_SECRET", "secret"),
                        ("OAUTH_SCOPES", "openid profile"),
                        ("OPENID_PROVIDER_URL", "https://huggingface.co")):
        monkeypatch.setattr(gradio.oauth, name, value)
    with app.build_app(studio) as demo:
        assert any(isinstance(block, gr.LoginButton) for block in demo.blocks.values())
    cookie = studio.listening.keys.new_listener()
    request = SimpleNamespace(headers={"cookie": f"musicgen_listener={cookie}"},
                              client=SimpleNamespace(host="192.0.2.5"))
    with pytest.raises(UserError, match="sign in with Hugging Face first"):
        app.on_listen_next(studio, "", None, None, request, None)
    served_pair = app.on_listen_next(studio, "", None, None, request,
                                     SimpleNamespace(username="ana"))
    assert "<audio" in served_pair["pair_player"]
    rows = studio.ratings._read("SELECT account FROM raters WHERE id = ?",
                                (studio.listening.keys.listener(cookie),))
    assert rows == [("hf:ana",)]


def test_a_fresh_client_without_a_pair_is_told_to_ask_for_one(served):
    client, _ = _listener(served[0])
    out = _outputs(client.predict(musical_a=None, musical_b=None, guess_a=None, guess_b=None,
                                  api_name="/listen_vote_tie"), VOTED)
    assert "ask for a pair first" in out["listen_status"]


def test_a_pair_is_served_through_its_own_links_and_the_pool_and_database_are_not(served):
    url, studio = served
    client, cookies = _listener(url)
    pair = _outputs(client.predict(training_years="", listening_setup=None,
                                   api_name="/listen_next"), NEXT)
    links = _links(pair["pair_player"])
    assert str(studio.output_dir) not in pair["pair_player"] and "/work" not in pair[
        "pair_player"] and "gradio_api/file" not in pair["pair_player"]  # no server path
    first, second = _download(url, links, cookies), _download(url, links, cookies)
    for one, two in zip(first, second, strict=True):  # one link, one serving (ranges fit);
        assert one[:3] == b"ID3" and one == two  # other links: other bytes (test_ratings)
    _, other_cookies = _listener(url)
    for link in links:  # another listener, or none, gets nothing
        for jar in (other_cookies, None):
            refused = httpx.get(url + link, cookies=jar)
            assert refused.status_code == 403 and "not yours" in refused.text
    clip = studio.listening.audio_root / studio.ratings.pool_clips(
        studio.listening.pool())[0]["audio"]
    database = studio.ratings.path
    for path in (clip, database, database.with_name(database.name + "-wal"),
                 database.with_name("listener.key")):
        assert httpx.get(f"{url}gradio_api/file={path}").status_code in (403, 404), path
    # A path that climbs out of the served folder, sent as it is (httpx would tidy it).
    climbing = f"{studio.output_dir}/%2e%2e/var/{database.name}"
    with httpx.Client() as plain:
        request = plain.build_request("GET", f"{url}gradio_api/file={climbing}")
        request.url = request.url.copy_with(raw_path=f"/gradio_api/file={climbing}".encode())
        assert plain.send(request).status_code in (403, 404)
    with httpx.Client(cookies=cookies) as raw:  # sent as written: httpx would tidy "../"
        for ticket in ("../../var/" + database.name, "%2e%2e%2fvar%2fratings.sqlite",
                       "0" * 32, "..%2f" * 8 + "etc%2fpasswd"):
            request = raw.build_request("GET", f"{url}listen/clip/x")
            request.url = request.url.copy_with(raw_path=f"/listen/clip/{ticket}".encode())
            answer = raw.send(request)
            assert answer.status_code in (403, 404) and b"SQLite" not in answer.content


@contextlib.contextmanager
def _listening_page(url: str):
    """Chromium on the Listen tab with a pair served: (the browser, the page)."""
    sync_playwright = _chromium_or_skip()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True,
            args=[*CHROMIUM_FLAGS, "--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page(viewport=DESKTOP)
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_role("tab", name="Listen").click()
        page.get_by_role("button", name="Next pair").click()
        page.locator(".mg-pair audio.mg-clip").nth(1).wait_for(state="attached",
                                                                timeout=60_000)
        try:
            yield browser, page
        finally:
            browser.close()


def test_the_vote_stays_locked_until_both_clips_have_played(served):
    with _listening_page(served[0]) as (_, page):
        votes = [page.locator(f"#vote-{choice}") for choice in ("a", "b", "tie", "both-bad")]
        for button in votes:
            assert button.is_disabled()
        _shot(page, "listen-locked")
        page.evaluate("document.querySelectorAll('.mg-pair audio.mg-clip')[0].play()")
        time.sleep(MIN_LISTEN_S + 1.0)
        for button in votes:  # one clip heard is not enough
            assert button.is_disabled()
        page.evaluate("document.querySelectorAll('.mg-pair audio.mg-clip')[1].play()")
        page.wait_for_function("!document.querySelector('#vote-a').disabled", timeout=30_000)
        assert page.locator(".mg-pair").inner_text().count("played 1.5 of 1.5 s") == 2
        _shot(page, "listen-unlocked")
        votes[1].click()
        page.get_by_text("Saved, thank you.").wait_for(timeout=30_000)
        for button in votes:
            assert button.is_disabled()
        time.sleep(2.5)  # the clips play on: a voted pair must not ask to be unlocked again
        assert "⚠️" not in page.locator("body").inner_text()
        assert page.get_by_label("3", exact=True).first.is_disabled()  # answers lock too
        assert not page.get_by_label("human").count()  # no pianist in this pool: not asked
        _shot(page, "listen-revealed")


def test_clips_played_at_16x_do_not_open_the_vote_sooner(served):
    """The browser counts played time; the server counts real time since both downloads."""
    url, studio = served
    with _listening_page(url) as (_, page):
        page.wait_for_function("[...document.querySelectorAll('.mg-pair audio.mg-clip')]"
                               ".every((a) => a.readyState >= 4)", timeout=30_000)
        started = time.monotonic()
        page.evaluate("document.querySelectorAll('.mg-pair audio.mg-clip').forEach((a) => "
                      "{a.playbackRate = 16; a.play();})")
        page.wait_for_function("document.querySelector('.mg-pair').innerText"
                               ".split('played 1.5 of 1.5 s').length === 3", timeout=10_000)
        assert time.monotonic() - started < 2 * MIN_LISTEN_S - 0.5  # "heard" in no time
        assert page.locator("#vote-a").is_disabled()  # ... but the server says wait
        page.wait_for_function("!document.querySelector('#vote-a').disabled", timeout=30_000)
        page.locator("#vote-tie").click()
        page.get_by_text("Saved, thank you.").wait_for(timeout=30_000)
    (vote,) = [v for v in studio.ratings.votes() if v["choice"] == "tie"
               and v["training_years"] is None and v["seconds_since_heard"] is not None
               and v["voted"] > time.time() - 60]
    assert vote["seconds_since_heard"] >= 2 * MIN_LISTEN_S


def test_a_self_report_is_optional_and_checked(served):
    url, studio = served
    client, _ = _listener(url)
    bad = _outputs(client.predict(training_years="lots", listening_setup=None,
                                  api_name="/listen_next"), NEXT)
    assert "Years of musical training must be a number" in bad["listen_status"]
    assert "<audio" not in str(bad["pair_player"])  # left as it was: nothing served
    good = _outputs(client.predict(training_years="", listening_setup=None,
                                   api_name="/listen_next"), NEXT)
    assert "<audio" in good["pair_player"]
    rows = studio.ratings._read("SELECT training_years, headphones FROM raters")
    assert (None, None) in rows  # nothing said: nothing stored, not 0


def test_results_show_counts_first_and_the_leaderboard_from_thirty_votes(served, monkeypatch):
    from gradio_client import Client

    import musicgen.studio
    monkeypatch.setattr(musicgen.studio, "RESULTS_REFRESH_S", 0.0)  # no wait between looks

    from musicgen.leaderboard import MIN_VOTES
    from musicgen.listening import ListeningTest

    url, studio = served
    client = Client(url, verbose=False)
    text, chart = client.predict(api_name="/results")[:2]
    assert re.search(r"\d+ votes? so far", text) and "leaderboard appears from 30" in text
    assert chart["visible"] is False
    quick = ListeningTest(studio.ratings, studio.listening.audio_root, min_listen_s=0,
                          clock=StepClock())
    for k in range(MIN_VOTES):
        pair = quick.next_pair(f"quick-{k}")
        heard(quick, pair)
        quick.vote(f"quick-{k}", pair.token, "a" if k % 3 else "tie")
    text, chart = client.predict(api_name="/results")[:2]
    assert "| rank | condition | rating [95% CI] |" in text and "quick-" not in text
    # Gradio sends an SVG inline, as a data URL.
    assert chart["value"]["url"].startswith("data:image/svg+xml,") and chart["visible"] is True
    assert "aria-label%3D%22leaderboard%22" in chart["value"]["url"]


def test_results_are_computed_once_for_many_callers_and_again_when_votes_change(
        served, monkeypatch):
    """65 results calls at once filled the queue: each recomputed a 1.7 s bootstrap."""
    from concurrent.futures import ThreadPoolExecutor

    import musicgen.studio
    from musicgen.leaderboard import MIN_VOTES
    from musicgen.listening import ListeningTest

    _, studio = served
    quick = ListeningTest(studio.ratings, studio.listening.audio_root, min_listen_s=0,
                          clock=StepClock())
    for k in range(MIN_VOTES):
        pair = quick.next_pair(f"cached-{k}")
        heard(quick, pair)
        quick.vote(f"cached-{k}", pair.token, "b")
    computed = []
    real = musicgen.studio.summarise
    monkeypatch.setattr(musicgen.studio, "summarise",
                        lambda *a, **k: computed.append(1) or real(*a, **k))
    monkeypatch.setattr(musicgen.studio, "RESULTS_REFRESH_S", 3600.0)
    studio._results = None
    with ThreadPoolExecutor(16) as pool:
        shown = list(pool.map(lambda _: studio.results(), range(64)))
    assert len(computed) == 1 and all(s == shown[0] for s in shown)
    pair = quick.next_pair("cached-late")
    heard(quick, pair)
    quick.vote("cached-late", pair.token, "a")
    studio.results()
    assert len(computed) == 1  # a new vote within the interval: the last board stays
    monkeypatch.setattr(musicgen.studio, "RESULTS_REFRESH_S", 0.0)
    studio.results()
    studio.results()
    assert len(computed) == 2  # after it: computed again, once
