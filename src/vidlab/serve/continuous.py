"""Continuous batching in the server (`ServeOptions.batching = "continuous"`, the default).

Admission, the 429 bound, cancellation and shutdown are the static `Scheduler`'s. What differs is the model
thread: a `vidlab.running_batch.RunningBatch` is stepped there one decoding step at a time, and between steps a
prepared request joins it (its prefill interleaved with the others' decoding) and an answered, cancelled or failed
one leaves it, so nobody waits for a batch to end. The model thread hands control back to the event loop only when
a request left, or one arrived while there is room; the event loop then lets waiting requests join in arrival
order, delivers results and runs the model thread again.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from vidlab.running_batch import Request, RunningBatch
from vidlab.serve.batching import Job, Scheduler
from vidlab.serve.metrics import EngineMetrics

_RATE_WINDOW = 1.0  # seconds of generation behind each tokens/s reading


class ContinuousScheduler(Scheduler):
    """Admits and queues requests as `Scheduler` does; generates them in one running batch.

    Args:
        batch: the running batch (its `max_rows` is the server's max_batch).
        to_request: on the event loop: the `Request` of a prepared job (its text pieces and cancellation are
            wired here).
    """

    def __init__(self, batch: RunningBatch, to_request: Callable[[Job], Request], *, max_queue: int,
                 metrics: EngineMetrics):
        super().__init__(None, None, max_batch=batch.max_rows, max_queue=max_queue, batch_wait=0, metrics=metrics)
        self.batch, self.to_request = batch, to_request
        self._arrived = threading.Event()  # tells the model thread a request waits to join
        self._jobs: dict[int, Job] = {}  # id(request) -> its job
        self._counted = (0, 0, 0)  # the batch's generated tokens, steps and row-steps already in the metrics
        self._window = (0, 0.0)  # tokens and seconds toward the next tokens/s reading

    def submit(self, job: Job) -> None:
        super().submit(job)
        self._arrived.set()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending and not self._running:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._join(loop)
            self._arrived.clear()
            started = time.perf_counter()
            try:
                left = await loop.run_in_executor(self._model_thread, self._work)
            except Exception as err:  # a bug outside the batch's own handling: its requests fail, the server goes on
                left = self.batch.clear()
                for request in left:
                    request.error = err
            self._account(time.perf_counter() - started)
            for request in left:
                self._deliver(request)
            self.metrics.running.set(len(self._running))

    def _join(self, loop: asyncio.AbstractEventLoop) -> None:
        """Waiting requests join the batch in arrival order while there is room (and their adapter may mix)."""
        joined = 0
        while self._pending:
            job = self._pending[0]
            request = job.extra.get("request")
            if request is None:
                request = job.extra["request"] = self._wire(self.to_request(job), job, loop)
            if not self.batch.accepts(request):
                break
            self._pending.popleft()
            job.state = "running"
            self._waiting -= 1
            self._jobs[id(request)] = job
            self._running.append(job)
            self.batch.add(request)
            joined += 1
        if joined:
            self.metrics.queue_depth.set(self._waiting)
            self.metrics.batch_size.observe(len(self._running))
            self.metrics.running.set(len(self._running))

    @staticmethod
    def _wire(request: Request, job: Job, loop: asyncio.AbstractEventLoop) -> Request:
        if job.stream:
            request.on_text = lambda piece: loop.call_soon_threadsafe(job.pieces.put_nowait, piece)
        request.cancelled = lambda: job.cancelled
        return request

    def _work(self) -> list[Request]:
        """On the model thread: decoding steps until a request leaves, or one waits to join and there is room."""
        left: list[Request] = []
        while len(self.batch) and not left and not self._closed:
            left = self.batch.step()
            if self._arrived.is_set() and len(self.batch) < self.max_batch:
                break
        return left

    def _deliver(self, request: Request) -> None:
        job = self._jobs.pop(id(request))
        self._running.remove(job)
        job.batch_size, job.steps = request.peak_rows, len(request.token_ids)
        if request.error is not None:
            self._fail(job, request.error)
            return
        job.state = "done"
        if request.stopped:
            self.metrics.stopped.inc()
        self.metrics.prompt_tokens.inc(job.payload.sample.stats.total_tokens)
        if job.future is not None and not job.future.done():
            job.future.set_result(request.result)
        if job.pieces is not None:
            job.pieces.put_nowait(None)

    def _account(self, seconds: float) -> None:
        tokens, steps, row_steps = self.batch.generated_tokens, self.batch.steps, self.batch.row_steps
        new_tokens, new_steps = tokens - self._counted[0], steps - self._counted[1]
        self.metrics.generated_tokens.inc(new_tokens)
        self.metrics.generation_seconds.inc(seconds)
        if new_steps:
            self.metrics.occupancy.set((row_steps - self._counted[2]) / (new_steps * self.max_batch))
        self._counted = (tokens, steps, row_steps)
        window = (self._window[0] + new_tokens, self._window[1] + seconds)
        if window[1] >= _RATE_WINDOW or (window[1] > 0 and not len(self.batch)):
            self.metrics.tokens_per_second.set(window[0] / window[1])
            window = (0, 0.0)
        self._window = window
