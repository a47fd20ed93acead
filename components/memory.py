"""Gives the memory a step has freed back to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Collects the step's garbage and returns the freed heap pages to the OS.

    Building and saving a model frees most of what it allocated, but glibc keeps the
    freed pages in the allocating thread's arena, and the next step of a local run does
    not reuse them: without this the run's peak RSS grows by about what each step freed
    (the MobileNet export frees about 160 MB; bench/pipeline_bench.py measures the peak).
    Where the C library is not glibc this only collects.
    """
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
