"""Benchmark: a script against the listening test, and floods against the queue.

Starts `python app.py` on 127.0.0.1 (a free port) with a ratings database of its
own in a temporary folder, builds a small listening pool there with the shipped
models, and talks to the app only over 127.0.0.1, as browsers and scripts would:

    votes   --scripts threads, for --vote-seconds, each as a script would play:
            a page load for a new listener (or the same one again), a pair, and
            then either a vote at once ("skip": no audio fetched, retried for
            the listening time) or a download of both clips and a vote polled
            every 0.5 s until the server takes it or refuses it for good
            ("fetch": as fast as the server allows). It always picks A. Every
            pair counts as one vote the script tried; at the end the votes the
            server took go through `ratings summary`'s filter. Target: at least
            95% of the script's votes refused or filtered (issue 30).
    floods  while one client keeps --results-flood results calls, then
            --generate-flood maximum Generates (120 s, 4 candidates, each from
            its own session) in flight, another visitor loads the page, gets a
            pair and votes (after downloading both clips and waiting the
            listening time, which is not counted), --probes times each. Target:
            each answers within 2 s. Each flood runs in a process of its own at the
            lowest scheduling weight (see `floods_phase`).

Every loop is bounded in time; the app is stopped at the end, also on errors.

Usage:
    .venv/bin/python bench/hostile_clients.py
    .venv/bin/python bench/hostile_clients.py --vote-seconds 30 --scripts 4 --probes 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import httpx  # noqa: E402
from gradio_client import Client  # noqa: E402 - analytics must be off before the import

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_latency import EXAMPLE, App  # noqa: E402 - bench/ is on sys.path
from machine import LoadMeter, cpu_details, cpu_line, load_line  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from musicgen.leaderboard import summarise  # noqa: E402
from musicgen.ratings import MIN_LISTEN_SECONDS, RatingsStore  # noqa: E402

TARGET_SCRIPT_SHARE = 0.95
TARGET_ANSWER_S = 2.0
LINK = re.compile(r'src="(listen/clip/[0-9a-f]{32})"')
FLOOR_S = 2 * MIN_LISTEN_SECONDS


class Visitor:
    """One browser: its listener cookie, and a gradio_client that sends it."""

    def __init__(self, url: str):
        self.url = url
        began = time.perf_counter()
        page = httpx.get(url, timeout=30)
        self.page_s = time.perf_counter() - began
        page.raise_for_status()
        self.cookies = page.cookies
        header = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        self.client = Client(url, verbose=False, headers={"Cookie": header},
                             httpx_kwargs={"timeout": 60})

    def pair(self) -> tuple[list[str], str]:
        """(the pair's links, the status line)."""
        out = self.client.predict(training_years="", listening_setup=None,
                                  api_name="/listen_next")
        return LINK.findall(str(out[0])), str(out[-1])

    def download(self, links: list[str]) -> None:
        for link in links:
            httpx.get(self.url + link, cookies=self.cookies, timeout=60).raise_for_status()

    def vote(self, choice: str = "a") -> tuple[str, str]:
        """(the reveal, the status line)."""
        out = self.client.predict(musical_a=None, musical_b=None, guess_a=None, guess_b=None,
                                  api_name=f"/listen_vote_{choice}")
        return str(out[0]), str(out[-1])


def script(url: str, mode: str, until: float, tally: dict, lock: threading.Lock) -> None:
    """One script thread (see the module docstring)."""
    visitor, pairs = None, 0
    while time.monotonic() < until:
        try:
            if visitor is None or pairs % 3 == 0:  # a new listener now and then
                visitor = Visitor(url)
            pairs += 1
            links, status = visitor.pair()
            if not links:
                outcome = "no pair: " + status[:60]
            else:
                if mode == "fetch":
                    visitor.download(links[1:])
                outcome = "refused"
                deadline = time.monotonic() + FLOOR_S + 5
                while time.monotonic() < min(deadline, until + FLOOR_S + 5):
                    reveal, status = visitor.vote("a")
                    if reveal.startswith("**Saved"):
                        outcome = "accepted"
                        break
                    if "listen to both clips first" not in status:
                        outcome = "refused: " + status.strip("⚠️ .")[:50]
                        break
                    time.sleep(0.5)
        except Exception as error:  # noqa: BLE001 - a script counts its failures and goes on
            outcome = f"error: {type(error).__name__}"
            time.sleep(0.5)
        with lock:
            tally[mode][outcome] = tally[mode].get(outcome, 0) + 1


def votes_phase(url: str, scripts: int, seconds: float, store: Path) -> dict:
    tally: dict[str, dict[str, int]] = {"skip": {}, "fetch": {}}
    lock = threading.Lock()
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=script, args=(url, "skip" if k % 4 == 0 else "fetch",
                                                      until, tally, lock))
               for k in range(scripts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 120)
    ratings = RatingsStore(store)
    result = summarise(ratings, resamples=0)
    ratings.close()
    # Every pair the scripts were served and voted on (errors and refused pairs aside).
    tried = sum(count for outcomes in tally.values() for outcome, count in outcomes.items()
                if not outcome.startswith(("error", "no pair")))
    accepted = sum(outcomes.get("accepted", 0) for outcomes in tally.values())
    counted = result["votes"]
    return {"tally": tally, "votes_tried": tried, "accepted": accepted,
            "counted_on_the_leaderboard": counted, "dropped": result["dropped"],
            "refused_or_filtered_share": round(1 - counted / tried, 4) if tried else None,
            "target_share": TARGET_SCRIPT_SHARE}


