"""Giving freed heap memory back to the operating system (glibc's ``malloc_trim``).

glibc keeps the pages that ``free()`` returns inside the allocating thread's arena; a
process that once allocated a lot (a model built and saved, a large request) then holds
that memory for good, and another thread does not reuse it. ``malloc_trim(0)`` releases
the free pages of every arena. The pipeline's executors call :func:`release_freed_memory`
after each step; the server trims after large requests (``serving.limits``). Elsewhere
than glibc there is nothing to trim.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable


@functools.cache
def malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim(pad)``, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
    return trim


def release_freed_memory() -> None:
    """Collects garbage, then returns the freed heap pages to the OS.

    For the end of a pipeline step: the MobileNet export frees about 160 MB that the next
    step of a local run would not reuse, so without this a run's peak RSS grows by what
    each step freed (``bench/pipeline_bench.py`` measures the peak).
    """
    gc.collect()
    trim = malloc_trim()
    if trim is not None:
        trim(0)
