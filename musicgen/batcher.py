"""Concurrent sampling requests for one model, sampled as one batch.

    batcher = Batcher(serving_model)
    generation = batcher.generate(SamplingRequest(prompt, seconds=30, seed=4))   # from any thread

Why: a step is bound by reading the weights, not by arithmetic, so rows are
nearly free. With the shipped LSTM's int8 graph, one row stepped at about
1,900 steps/s and 16 rows at about 1,000 steps/s, i.e. 16,000 rows/s
(BENCHMARKS.md), so a class pressing Generate together is served in about the
time of one request instead of one after another.

How: one worker thread per model steps a `musicgen.sample.SamplingRun`.
Requests join it between two steps (up to `max_rows` rows), and each is
handed back as soon as its own rows are done: a short request is not kept
waiting for a long one, and a request that arrives while others sample starts
at once. Each keeps its own prompt, controls, length and seeds, and gets
exactly the notes it would get alone (tests/test_serving.py).

Progress and the tokens so far reach the caller in its own thread (where
Gradio finds its request, and where the app renders the music while it is
sampled, beside the worker on a second core), polled from what the worker
last recorded; an exception there is the caller's alone.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace

from musicgen.sample import Generation, SamplingRequest, SamplingRun, check_request

# Rows per batch. The LSTM's step at 32 rows still took about a third of the
# time of 32 single steps; beyond that a batch mostly delays its first rows.
MAX_ROWS = 32
# How often a waiting caller passes on new progress: the sampler reports every
# 32 tokens, about 50 times a second, and each report would be a message Gradio
# sends to the browser.
PROGRESS_POLL_S = 0.2
# How often a caller that takes the tokens so far gets them: about 4 s of the
# LSTM's music. Each hand-over is decoded and played in the caller's thread,
# whose Python the worker waits for; a 30 s LSTM click, median of 12 in one
# run: 0.83 s every 0.05 s, 0.80 s every 0.1 s, 0.83 s every 0.2 s (more of
# the clip left to render after sampling), 0.93 s rendered after sampling.
TOKENS_POLL_S = 0.1


@dataclass
class _Job:
    request: SamplingRequest
    done: threading.Event = field(default_factory=threading.Event)
    progress: float | None = None  # the latest fraction the worker saw
    tokens: dict | None = None  # the latest tokens so far, by row
    result: Generation | None = None
    error: BaseException | None = None

    def record(self, fraction: float) -> None:
        self.progress = fraction

    def record_tokens(self, rows: dict) -> None:
        self.tokens = rows


class Batcher:
    """Samples the requests of many threads from one model, batched.

    Args:
        model: A `musicgen.serving.ServingModel`.
        max_rows: Most rows (candidates) in the batch; a request with more
            rows than this runs when the batch is empty.
    """

    def __init__(self, model, max_rows: int = MAX_ROWS):
        self.model, self.max_rows = model, max_rows
        self._waiting: list[_Job] = []
        self._wake = threading.Condition()
        self._worker: threading.Thread | None = None

    def generate(self, request: SamplingRequest) -> Generation:
        """Sample one request (blocking), batched with whatever else is sampling.

        Raises:
            ValueError: Settings outside what the sampler can do (checked here,
                so that one bad request never fails the others of its batch).
        """
        check_request(request)
        job = _Job(request)
        with self._wake:
            self._waiting.append(job)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="sampling",
                                                daemon=True)
                self._worker.start()
            self._wake.notify()
        forwarded, forwarded_at, forwarded_tokens = None, 0.0, None
        poll = PROGRESS_POLL_S if request.on_tokens is None else TOKENS_POLL_S
        while not job.done.wait(poll):
            if request.on_tokens is not None and job.tokens is not forwarded_tokens:
                forwarded_tokens = job.tokens
                request.on_tokens(forwarded_tokens)
            if (request.on_progress is not None and job.progress != forwarded
                    and time.monotonic() - forwarded_at >= PROGRESS_POLL_S):
                forwarded, forwarded_at = job.progress, time.monotonic()
                request.on_progress(forwarded)
        if job.error is not None:
            raise job.error
        if request.on_progress is not None:
            request.on_progress(1.0)
        return job.result

    def _work(self) -> None:
        run = SamplingRun(self.model)
        jobs: dict[int, _Job] = {}
        while True:
            with self._wake:
                while not self._waiting and not run.rows:
                    self._wake.wait()
                joining, rows = [], run.rows
                while self._waiting and (rows == 0 or
                                         rows + self._waiting[0].request.n <= self.max_rows):
                    joining.append(self._waiting.pop(0))
                    rows += joining[-1].request.n
            if joining:
                try:
                    keys = run.add([replace(job.request, on_progress=job.record,
                                            on_tokens=job.record_tokens
                                            if job.request.on_tokens else None)
                                    for job in joining])
                except BaseException as error:  # a bug: those who asked see it
                    self._fail(joining, error)
                else:
                    jobs.update(zip(keys, joining, strict=True))
            if not run.rows:
                continue
            try:
                done = run.step()
            except BaseException as error:  # a bug: every request in the batch sees it
                self._fail(list(jobs.values()), error)
                jobs.clear()
                run = SamplingRun(self.model)
                continue
            for key, generation in done.items():
                job = jobs.pop(key)
                job.result = generation
                job.done.set()

    @staticmethod
    def _fail(jobs: list[_Job], error: BaseException) -> None:
        for job in jobs:
            job.error = error
            job.done.set()
