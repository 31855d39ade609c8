"""Keeping freed memory in the process during the networks' passes (glibc's malloc).

A full-size forward and backward pass allocates and frees activations of hundreds of MB.
glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh ``mmap``
and unmaps it when freed, so each pass faults in zeroed pages from the kernel again, for
every activation of every fold model: on two cores a large share of the model step went to
those page faults (docs/benchmarks.md). PyTorch's CPU allocator does not cache memory (its
CUDA one does), and jemalloc or tcmalloc would have to be preloaded before Python starts,
which a pip install cannot arrange. So within :func:`retained_heap` glibc serves large
allocations from the heap and keeps freed memory there (``mallopt``), and afterwards its
defaults come back and the heap's free memory goes back to the kernel (``malloc_trim``).
The setting is the process's: threads running beside the block (the participant level's
scheduler) allocate the same way meanwhile; processes forked meanwhile inherit it. Outside
glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# mallopt parameters and glibc's defaults for them (malloc.h, mallopt(3))
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536

_lock = threading.Lock()
_depth = 0


def _glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (it has ``mallopt`` and ``malloc_trim``)."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (glibc only)
        libc.mallopt, libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


@contextmanager
def retained_heap() -> Iterator[bool]:
    """Within the block, freed memory stays in the process for the next allocations; yields
    whether that holds (False outside glibc). Nested blocks restore glibc's defaults only when
    the outermost ends.

    glibc stops adjusting its mmap threshold once these parameters are set (mallopt(3)), so
    after the block the threshold stays where it was.
    """
    global _depth
    libc = _glibc()
    if libc is None:
        yield False
        return
    with _lock:
        if _depth == 0:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, -1)  # (as size_t: never trim)
        _depth += 1
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)
