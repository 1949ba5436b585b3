"""The bounded request queue and the batches it forms.

A request is admitted (or answered 429 with Retry-After when `max_queue` requests already wait),
prepared (media decoded and encoded, in worker threads), then queued. The scheduler, a task on the
event loop, starts a batch when it is full (`max_batch`), or when its first request has waited
`batch_wait` and no admitted request is still being prepared (at most 4x that wait). A batch holds
requests with the same key only (same adapter and decoding settings), streamed or not, never both.
Batches run one at a time on the model thread; the event loop stays free meanwhile.
Every admitted request gets exactly one outcome: its result, its error, or a 503 at shutdown.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from vidlab.serve.errors import ServeError
from vidlab.serve.metrics import EngineMetrics

_LONGEST_WAIT = 4  # x batch_wait: a batch waits no longer for requests still being prepared


@dataclass(eq=False)
class Job:
    """One admitted request on its way through the queue.

    Attributes:
        key: requests with equal keys may share a batch; None: this one runs alone.
        payload: what the model thread needs (set when the request is prepared).
        pieces: for a streamed request, the text pieces as they are generated (None at the end).
        cancelled: set when the client went away (or a stop string ended a stream): the model
            thread stops generating once every request of its batch is cancelled.
        steps: model forward passes run for this request so far.
    """

    key: Hashable | None = None
    payload: Any = None
    stream: bool = False
    future: asyncio.Future | None = None
    pieces: asyncio.Queue | None = None
    cancelled: bool = False
    state: str = "preparing"  # preparing, pending, running, done, dropped
    ready_at: float = 0.0
    batch_size: int = 0
    steps: int = 0
    extra: dict = field(default_factory=dict)


BatchRunner = Callable[[list[Job]], list[Any]]
StreamRunner = Callable[[list[Job], Callable[[int, str], None]], list[Any]]


class Scheduler:
    """Admits, queues and batches requests; runs each batch on one model thread.

    Args:
        run_batch: on the model thread: the jobs' results, in order (raise to fail them all).
        run_stream: on the model thread: generate streamed jobs, calling push(row, piece) per piece; their
            results, in order.
        max_batch, max_queue, batch_wait: see `ServeOptions` (batch_wait in seconds).
    """

    def __init__(self, run_batch: BatchRunner, run_stream: StreamRunner, *, max_batch: int, max_queue: int,
                 batch_wait: float, metrics: EngineMetrics):
        self.run_batch, self.run_stream = run_batch, run_stream
        self.max_batch, self.max_queue, self.batch_wait = max_batch, max_queue, batch_wait
        self.metrics = metrics
        self._pending: deque[Job] = deque()
        self._preparing = 0
        self._waiting = 0
        self._batch_seconds = 0.5  # running mean, for Retry-After
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidlab-model")
        self._running: list[Job] = []
        self._closed = False

    @property
    def waiting(self) -> int:
        """Admitted requests not yet being generated."""
        return self._waiting

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="vidlab-scheduler")

    async def close(self) -> None:
        """Stop batching; requests still waiting get a 503 (retry elsewhere or later)."""
        self._closed = True
        leftover = [*self._pending, *self._running]
        if self._task is not None:
            self._task.cancel()
            if self._task.get_loop() is asyncio.get_running_loop():  # Ray may close from another loop
                try:
                    await self._task
                except asyncio.CancelledError:
                    pass
        for job in leftover:
            self._fail(job, ServeError(503, "the server is shutting down. Send the request again.",
                                       code="shutting_down", retry_after=1))
        self._pending.clear()
        self._model_thread.shutdown(wait=True, cancel_futures=True)

    def retry_after(self) -> float:
        return max(1.0, self._batch_seconds * math.ceil((self._waiting + 1) / self.max_batch))

    def admit(self, stream: bool) -> Job:
        """A new job in the preparing state.

        Raises:
            ServeError: 429 with Retry-After when `max_queue` requests already wait; 503 when closing.
        """
        if self._closed or self._task is None:
            raise ServeError(503, "the server is not accepting requests (starting or shutting down). Send the "
                             "request again.", code="not_ready", retry_after=1)
        if self._waiting >= self.max_queue:
            raise ServeError(429, f"the server's queue is full ({self.max_queue} requests waiting). Retry after the "
                             "Retry-After seconds (the server's max_queue).",
                             code="queue_full", retry_after=self.retry_after())
        loop = asyncio.get_running_loop()
        job = Job(stream=stream, future=loop.create_future(), pieces=asyncio.Queue() if stream else None)
        self._preparing += 1
        self._waiting += 1
        self.metrics.queue_depth.set(self._waiting)
        return job

    def submit(self, job: Job) -> None:
        """A prepared job joins the queue (or is dropped if its client left meanwhile)."""
        if job.state != "preparing":
            return
        self._preparing -= 1
        if job.cancelled:
            self._drop(job)
            return
        job.state, job.ready_at = "pending", time.monotonic()
        self._pending.append(job)
        self._wake.set()

    def abandon(self, job: Job) -> None:
        """A job whose preparation failed or whose client left: it leaves the queue."""
        if job.state == "preparing":
            self._preparing -= 1
            self._drop(job)
        self._wake.set()

    def cancel(self, job: Job) -> None:
        """The client went away: a waiting job leaves the queue, a running one stops with its batch."""
        if job.state in ("done", "dropped") or job.cancelled:
            return
        job.cancelled = True
        self.metrics.cancelled.inc()
        if job.state == "pending":
            self._pending.remove(job)
            self._drop(job)
        if job.future is not None and not job.future.done():
            job.future.cancel()

    def _drop(self, job: Job) -> None:
        job.state = "dropped"
        self._waiting -= 1
        self.metrics.queue_depth.set(self._waiting)

    def _fail(self, job: Job, error: BaseException) -> None:
        if job.state in ("pending", "preparing"):
            self._drop(job)
        job.state = "done"
        if job.future is not None and not job.future.done():
            job.future.set_exception(error)
        if job.pieces is not None:
            job.pieces.put_nowait(None)

    def _compatible(self) -> list[Job]:
        first = self._pending[0]
        if first.key is None:
            return [first]
        return [job for job in self._pending if job.key == first.key and job.stream == first.stream][: self.max_batch]

    async def _gather(self) -> None:
        """Wait for companions of the first pending job (see the module docstring)."""
        if self.max_batch == 1 or self.batch_wait <= 0:
            return
        first = self._pending[0].ready_at
        while len(self._compatible()) < self.max_batch:
            now = time.monotonic()
            limit = first + self.batch_wait * (_LONGEST_WAIT if self._preparing else 1)
            if now >= limit:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=limit - now)
            except TimeoutError:
                pass
            if not self._pending:
                return

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._gather()
            if not self._pending:
                continue
            jobs = self._compatible()
            for job in jobs:
                self._pending.remove(job)
                job.state, job.batch_size = "running", len(jobs)
                self._waiting -= 1
            self.metrics.queue_depth.set(self._waiting)
            self.metrics.batch_size.observe(len(jobs))
            self.metrics.running.set(len(jobs))
            self.metrics.occupancy.set(len(jobs) / self.max_batch)
            self._running = jobs
            started = time.monotonic()
            try:
                if jobs[0].stream:

                    def push(row: int, piece: str, jobs: list[Job] = jobs) -> None:
                        loop.call_soon_threadsafe(jobs[row].pieces.put_nowait, piece)

                    results = await loop.run_in_executor(self._model_thread, self.run_stream, jobs, push)
                else:
                    results = await loop.run_in_executor(self._model_thread, self.run_batch, jobs)
            except Exception as err:  # a bug or an out-of-memory: these requests fail, the server goes on
                if jobs[0].stream or len(jobs) == 1:  # a stream may have sent text already: it cannot start over
                    for job in jobs:
                        self._fail(job, err)
                    continue
                # One request's failure is its own: each request of the failed batch is generated again alone.
                results = []
                for job in jobs:
                    job.batch_size = 1
                    if job.cancelled:
                        results.append(None)
                        continue
                    try:
                        results.append((await loop.run_in_executor(self._model_thread, self.run_batch, [job]))[0])
                    except Exception as alone:
                        self._fail(job, alone)
                        results.append(None)
            finally:
                self._running = []
                self.metrics.running.set(0)
                seconds = time.monotonic() - started
                self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * seconds
            for job, result in zip(jobs, results):
                if job.state == "done":  # failed alone
                    continue
                job.state = "done"
                if job.future is not None and not job.future.done():
                    job.future.set_result(result)
                if job.pieces is not None:
                    job.pieces.put_nowait(None)
