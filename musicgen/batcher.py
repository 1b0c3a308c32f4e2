"""Concurrent sampling requests for one model, sampled as one batch.

    batcher = Batcher(serving_model)
    generation = batcher.generate(SamplingRequest(prompt, seconds=30, seed=4))   # from any thread

Why: a step is bound by reading the weights, not by arithmetic, so rows are
nearly free. With the shipped LSTM's int8 graph, one row stepped at about
1,900 steps/s and 16 rows at about 1,000 steps/s, i.e. 16,000 rows/s
(BENCHMARKS.md), so a class pressing Generate together is served in about the
time of one request instead of one after another.

How: one worker thread per model. A request that arrives while the worker is
idle starts at once, alone; requests that arrive while a batch is sampling wait
and go together into the next batch (up to `max_rows` rows). Each keeps its own
prompt, controls, length and seeds, and gets exactly the notes it would get
alone (`musicgen.sample.generate_batch`, tests/test_serving.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from musicgen.sample import Generation, SamplingRequest, check_request, generate_batch

# Rows per batch. The LSTM's step at 32 rows still took about a third of the
# time of 32 single steps; beyond that a batch mostly delays its first rows.
MAX_ROWS = 32


@dataclass
class _Job:
    request: SamplingRequest
    done: threading.Event = field(default_factory=threading.Event)
    result: Generation | None = None
    error: BaseException | None = None


class Batcher:
    """Samples the requests of many threads from one model, batched.

    Args:
        model: A `musicgen.serving.ServingModel`.
        max_rows: Most rows (candidates) in one batch; a request with more
            rows than this runs alone.
    """

    def __init__(self, model, max_rows: int = MAX_ROWS):
        self.model, self.max_rows = model, max_rows
        self._waiting: list[_Job] = []
        self._wake = threading.Condition()
        self._worker: threading.Thread | None = None

    def generate(self, request: SamplingRequest) -> Generation:
        """Sample one request (blocking), batched with whatever else is waiting.

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
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._waiting:
                    self._wake.wait()
                batch, rows = [], 0
                while self._waiting and (not batch or
                                         rows + self._waiting[0].request.n <= self.max_rows):
                    batch.append(self._waiting.pop(0))
                    rows += batch[-1].request.n
            try:
                results = generate_batch(self.model, [job.request for job in batch])
            except BaseException as error:  # a bug: every caller of the batch sees it
                for job in batch:
                    job.error = error
            else:
                for job, result in zip(batch, results, strict=True):
                    job.result = result
            for job in batch:
                job.done.set()
