"""Chunks of CPU inference spread over the cores chunk by chunk (gags_viewer/language/cpu_chunks.py)."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from gags_viewer.language.cpu_chunks import map_chunks


@pytest.fixture
def two_threads():
    """torch uses two threads in this (the calling) thread, as on a 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _slow_square(seen: list):
    """fn(i) = i², taking a few ms, recording (thread, torch's thread count there)."""

    def fn(i: int) -> int:
        seen.append((threading.get_ident(), torch.get_num_threads()))
        time.sleep(0.005)
        return i * i

    return fn


def test_results_come_in_index_order_from_one_single_threaded_worker_per_core(two_threads):
    seen: list = []
    assert map_chunks(_slow_square(seen), 40, "cpu") == [i * i for i in range(40)]
    assert len({thread for thread, _ in seen}) == 2  # the calling thread and a helper both took chunks
    assert {threads for _, threads in seen} == {1}  # each worker's own operations are single-threaded
    assert torch.get_num_threads() == 2  # the caller's setting is back


@pytest.mark.parametrize("count", [0, 1])
def test_nothing_or_one_chunk_runs_on_the_calling_thread(two_threads, count):
    seen: list = []
    assert map_chunks(_slow_square(seen), count, "cpu") == [i * i for i in range(count)]
    assert all(thread == threading.get_ident() for thread, _ in seen)


def test_a_gpu_queues_its_own_work_so_chunks_run_in_order_on_the_calling_thread(two_threads):
    seen: list = []
    order: list[int] = []
    square = _slow_square(seen)
    assert map_chunks(lambda i: order.append(i) or square(i), 6, torch.device("cuda")) == [i * i for i in range(6)]
    assert order == list(range(6)) and {thread for thread, _ in seen} == {threading.get_ident()}
    assert {threads for _, threads in seen} == {2}


@pytest.mark.parametrize("failing_thread", ["caller", "helper"])
def test_an_error_in_any_worker_is_raised_and_stops_the_others(two_threads, failing_thread):
    """An exception (as the viewer's 'frame abandoned' one, raised in the calling thread) reaches the
    caller, and no worker takes a chunk after it; the caller's thread count is restored."""
    caller = threading.get_ident()
    started: list[int] = []
    lock = threading.Lock()

    def fn(i: int) -> int:
        with lock:
            started.append(i)
            fails = len(started) >= 4 and (threading.get_ident() == caller) == (failing_thread == "caller")
        if fails:
            raise KeyError(i)
        time.sleep(0.005)
        return i

    with pytest.raises(KeyError):
        map_chunks(fn, 200, "cpu")
    time.sleep(0.05)  # a helper still in a chunk would have taken the next by now
    assert len(started) < 20
    assert torch.get_num_threads() == 2


def test_concurrent_callers_each_get_their_own_results(two_threads):
    """Two render threads (two browsers) sharing the helpers."""
    results: dict[int, list[int]] = {}

    def call(offset: int) -> None:
        torch.set_num_threads(2)
        results[offset] = map_chunks(lambda i: time.sleep(0.002) or i + offset, 30, "cpu")

    threads = [threading.Thread(target=call, args=(offset,)) for offset in (0, 1000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == {offset: [i + offset for i in range(30)] for offset in (0, 1000)}
