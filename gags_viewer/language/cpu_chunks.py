"""Independent chunks of CPU inference spread over the cores chunk by chunk, not operation by operation.

torch parallelises each operation over its OpenMP threads, and every operation ends at a barrier where
the threads wait for the slowest. When the cores are shared (the browser, a JPEG encode, the numba
renderer's threads), a thread preempted for a few milliseconds leaves the other cores idle at that
barrier: in the viewer, a pixel-mode decode on 2 cores spent ~15 % of its wall time with a core idle
while a browser took ~20 % of one. :func:`map_chunks` instead runs one single-threaded worker per core,
each taking the next chunk when it is done with one, so a preempted worker only does fewer chunks.

The calling thread is one of the workers (it also takes chunks), so an exception raised in it, such as
the viewer's "frame abandoned" interruption, stops the work at once; the helper threads finish the chunk
they are on and take no other.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

import torch

T = TypeVar("T")


class _Job(Generic[T]):
    """``fn(0) … fn(count - 1)``, each index taken by whichever worker is free first."""

    def __init__(self, fn: Callable[[int], T], count: int):
        self.fn, self.count = fn, count
        self.results: list[T | None] = [None] * count
        self.error: BaseException | None = None
        self.cancelled = False
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._next = 0
        self._finished = 0

    def _take(self) -> int | None:
        with self._lock:
            if self.cancelled or self._next >= self.count:
                return None
            self._next += 1
            return self._next - 1

    def work(self) -> None:
        """Take and compute indices until none is left or the job is cancelled."""
        while (index := self._take()) is not None:
            try:
                self.results[index] = self.fn(index)
            except BaseException as error:  # noqa: BLE001 - handed to the caller, which re-raises it
                with self._lock:
                    self.error = self.error or error
                    self.cancelled = True
                self.done.set()
                return
            with self._lock:
                self._finished += 1
                if self._finished == self.count:
                    self.done.set()


class _Helpers:
    """Daemon threads that run :meth:`_Job.work` for jobs put on a queue, each single-threaded in torch."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._count = 0
        self._lock = threading.Lock()

    def ensure(self, count: int) -> None:
        """Start helper threads until there are ``count``."""
        with self._lock:
            while self._count < count:
                self._count += 1
                threading.Thread(target=self._run, name=f"gags-cpu-chunks-{self._count}", daemon=True).start()

    def offer(self, job: _Job, helpers: int) -> None:
        """Let up to ``helpers`` helper threads join ``job``."""
        for _ in range(helpers):
            self._jobs.put(job)

    def _run(self) -> None:
        torch.set_num_threads(1)
        while True:
            self._jobs.get().work()


_HELPERS = _Helpers()


def map_chunks(fn: Callable[[int], T], count: int, device: torch.device | str) -> list[T]:
    """``[fn(0), …, fn(count - 1)]``, computed on as many cores as torch uses in this thread, one
    single-threaded worker per core (the calling thread is one), when ``device`` is a CPU; in order on
    this thread otherwise (a GPU queues its own work). ``fn`` must be safe to call from several threads
    at once: chunks that write, write disjoint places.

    Raises:
        Whatever ``fn`` raised first; the workers stop taking chunks after it.
    """
    workers = torch.get_num_threads() if torch.device(device).type == "cpu" else 1
    if workers <= 1 or count <= 1:
        return [fn(i) for i in range(count)]
    job = _Job(fn, count)
    helpers = min(workers, count) - 1
    _HELPERS.ensure(helpers)
    _HELPERS.offer(job, helpers)
    torch.set_num_threads(1)  # for this thread only; restored below with no Python call in between
    try:
        job.work()
        job.done.wait()
    finally:
        torch.set_num_threads(workers)
        job.cancelled = True  # when this thread was interrupted: the helpers stop after their current chunk
    if job.error is not None:
        raise job.error
    return job.results  # type: ignore[return-value]  # every index was computed
