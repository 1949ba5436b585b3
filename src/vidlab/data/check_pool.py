"""Worker processes with a time limit per task: a task that hangs or kills its worker is one failed task.

`concurrent.futures.ProcessPoolExecutor` cannot stop one task (a future's timeout only stops
waiting, the worker keeps running), and a worker that dies breaks the whole pool. Here each worker
has its own pipe, so the pool knows which task each one holds: past the deadline the worker is
killed and replaced, and a worker that dies (a decoder's segfault) fails only its task.

A streaming pool's function returns an iterator: each item comes back as soon as the worker has it,
and the time limit applies to each item (the first one from the task's start, each next one from
the one before), so one task can measure many records that share a video, each within the limit.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from vidlab.errors import VidlabError


@dataclass(frozen=True)
class TaskFailure:
    """A task that did not return: kind is "timeout", "crashed" (the worker died) or "error" (it raised)."""

    kind: str
    detail: str


def _worker(conn: Connection, fn: Callable[[Any], Any], initializer: Callable[..., None] | None, initargs: tuple,
            streaming: bool = False):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops the workers
    faulthandler.disable()  # a decoder's crash is reported as that record's failure, not as a dump on stderr
    try:
        import torch

        torch.set_num_threads(1)  # as torch's DataLoader workers: processes, not threads, give the parallelism
        if initializer is not None:
            initializer(*initargs)
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("init-error", f"{type(err).__name__}: {err}"))
        return
    conn.send(("ready", None))
    while True:
        message = conn.recv()
        if message is None:
            return
        key, argument = message
        try:
            if streaming:
                for item in fn(argument):
                    conn.send((key, ("part", item)))
                conn.send((key, ("end", None)))
            else:
                conn.send((key, ("ok", fn(argument))))
        except BaseException as err:  # noqa: BLE001 - one task's exception must not end the worker
            conn.send((key, ("error", f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=6)}")))


class _Slot:
    def __init__(self, context, fn, initializer, initargs, streaming=False):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child, fn, initializer, initargs, streaming),
                                       daemon=True)
        self.process.start()
        child.close()
        self.ready = False
        self.task: tuple[Hashable, Any] | None = None
        self.started = 0.0

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            self.process.join(2)
            if self.process.is_alive():
                self.process.kill()
        self.process.join()
        self.conn.close()


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


def default_context():
    """fork where the platform has it (workers start at once and share the loaded processor), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


class TimedPool:
    """Runs `fn(argument)` for each (key, argument) in `workers` processes, each task within `timeout` seconds.

    Args:
        fn: a module-level function (pickled by name under spawn).
        workers: processes (at least 1).
        timeout: seconds one task may run; then its worker is killed and replaced.
        initializer, initargs: run once in each new worker before its first task.
        context: a multiprocessing context (default: fork where available, else spawn).
        streaming: `fn` returns an iterator; each of its items is a result of its own (see `run`), and
            the time limit applies to each item.
    """

    def __init__(self, fn: Callable[[Any], Any], workers: int, timeout: float,
                 initializer: Callable[..., None] | None = None, initargs: tuple = (), context=None,
                 streaming: bool = False):
        if workers < 1:
            raise ValueError("TimedPool needs at least one worker")
        self.fn, self.workers, self.timeout = fn, workers, timeout
        self.initializer, self.initargs = initializer, initargs
        self.context = context or default_context()
        self.streaming = streaming
        self._pending: deque = deque()

    def _slot(self) -> _Slot:
        return _Slot(self.context, self.fn, self.initializer, self.initargs, self.streaming)

    def requeue(self, task: tuple[Hashable, Any]) -> None:
        """Run one more task (during `run`, from the loop that reads its results)."""
        self._pending.append(task)

    def run(self, tasks: Iterable[tuple[Hashable, Any]]) -> Iterator[tuple[Hashable, Any]]:
        """(key, result) as tasks finish, in any order; a failed task's result is a TaskFailure. Streaming:
        (key, item) for each item as it comes, and (key, TaskFailure) ends a task that failed part way.

        Raises:
            VidlabError: a worker could not start (its initializer raised).
        """
        pending = self._pending = deque(tasks)
        slots = [self._slot() for _ in range(min(self.workers, len(pending)))]
        self._failed_starts = 0
        try:
            while pending or any(slot.task is not None for slot in slots):
                for slot in slots:
                    if slot.ready and slot.task is None and pending:
                        slot.task = pending.popleft()
                        slot.started = time.monotonic()
                        slot.conn.send(slot.task)
                busy = [slot for slot in slots if slot.task is not None]
                deadline = min((slot.started + self.timeout for slot in busy), default=time.monotonic() + 1)
                waitables = [slot.conn for slot in slots] + [slot.process.sentinel for slot in slots]
                wait(waitables, timeout=max(0.0, deadline - time.monotonic()))
                for index, slot in enumerate(slots):
                    for outcome in self._poll(slot):
                        if outcome == "replace":
                            self._failed_starts += 1
                            if self._failed_starts > 3 * self.workers:
                                raise VidlabError(f"check workers keep dying before their first task (last: "
                                                  f"{_death(slot.process.exitcode)}); run with --workers 0 to see "
                                                  "why.")
                            slots[index] = self._slot()
                            break
                        yield outcome
                        if not slot.process.is_alive() and slot.task is None:
                            slots[index] = self._slot()
                            break
                if pending and len(slots) < self.workers:  # tasks requeued after the pool had shrunk to them
                    slots += [self._slot() for _ in range(min(self.workers - len(slots), len(pending)))]
        finally:
            for slot in slots:
                slot.stop(kill=slot.task is not None)

    def _poll(self, slot: _Slot) -> Iterator:
        """What happened to a slot since the last look: each (key, result) it sent, then "replace" (a dead idle
        worker) or the failure of the task it held (died, or past its time)."""
        while slot.conn.poll():
            try:
                key, payload = slot.conn.recv()
            except (EOFError, OSError):
                break
            if key == "init-error":
                raise VidlabError(f"a check worker could not start: {payload}")
            if key == "ready":
                slot.ready = True
                self._failed_starts = 0  # only workers that die before ever starting count as a broken setup
                continue
            status, value = payload
            if status == "part":
                slot.started = time.monotonic()  # each item has its own time
                yield key, value
                continue
            slot.task = None
            if status != "end":
                yield key, value if status == "ok" else TaskFailure("error", value)
        if not slot.process.is_alive():
            task, slot.task = slot.task, None
            slot.conn.close()
            if task is None:
                yield "replace"
                return
            yield task[0], TaskFailure("crashed", _death(slot.process.exitcode))
            return
        if slot.task is not None and time.monotonic() - slot.started > self.timeout:
            task, slot.task = slot.task, None
            slot.stop(kill=True)
            yield task[0], TaskFailure("timeout", f"still running after {self.timeout:g} s; its worker was stopped")
