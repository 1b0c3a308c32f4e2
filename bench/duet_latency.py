"""Benchmark: the duet in headless Chromium, from the end of a pause to the answer's first sound.

Starts the real app (`python app.py`, as bench/app_latency.py does) and opens it
in --browsers pages of Debian's Chromium at once, each with a stubbed Web MIDI
keyboard (`navigator.requestMIDIAccess`, as tests/test_keyboard.py stubs it).
Every page chooses "Play it" and "Duet" with the page's defaults (the LSTM, an
answer after a 1 s pause, 4 s long) and plays --turns phrases of four notes
through the stub, each after the previous answer has ended; all pages start
together, so their pauses end together: the worst case for the server.

Measured by the page's own timing hooks (page/keyboard.js):
    duet   from the moment the pause had lasted its 1 s (the page asks then) to
           the first note of the answer starting in WebAudio, output latency
           included: the server's queue and sampling, the transfers, the page.
    press  from a key's input event (a mouse click on the screen's keyboard, a
           MIDI message) to its sample starting: the page's own work.

Usage (the real numbers; stop other jobs first, they share the cores):
    .venv/bin/python bench/duet_latency.py --browsers 1 --turns 20
    .venv/bin/python bench/duet_latency.py --browsers 10 --turns 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_latency import App, percentile  # noqa: E402 - also puts the repository on sys.path
from machine import LoadMeter, cpu_details, cpu_line, load_line  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--autoplay-policy=no-user-gesture-required"]
TARGET_MEDIAN_MS, TARGET_P95_MS = 1000.0, 1500.0  # issue 31
TARGET_PRESS_MS = 30.0

# The stub, and a player that plays the turns inside the page, so that ten pages play
# at once without waiting for this process.
PLAYER = """
window.__midi = {};
navigator.requestMIDIAccess = async () => {
  const input = {name: 'Bench piano', onmidimessage: null};
  window.__midi.input = input;
  return {inputs: new Map([['in', input]]), outputs: new Map(), onstatechange: null};
};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const send = (status, pitch, velocity) => window.__midi.input.onmidimessage(
  {data: new Uint8Array([status, pitch, velocity]), timeStamp: performance.now()});
window.__duet = async (turns, timeoutMs) => {
  const kb = window.mgKeyboard;
  let failed = 0;
  for (let turn = 0; turn < turns; turn++) {
    const before = kb.duetTimings.length, replies = kb.messages.length;
    for (const pitch of [60, 64, 67, 72].map((p) => p + (turn % 5))) {
      send(0x90, pitch, 90);
      await sleep(150);
      send(0x80, pitch, 0);
    }
    const deadline = performance.now() + timeoutMs;
    while (kb.duetTimings.length === before && performance.now() < deadline) {
      if (kb.messages.length > replies && kb.messages.at(-1).error) break;
      await sleep(10);
    }
    if (kb.duetTimings.length === before) failed++;
    while (kb.answer) await sleep(50);
    await sleep(200);
  }
  window.__duetDone = {failed};
};
"""


def run(browsers: int, turns: int, timeout_s: float) -> dict:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - a dev dependency

    with tempfile.TemporaryDirectory(prefix="musicgen-bench-duet-") as folder, \
            App(Path(folder) / "app.log", 180) as app, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS,
                                             headless=True)
        pages = []
        for _ in range(browsers):
            context = browser.new_context(viewport={"width": 1366, "height": 900})
            context.add_init_script(PLAYER)
            page = context.new_page()
            page.goto(app.url, wait_until="domcontentloaded")
            page.get_by_label("Play it").check()
            page.locator("#mg-keyboard .mg-keys [data-pitch='60']").wait_for(timeout=60_000)
            page.wait_for_function("window.mgPiano?.state === 'ready'", timeout=120_000)
            page.locator("#mg-keyboard .mg-mode[data-mode='duet']").click()
            for pitch in (60, 62, 64, 65, 67):  # the screen's keys, clicked
                page.locator(f"#mg-keyboard .mg-keys [data-pitch='{pitch}']").click()
            pages.append(page)
        # The clicks above made a first phrase: let its answer come and end, unmeasured.
        for page in pages:
            page.wait_for_function("window.mgKeyboard.duetTimings.length === 1 "
                                   "&& !window.mgKeyboard.answer", timeout=60_000)
            page.evaluate("window.mgKeyboard.duetTimings.length = 0")
        meter = LoadMeter()
        began = time.perf_counter()
        for page in pages:
            page.evaluate(f"window.__duet({turns}, {timeout_s * 1000})")
        for page in pages:
            page.wait_for_function("window.__duetDone", timeout=(timeout_s + 15) * turns * 1000)
        wall = time.perf_counter() - began
        machine = meter.record()
        duet = [t for page in pages for t in page.evaluate("window.mgKeyboard.duetTimings")]
        press = [t for page in pages for t in page.evaluate("window.mgKeyboard.pressTimings")]
        failed = sum(page.evaluate("window.__duetDone.failed") for page in pages)
        browser.close()
    return {"browsers": browsers, "turns": turns, "answers": len(duet), "failed": failed,
            "duet_ms": [round(t, 1) for t in duet],
            "duet_median_ms": round(statistics.median(duet), 1) if duet else None,
            "duet_p95_ms": round(percentile(duet, 0.95), 1) if duet else None,
            "press_median_ms": round(statistics.median(press), 2) if press else None,
            "press_max_ms": round(max(press), 2) if press else None, "presses": len(press),
            "wall_s": round(wall, 1), "cpu": cpu_details(), "machine": machine,
            "command": "python bench/duet_latency.py " + " ".join(sys.argv[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--browsers", type=int, default=1)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=30, help="seconds per answer at most")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.browsers, args.turns, args.timeout)
    if args.json:
        print(json.dumps(result))
        return
    median, p95 = result["duet_median_ms"], result["duet_p95_ms"]
    met = median is not None and median <= TARGET_MEDIAN_MS and p95 <= TARGET_P95_MS
    print(f"Duet in headless Chromium, {args.browsers} browser(s) x {args.turns} turns: "
          f"{result['answers']} answers, {result['failed']} without one; pause end to first "
          f"sound median {median} ms, 95th percentile {p95} ms "
          f"(target <= {TARGET_MEDIAN_MS:g} / {TARGET_P95_MS:g} ms: "
          f"{'met' if met else 'NOT met'})")
    print(f"key press to sound, the page's own work ({result['presses']} presses): median "
          f"{result['press_median_ms']} ms, most {result['press_max_ms']} ms (target < "
          f"{TARGET_PRESS_MS:g} ms: "
          f"{'met' if (result['press_max_ms'] or 0) < TARGET_PRESS_MS else 'NOT met'})")
    print(cpu_line(result["cpu"]))
    print(load_line(result["machine"]) + " (Chromium counts as another process)")


if __name__ == "__main__":
    main()
