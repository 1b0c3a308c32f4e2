"""Benchmark: click-to-audio latency of the real Gradio app, alone and under 30 clients.

Starts `python app.py --host 127.0.0.1 --port P` (a free port, analytics off,
the app's own checkpoints/) as a subprocess, waits until it answers, and talks
to it only over 127.0.0.1 with `gradio_client`, as a browser's requests would:

    sequential  --runs calls of /generate, one after the other from one client:
                a --seconds continuation, one candidate, the LSTM, the last 10 s
                of a built-in example, the app's default sampling settings,
                seed = run number. Latency is from the start of the call until
                the returned audio file exists on this side (sampling, MIDI,
                rendering, piano roll and confidence plot on the server, plus
                the upload of results and the client's download).
    concurrent  --concurrent threads, each with its own Client (connected
                before the clock starts), fire one such call at the same
                moment. The app runs up to `Studio.concurrent_requests` of
                them at once, and each model's `Batcher` samples the requests
                that overlap as one batch (musicgen/batcher.py).

Each call's audio file is what the browser downloads; its size is reported.

Every call is bounded by --timeout seconds (concurrent calls by --timeout x
--concurrent, since they queue); the app is terminated at the end, also on
errors or Ctrl-C.

Usage (the real numbers):
    .venv/bin/python bench/app_latency.py --runs 10 --concurrent 30 --seconds 30
    .venv/bin/python bench/app_latency.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from gradio_client import Client  # noqa: E402 - analytics must be off before the import

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
EXAMPLE = "Bach: Prelude in C (opening)"
TARGET_MEDIAN_S = 1.5
TARGET_LAST_CONCURRENT_S = 30.0  # issue 14: 30 clients at once, the last done within 30 s
from machine import LoadMeter, load_line  # noqa: E402 - bench/ is on sys.path

sys.path.insert(0, str(REPO_ROOT))
from musicgen.settings import Settings  # noqa: E402 - the repository is on sys.path now
from musicgen.studio import CLIP_SUFFIX  # noqa: E402

DEFAULTS = Settings()

# ---------------------------------------------------------------- the app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class App:
    """`app.py` in a subprocess on 127.0.0.1; a context manager that always stops it."""

    def __init__(self, log_path: Path, startup_timeout: float):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}/"
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self.startup_s = 0.0

    def __enter__(self) -> App:
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
        began = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(REPO_ROOT / "app.py"), "--host", HOST,
                 "--port", str(self.port)], cwd=REPO_ROOT, env=env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._wait_until_up()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - began
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited with {self.process.returncode}:\n"
                                   + self.log_tail())
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"the app did not answer within {self.startup_timeout:g} s:\n"
                           + self.log_tail())

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------- calls


def connect(url: str, downloads: Path) -> Client:
    return Client(url, verbose=False, download_files=str(downloads), analytics_enabled=False,
                  httpx_kwargs={"timeout": 60})


def click(client: Client, seconds: float, seed: int, timeout: float) -> tuple[float, int]:
    """One Generate click: (seconds from the call until its audio file exists here, its bytes)."""
    began = time.perf_counter()
    job = client.submit(
        seed_kind="example", example=EXAMPLE, upload=None, seed_seconds=10, seed_start=None,
        model="lstm", soundfont=None, seconds=seconds, temperature=DEFAULTS.temperature,
        top_k=DEFAULTS.top_k, top_p=DEFAULTS.top_p, variation=seed, n=1, include_seed=True,
        max_silence=DEFAULTS.max_silence, new_variation=False, api_name="/generate")
    try:
        result = job.result(timeout=timeout)
    except TimeoutError:
        job.cancel()
        raise
    # Outputs in order: player, files, info, rating of each slot, ...; files are MIDI + audio.
    audio = next((f for f in result[1] or [] if str(f).endswith(CLIP_SUFFIX)), None)
    if not audio or not Path(audio).is_file():
        raise RuntimeError(f"no audio file came back (got {audio!r})")
    return time.perf_counter() - began, Path(audio).stat().st_size


def percentile(values: list[float], fraction: float) -> float:
    """Linear-interpolated percentile (numpy's default method)."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def sequential(url: str, downloads: Path, runs: int, seconds: float, timeout: float,
               log: Callable[[str], None]) -> dict:
    client = connect(url, downloads)
    latencies, failures, sizes = [], [], []
    try:
        click(client, seconds, seed=0, timeout=timeout)  # warm-up: first-call costs
    except Exception as error:  # the timed runs will show whether it keeps failing
        log(f"  warm-up call FAILED: {type(error).__name__}: {error}")
    for run in range(1, runs + 1):
        try:
            latency, size = click(client, seconds, seed=run, timeout=timeout)
            sizes.append(size)
        except Exception as error:  # a benchmark counts failures; it goes on
            failures.append(f"run {run}: {type(error).__name__}: {error}")
            log(f"  sequential {run}/{runs}: FAILED {failures[-1]}")
            continue
        latencies.append(latency)
        log(f"  sequential {run}/{runs}: {latency:.3f} s")
    return {"runs": runs, "latencies_s": [round(x, 3) for x in latencies], "failures": failures,
            "audio_bytes_median": round(statistics.median(sizes)) if sizes else None,
            "median_s": round(statistics.median(latencies), 3) if latencies else None,
            "p95_s": round(percentile(latencies, 0.95), 3) if latencies else None}


