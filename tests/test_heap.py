"""tfserving.heap: the heap pages a step freed go back to the OS (real RSS, glibc)."""

from __future__ import annotations

import pytest

from tfserving import heap


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_freed_heap_pages_are_returned():
    if heap.malloc_trim() is None:
        pytest.skip("the C library is not glibc: nothing to trim")
    # 200 MB in malloc'd blocks (above pymalloc's 512 bytes), every 50th kept alive, so
    # the freed pages lie between live blocks where free() itself does not return them.
    blocks = [bytes(1000) + bytes([i % 251]) for i in range(200_000)]
    kept = blocks[::50]
    del blocks
    before = _rss_mb()
    heap.release_freed_memory()
    after = _rss_mb()
    assert len(kept) == 4_000
    assert before - after > 100, (before, after)
