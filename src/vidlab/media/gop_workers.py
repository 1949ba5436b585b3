"""Where a long video's runs of keyframe groups (decode.gop_spans) are decoded at once: the calling thread
takes the first run, worker processes the others, all writing into one shared array.

Processes, not threads: PyAV releases the interpreter lock while it decodes, but takes it again several
times a frame, and on a busy machine a thread preempted while holding it stalls the other one (measured on
2 shared cores, the hour-long benchmark file: two threads 1.0-2.2x the speed of one stream, two processes
1.9-9x). The workers are fresh interpreters (running `_serve`), started on the first
long video and kept, idle, for the next ones until the calling process ends. The frames go into a file in
/dev/shm mapped by the caller and the workers (unlinked once they are done): no frame is copied or
pickled. Where no process may be started (a daemonic process, such as a DataLoader worker; /dev/shm full
or missing), threads decode the runs instead.
"""

from __future__ import annotations

import atexit
import mmap
import multiprocessing
import os
import pickle
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

_SHARED_FOLDER = Path("/dev/shm")
_WORKER_MAIN = "from vidlab.media.gop_workers import _serve; _serve()"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and `taskset` narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def processes_allowed() -> bool:
    """Whether this process may start decoding processes (a daemonic one, e.g. a DataLoader worker, may not)."""
    return not multiprocessing.current_process().daemon and _SHARED_FOLDER.is_dir()


def shared_frames(shape: tuple[int, ...]) -> tuple[np.ndarray, str] | None:
    """A uint8 array of `shape` in shared memory, and the name other processes map it by; None when /dev/shm
    has no room for it."""
    size = int(np.prod(shape))
    try:
        fd, name = tempfile.mkstemp(prefix="vidlab-frames-", dir=_SHARED_FOLDER)
    except OSError:
        return None
    try:
        os.posix_fallocate(fd, 0, size)  # the room is taken now: a full /dev/shm is a fallback, not a crash later
        mapping = mmap.mmap(fd, size)
    except OSError:
        os.unlink(name)
        return None
    finally:
        os.close(fd)
    return np.frombuffer(mapping, np.uint8).reshape(shape), name  # the array keeps the mapping alive


class _Worker:
    """One decoding process, fed pickled spans on its stdin, answering on its stdout.

    Hand-written rather than multiprocessing's pool: that pool's workers (spawn, forkserver) first run the
    caller's main script again, which a script without an `if __name__ == "__main__"` guard would not survive,
    and forking the caller copies its threads mid-work.
    """

    def __init__(self):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if isinstance(p, str))}
        self.process = subprocess.Popen([sys.executable, "-c", _WORKER_MAIN], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env)

    def send(self, *args) -> None:
        pickle.dump(args, self.process.stdin, pickle.HIGHEST_PROTOCOL)
        self.process.stdin.flush()

    def receive(self):
        ok, value = pickle.load(self.process.stdout)
        if not ok:
            raise value
        return value

    def close(self, wait: bool = True) -> None:
        """Ends the worker once it has finished what it was sent."""
        try:
            self.process.stdin.close()
        except OSError:
            pass
        if wait:
            self.process.wait()


_idle: list[_Worker] = []  # started, waiting for the next video
_idle_lock = threading.Lock()


def _take_workers(count: int) -> list[_Worker]:
    with _idle_lock:
        taken = [worker for worker in _idle[:count] if worker.process.poll() is None]
        del _idle[:count]
    return taken + [_Worker() for _ in range(count - len(taken))]


def _give_back(workers: list[_Worker]) -> None:
    with _idle_lock:
        _idle.extend(workers)


@atexit.register
def _stop_workers() -> None:
    with _idle_lock:
        workers, _idle[:] = list(_idle), []
    for worker in workers:
        worker.close()


def _decode_in_worker(job, name: str, shape: tuple[int, ...], first: int, stop: int):
    """In a worker process: decode job's picks order[first:stop] into the shared array `name`."""
    with open(name, "r+b") as file:
        mapping = mmap.mmap(file.fileno(), 0)
    part = replace(job, buffer=np.frombuffer(mapping, np.uint8).reshape(shape)).open_and_decode(first, stop)
    part.buffer = None  # the frames are in the shared array; only the rows and counts go back
    return part


def _serve() -> None:
    """A worker's loop: one span in, its rows and counts out, until its stdin closes."""
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the answers
    requests = sys.stdin.buffer
    while True:
        try:
            args = pickle.load(requests)
        except EOFError:
            return
        try:
            answer = (True, _decode_in_worker(*args))
        except Exception as err:  # the caller raises it (a VidlabError naming the file, or FFmpeg's own)
            answer = (False, err)
        try:
            data = pickle.dumps(answer, pickle.HIGHEST_PROTOCOL)
            pickle.loads(data)  # an error that cannot be rebuilt on the other side goes as its text
        except Exception:
            data = pickle.dumps((False, RuntimeError(f"{type(answer[1]).__name__}: {answer[1]}")))
        answers.write(data)
        answers.flush()


def _in_threads(job, spans: list[tuple[int, int]], container, stream):
    # PyAV decodes, converts and reads packets with the interpreter lock released.
    with ThreadPoolExecutor(len(spans) - 1, thread_name_prefix="vidlab-gop") as threads:
        later = [threads.submit(job.open_and_decode, *span) for span in spans[1:]]
        return [job.decode(container, stream, *spans[0]), *(future.result() for future in later)]


def decode_spans(job, spans: list[tuple[int, int]], container, stream, backend: str = "auto"):
    """Each span of job's picks decoded into job.buffer: the first on `container` in this thread, the others in
    worker processes (backend "auto", where allowed) or threads ("threads"). Returns (the spans' Decoded, in
    order; the output array, which is job.buffer or its shared copy; how they ran: "processes" or "threads")."""
    shared = shared_frames(job.buffer.shape) if backend == "auto" and processes_allowed() else None
    workers: list[_Worker] = []
    if shared is not None:
        try:
            workers = _take_workers(len(spans) - 1)
        except OSError:  # no interpreter to start (an embedded Python)
            os.unlink(shared[1])
            shared = None
    if shared is None:
        return _in_threads(job, spans, container, stream), job.buffer, "threads"
    buffer, name = shared
    job = replace(job, buffer=buffer)
    answered: list[_Worker] = []
    try:
        sent, lost = replace(job, buffer=None), set()
        for worker, span in zip(workers, spans[1:]):
            try:
                worker.send(sent, name, buffer.shape, *span)
            except OSError:  # it died while idle
                lost.add(span)
        parts = [job.decode(container, stream, *spans[0])]
        errors = []
        for worker, span in zip(workers, spans[1:]):
            try:
                if span in lost:
                    raise EOFError
                parts.append(worker.receive())
            except (EOFError, OSError, pickle.UnpicklingError):  # the worker died (a decoder crash): that run
                parts.append(job.open_and_decode(*span))  # again here, as one stream would have decoded it
                continue
            except Exception as err:  # raised in the worker: raised here once every worker has answered
                errors.append(err)
            answered.append(worker)
        if errors:
            raise errors[0]
    finally:
        os.unlink(name)  # the mapping stays; the memory goes with the array
        _give_back(answered)
        for worker in workers:
            if worker not in answered:
                worker.close(wait=False)
    return parts, buffer, "processes"
