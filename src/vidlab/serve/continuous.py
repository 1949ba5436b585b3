"""Continuous batching in the server (`ServeOptions.batching = "continuous"`, the default).

Admission, the 429 bound, cancellation and shutdown are the static `Scheduler`'s. What differs is the model
thread: it runs a `vidlab.running_batch.RunningBatch` one decoding step at a time, and between steps waiting
requests join it in arrival order (their prefill interleaved with the others' decoding; up to max_batch of them wait
inside the batch, ahead, so that short prompts are prefilled together when rows free) and answered, cancelled or
failed ones leave it, so nobody waits for a batch to end. The model thread never waits for the event loop: it takes
joiners from the queue itself (the queue's bookkeeping is shared under a lock) and hands a step's text pieces and
results to the event loop in one `call_soon_threadsafe` (one wake-up per step, not one per token and row).
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
    """Admits and queues requests as `Scheduler` does; generates them in one running batch on the model thread.

    Args:
        batch: the running batch (its `max_rows` is the server's max_batch).
        to_request: the `Request` of a prepared job (called on the model thread; its text pieces and cancellation
            are wired here).
    """

    def __init__(self, batch: RunningBatch, to_request: Callable[[Job], Request], *, max_queue: int,
                 metrics: EngineMetrics):
        super().__init__(None, None, max_batch=batch.max_rows, max_queue=max_queue, batch_wait=0, metrics=metrics)
        self.batch, self.to_request = batch, to_request
        # The queue (pending jobs, counts, job states, running jobs) is changed on the event loop and taken from on
        # the model thread: under this lock.
        self._lock = threading.RLock()
        self._arrived = threading.Event()  # wakes an idle model thread
        self._jobs: dict[int, Job] = {}  # id(request) -> its job
        self._counted = (0, 0, 0)  # the batch's generated tokens, steps and row-steps already in the metrics
        self._window = (0, 0.0, 0, 0)  # tokens, seconds, steps and row-steps toward the next readings
        self._pieces: list[tuple[asyncio.Queue, str]] = []  # this step's text pieces (model thread only)

    # ---- the event loop's side: the static scheduler's, under the lock --------------------------------------------

    def admit(self, stream: bool) -> Job:
        with self._lock:
            return super().admit(stream)

    def submit(self, job: Job) -> None:
        with self._lock:
            super().submit(job)
        self._arrived.set()

    def abandon(self, job: Job) -> None:
        with self._lock:
            super().abandon(job)

    def cancel(self, job: Job) -> None:
        with self._lock:
            super().cancel(job)

    async def close(self) -> None:
        with self._lock:
            self._closed = True  # the model thread takes no more jobs
        self._arrived.set()
        await super().close()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._model_thread, self._run, loop)

    def _deliver(self, request: Request) -> None:
        """On the event loop: a request that left the batch gets its outcome."""
        with self._lock:
            job = self._jobs.pop(id(request))
            if job in self._running:
                self._running.remove(job)
            self.metrics.running.set(len(self._running))
            if job.state == "done":  # answered 503 by close meanwhile
                return
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

    def _hand_over(self, pieces: list[tuple[asyncio.Queue, str]], left: list[Request]) -> None:
        """On the event loop: a step's text pieces, in order, then the outcomes of the requests that left."""
        for queue, piece in pieces:
            queue.put_nowait(piece)
        for request in left:
            self._deliver(request)

    # ---- the model thread ------------------------------------------------------------------------------------------

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        """Until closed: take joiners, step the batch, hand back who left."""
        while not self._closed:
            self._arrived.clear()
            self._take()
            if not len(self.batch):
                self._arrived.wait(timeout=1.0)
                continue
            started = time.perf_counter()
            try:
                left = self.batch.step()
            except Exception as err:  # a bug outside the batch's own handling: its requests fail, the server goes on
                left = self.batch.clear()
                for request in left:
                    request.error = err
            self._account(time.perf_counter() - started)
            if self._pieces or left:
                pieces, self._pieces = self._pieces, []
                loop.call_soon_threadsafe(self._hand_over, pieces, left)

    def _take(self) -> None:
        """Waiting requests join the batch in arrival order while there is room (and their adapter may mix)."""
        joined = 0
        with self._lock:
            while self._pending and not self._closed:
                job = self._pending[0]
                request = job.extra.get("request")
                if request is None:
                    request = job.extra["request"] = self._wire(self.to_request(job), job)
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
                self.metrics.batch_size.observe(min(len(self._running), self.max_batch))  # rows, not those ahead
                self.metrics.running.set(len(self._running))

    def _wire(self, request: Request, job: Job) -> Request:
        if job.stream:
            request.on_text = lambda piece: self._pieces.append((job.pieces, piece))
        request.cancelled = lambda: job.cancelled
        return request

    def _account(self, seconds: float) -> None:
        """Tokens and time into the counters; tokens/s and occupancy over about the last second."""
        now = (self.batch.generated_tokens, self.batch.steps, self.batch.row_steps)
        tokens, steps, row_steps = (a - b for a, b in zip(now, self._counted))
        self._counted = now
        self.metrics.generated_tokens.inc(tokens)
        self.metrics.generation_seconds.inc(seconds)
        w_tokens, w_seconds, w_steps, w_rows = self._window
        self._window = (w_tokens + tokens, w_seconds + seconds, w_steps + steps, w_rows + row_steps)
        w_tokens, w_seconds, w_steps, w_rows = self._window
        if w_seconds >= _RATE_WINDOW or (w_seconds > 0 and not len(self.batch)):
            self.metrics.tokens_per_second.set(w_tokens / w_seconds)
            if w_steps:
                self.metrics.occupancy.set(w_rows / (w_steps * self.max_batch))
            self._window = (0, 0.0, 0, 0)
