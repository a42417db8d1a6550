"""Allocator tuning for the serving process (glibc only; a no-op elsewhere).

Why: the hot paths of a serving archive allocate and free buffers of hundreds of KiB to a few MiB many times a
second (a 512 KiB CT object received over C-STORE, 4 MiB reads of whole-study retrieval). With glibc's defaults,
such blocks are either ``mmap``ed one by one or come from the top of the heap, which ``free`` then trims back to
the kernel; either way the next buffer is fresh memory, and the kernel zero-fills it one page fault at a time.
Measured on whole-study WADO-RS retrieval (a 105 MB study, ``benchmarks/dicomweb.py``, docs/benchmarks.md): the
server's system time per request halved and MB/s rose ~25 % once large blocks came from the heap and freed memory
stayed there for reuse.

The cost: up to ``TRIM_THRESHOLD`` of freed memory per malloc arena is kept by the process instead of being
returned to the kernel, which on an archive server (GiBs of RAM, a steady stream of similar-sized objects) is the
point.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

#: glibc ``mallopt`` parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Blocks below this come from the heap (glibc caps it at 32 MiB on 64-bit; above it the block is mmapped).
MMAP_THRESHOLD = 16 << 20
#: Free memory at the top of an arena kept for reuse instead of being trimmed.
TRIM_THRESHOLD = 64 << 20


def tune_allocator() -> bool:
    """Apply the thresholds above; returns whether glibc accepted them (False on other C libraries)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    log.debug("allocator thresholds %s", "applied" if ok else "refused")
    return ok