def concurrent(url: str, downloads: Path, clients: int, seconds: float, timeout: float,
               log: Callable[[str], None]) -> dict:
    connected = [connect(url, downloads) for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    latencies: list[float | None] = [None] * clients
    failures: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        try:
            start.wait(timeout=60)
            latencies[i] = click(connected[i], seconds, seed=100 + i,
                                 timeout=timeout * clients)[0]
        except Exception as error:  # counted, not raised
            with lock:
                failures.append(f"client {i}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait(timeout=60)
    began = time.perf_counter()
    for thread in threads:
        thread.join(timeout=timeout * clients + 30)
    wall = time.perf_counter() - began
    served = [x for x in latencies if x is not None]
    log(f"  concurrent: {len(served)}/{clients} served in {wall:.2f} s")
    return {"clients": clients, "served": len(served), "failed": len(failures),
            "unfinished": sum(thread.is_alive() for thread in threads), "failures": failures,
            "wall_s": round(wall, 3), "latencies_s": [round(x, 3) for x in sorted(served)],
            "median_s": round(statistics.median(served), 3) if served else None,
            "max_s": round(max(served), 3) if served else None}


# ---------------------------------------------------------------- running


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict:
    meter = LoadMeter()
    with tempfile.TemporaryDirectory(prefix="musicgen-bench-app-") as folder:
        folder = Path(folder)
        log("starting the app")
        with App(folder / "app.log", args.startup_timeout) as app:
            log(f"app up at {app.url} after {app.startup_s:.1f} s")
            result_sequential = sequential(app.url, folder / "downloads", args.runs,
                                           args.seconds, args.timeout, log)
            result_concurrent = (concurrent(app.url, folder / "downloads", args.concurrent,
                                            args.seconds, args.timeout, log)
                                 if args.concurrent else None)
            startup_s = app.startup_s
    return {
        "request": {"example": EXAMPLE, "seed_seconds": 10, "seconds": args.seconds,
                    "model": "lstm", "n": 1, "temperature": DEFAULTS.temperature,
                    "top_p": DEFAULTS.top_p},
        "app_startup_s": round(startup_s, 2),
        "sequential": result_sequential,
        "concurrent": result_concurrent,
        "target_median_s": TARGET_MEDIAN_S,
        "machine": {
            **meter.record(),
            "python": platform.python_version(),
            "gradio": version("gradio"),
            "gradio_client": version("gradio_client"),
        },
    }


def report(result: dict) -> str:
    """The human-readable summary of `run`'s result."""
    seq, con, machine = result["sequential"], result["concurrent"], result["machine"]
    request = result["request"]
    lines = [f"App click-to-audio latency: /generate, {request['seconds']:g} s continuation, "
             f"1 candidate, {request['model']}, {request['seed_seconds']} s of "
             f"{request['example']!r}",
             f"app started and answering after {result['app_startup_s']:.1f} s", "",
             f"{'':<12} {'calls':>5} {'ok':>4} {'median s':>9} {'p95 s':>7} {'max s':>7} "
             f"{'wall s':>7}  latencies (s)"]
    ok = seq["runs"] - len(seq["failures"])
    lines.append(f"{'sequential':<12} {seq['runs']:>5} {ok:>4} {_num(seq['median_s']):>9} "
                 f"{_num(seq['p95_s']):>7} {_num(max(seq['latencies_s'], default=None)):>7} "
                 f"{'':>7}  {', '.join(f'{x:.2f}' for x in seq['latencies_s'])}")
    if con:
        lines.append(f"{'concurrent':<12} {con['clients']:>5} {con['served']:>4} "
                     f"{_num(con['median_s']):>9} {'':>7} {_num(con['max_s']):>7} "
                     f"{con['wall_s']:>7.2f}  {', '.join(f'{x:.2f}' for x in con['latencies_s'])}")
    lines.append("")
    median = seq["median_s"]
    lines.append(f"target median <= {TARGET_MEDIAN_S:g} s: {_num(median)} s "
                 f"({'met' if median is not None and median <= TARGET_MEDIAN_S else 'NOT met'})")
    if seq["audio_bytes_median"] is not None:
        lines.append(f"audio sent per candidate: {seq['audio_bytes_median'] / 1024:.0f} KB "
                     f"({CLIP_SUFFIX})")
    if con:
        met = (con["served"] == con["clients"] and not con["failed"]
               and con["max_s"] is not None and con["max_s"] <= TARGET_LAST_CONCURRENT_S)
        lines.append(f"target {con['clients']} concurrent all served, none failed, the last "
                     f"within {TARGET_LAST_CONCURRENT_S:g} s: {con['served']}/{con['clients']} "
                     f"served, {con['failed']} failed, {con['unfinished']} unfinished, last "
                     f"{_num(con['max_s'])} s ({'met' if met else 'NOT met'})")
    for failure in seq["failures"] + (con["failures"] if con else []):
        lines.append(f"failure: {failure}")
    lines += [
        "",
        load_line(machine),
        f"python {machine['python']}, gradio {machine['gradio']}, "
        f"gradio_client {machine['gradio_client']}",
    ]
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=10,
                        help="sequential calls; median and p95 are reported (default: 10)")
    parser.add_argument("--concurrent", type=int, default=30,
                        help="clients calling at once; 0 skips this part (default: 10)")
    parser.add_argument("--seconds", type=float, default=30,
                        help="length of the continuation, 5-120 (default: 30)")
    parser.add_argument("--timeout", type=float, default=60,
                        help="seconds one call may take (default: 60)")
    parser.add_argument("--startup-timeout", type=float, default=180,
                        help="seconds the app may take to start answering (default: 180)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.concurrent < 0:
        sys.exit("error: --runs must be at least 1 and --concurrent at least 0")

    try:
        result = run(args, log=lambda line: print(line, file=sys.stderr, flush=True))
    except (TimeoutError, RuntimeError) as error:  # the app did not start
        sys.exit(f"error: {error}")
    print(json.dumps(result, indent=2) if args.json else report(result))


if __name__ == "__main__":
    main()
