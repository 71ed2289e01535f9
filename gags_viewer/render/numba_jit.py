"""numba compilation with an on-disk cache that degrades to compiling in memory (shared by the CPU
rasterizer's kernel modules, :mod:`.numba_kernels` and :mod:`.numba_composite`).

numba's cache notices changes only to the file that holds a compiled function: the kernel modules
therefore never call compiled code, nor read constants, of another module from inside a kernel.
"""

from __future__ import annotations

import warnings

import numba


class CachedKernel:
    """A numba dispatcher compiled with ``cache=True`` that degrades to an in-memory compile.

    numba raises RuntimeError at decoration time when no cache directory is usable, and OSError at the
    first call when the directory it picked cannot be written any more; both fall back (once) to
    ``cache=False`` with a warning instead of breaking rendering.
    """

    def __init__(self, py_func, options):
        self._py_func = py_func
        self._options = options
        self._cached = True
        try:
            self._dispatcher = numba.njit(cache=True, **options)(py_func)
        except RuntimeError as exc:
            self._fall_back(exc)
        self.__name__ = py_func.__name__
        self.__doc__ = py_func.__doc__

    def _fall_back(self, exc: Exception) -> None:
        warnings.warn(
            f"numba cannot cache the render kernel {self._py_func.__name__} ({exc}); it is compiled in "
            "memory instead (a few seconds at each start). Set NUMBA_CACHE_DIR to a writable directory "
            "to keep compiled kernels.",
            RuntimeWarning,
            stacklevel=3,
        )
        self._cached = False
        self._dispatcher = numba.njit(cache=False, **self._options)(self._py_func)

    def __call__(self, *args):
        try:
            return self._dispatcher(*args)
        except OSError as exc:  # the kernels do no I/O: this comes from writing or reading the cache
            if not self._cached:
                raise
            self._fall_back(exc)
            return self._dispatcher(*args)


def kernel(**options):
    def wrap(py_func):
        return CachedKernel(py_func, options)

    return wrap
