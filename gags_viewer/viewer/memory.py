"""Giving memory back to the operating system when a browser leaves."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading

_trim_lock = threading.Lock()


def return_freed_memory() -> None:
    """Collect the departed browser's objects and return freed heap pages to the OS.

    Each render thread allocates its frames from its own glibc arena, and glibc keeps an arena's freed
    blocks for reuse: without a trim, the server's resident memory stays at its peak after browsers
    leave. A no-op where the C library has no ``malloc_trim`` (not glibc).
    """
    with _trim_lock:
        gc.collect()
        name = ctypes.util.find_library("c")
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError, TypeError):
            pass