def probe(url: str) -> dict:
    """Another visitor's page load, pair and vote, each timed."""
    visitor = Visitor(url)
    began = time.perf_counter()
    links, status = visitor.pair()
    pair_s = time.perf_counter() - began
    if not links:
        return {"page_s": visitor.page_s, "pair_s": pair_s, "vote_s": None,
                "problem": status[:80]}
    visitor.download(links)
    time.sleep(FLOOR_S + 0.5)  # listening: not counted
    began = time.perf_counter()
    reveal, status = visitor.vote("tie")
    vote_s = time.perf_counter() - began
    return {"page_s": round(visitor.page_s, 3), "pair_s": round(pair_s, 3),
            "vote_s": round(vote_s, 3),
            "problem": None if reveal.startswith("**Saved") else status[:80]}


def flood(url: str, kind: str, clients: int, seconds: float) -> dict:
    """Keep one call of `kind` in flight from each of `clients` sessions for `seconds`
    (a refused call is sent again 0.2 s later); returns what the calls got."""
    tally: dict[str, int] = {}
    lock = threading.Lock()
    until = time.monotonic() + seconds

    def count(key: str) -> None:
        with lock:
            tally[key] = tally.get(key, 0) + 1

    def keep(k: int) -> None:
        client = Client(url, verbose=False, httpx_kwargs={"timeout": 600})
        while time.monotonic() < until:
            try:
                if kind == "results":
                    job = client.submit(api_name="/results")
                else:
                    job = client.submit(seed_kind="example", example=EXAMPLE, upload=None,
                                        seed_seconds=10, seed_start=None, model="lstm",
                                        seconds=120, n=4, variation=k, api_name="/generate")
                while not job.done() and time.monotonic() < until:
                    time.sleep(0.1)
                if not job.done():
                    count("still in flight at the end")
                    return
                result = job.result()
                made = kind == "results" or any(str(f).endswith(".mp3")
                                                 for f in result[1] or [])
                count("done" if made else "answered without audio")
            except Exception as error:  # noqa: BLE001 - a refusal is an answer too
                count("refused" if "waiting" in str(error) else type(error).__name__)
                time.sleep(0.2)

    threads = [threading.Thread(target=keep, args=(k,), daemon=True) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:  # one deadline for all: a call stuck in its client is left behind
        thread.join(timeout=max(0.0, until + 10 - time.monotonic()))
    with lock:
        return dict(tally)


def floods_phase(url: str, results_clients: int, generate_clients: int, probes: int,
                 warmup_s: float) -> dict:
    """Each flood runs in a process of its own, in its own scheduling group at the lowest
    weight: on this 2-core machine the flooding client's own work (100 gradio_client
    threads took 1.75 cores) would otherwise be measured as the server's slowness, and an
    attacker's client runs on the attacker's machine."""
    report = {}
    for kind, clients in (("results", results_clients), ("generate", generate_clients)):
        seconds = warmup_s + probes * (FLOOR_S + 5)
        worker = subprocess.Popen(
            [sys.executable, __file__, "--flood", kind, "--clients", str(clients), "--url", url,
             "--seconds", str(seconds)], stdout=subprocess.PIPE, text=True,
            start_new_session=True)
        # Not Linux, or no autogroups: the numbers are then pessimistic.
        with contextlib.suppress(OSError):
            Path(f"/proc/{worker.pid}/autogroup").write_text("19")
        time.sleep(warmup_s)  # let the flood fill its line
        answers = [probe(url) for _ in range(probes)]
        try:
            out, _ = worker.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            worker.kill()
            out = json.dumps({"the flooding process did not finish": 1})
        worst = max(max(a[key] for key in ("page_s", "pair_s", "vote_s") if a[key] is not None)
                    for a in answers)
        report[kind] = {"flood_clients": clients, "flood_calls": json.loads(out or "{}"),
                        "probes": answers, "worst_answer_s": round(worst, 3),
                        "median_pair_s": round(statistics.median(a["pair_s"] for a in answers),
                                               3),
                        "target_s": TARGET_ANSWER_S}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scripts", type=int, default=12)
    parser.add_argument("--vote-seconds", type=float, default=90.0)
    parser.add_argument("--results-flood", type=int, default=100)
    parser.add_argument("--generate-flood", type=int, default=40)
    parser.add_argument("--probes", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--flood", choices=["results", "generate"], help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood:  # the flooding client, in a process of its own (floods_phase)
        print(json.dumps(flood(args.url, args.flood, args.clients, args.seconds)), flush=True)
        os._exit(0)  # calls still in flight hold client threads that would keep it alive
    machine = cpu_details()
    print(cpu_line(machine), flush=True)
    meter = LoadMeter()
    with tempfile.TemporaryDirectory(prefix="musicgen-hostile-") as folder:
        db = Path(folder) / "var" / "ratings.sqlite"
        subprocess.run([sys.executable, "-m", "musicgen", "listening", "build", "--prompts", "6",
                        "--seconds", "20", "--db", str(db)], cwd=REPO_ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        os.environ["MUSICGEN_RATINGS_DB"] = str(db)  # the app's subprocess inherits it
        with App(Path(folder) / "app.log", startup_timeout=180) as app:
            print(f"app up in {app.startup_s:.1f} s at {app.url}", flush=True)
            votes = votes_phase(app.url, args.scripts, args.vote_seconds, db)
            print(json.dumps(votes), flush=True)
            floods = floods_phase(app.url, args.results_flood, args.generate_flood,
                                  args.probes, args.warmup)
    result = {"machine": {**machine, **meter.record()}, "votes": votes, "floods": floods}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(load_line(result["machine"]) + " (the app's own work counts as another process)")
    print(f"script votes: {votes['votes_tried']} tried, {votes['accepted']} taken, "
          f"{votes['counted_on_the_leaderboard']} counted -> "
          f"{votes['refused_or_filtered_share']:.1%} refused or filtered "
          f"(target >= {TARGET_SCRIPT_SHARE:.0%}); dropped {votes['dropped']}; {votes['tally']}")
    for kind, row in floods.items():
        print(f"{kind} flood ({row['flood_clients']} clients, {row['flood_calls']}): worst "
              f"page/pair/vote answer {row['worst_answer_s']} s (target <= {TARGET_ANSWER_S} s)"
              f"; probes {row['probes']}")


if __name__ == "__main__":
    main()
