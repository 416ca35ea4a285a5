"""Keep freed memory in the process instead of handing it back to the kernel after each range.

A range allocates buffers of tens of MB (the ranged GET, its records, numpy temporaries,
Arrow columns, the Parquet pages) and frees them at the end. By default glibc serves
allocations over 32 MB (and, after trimming, much smaller ones) with fresh ``mmap`` pages and
Arrow's mimalloc gives pages back soon after they are freed: the next range then pays a
page fault and the zeroing of every 4 KiB page again. Measured on the benchmark's 33.6 MB
range: 1,334 minor page faults per MB of input, against 558 with freed memory kept, and
29.5 against 23.1 ms of CPU per MB (``loadtests/profile_range.py --stages``, same half hour).

:func:`retain_freed_memory` turns off ``mmap`` for glibc allocations and its trimming, and
sends Arrow's allocations to the system allocator, for the rest of the process. The cost is
that a worker process keeps its peak heap (a few hundred MB with 32 MiB ranges) for its
lifetime instead of shrinking between ranges. It does nothing off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading

__all__ = ["retain_freed_memory"]

log = logging.getLogger(__name__)
M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_MAX = -4
_lock = threading.Lock()
_done = False


def retain_freed_memory() -> bool:
    """Apply the allocator settings once per process; True if they are in effect."""
    global _done
    with _lock:
        if _done:
            return True
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            return False  # not glibc: leave the allocator alone
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        if not (mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, 2**31 - 1)):
            return False
        import pyarrow as pa

        # Arrow's own pool (mimalloc) returns freed pages on its own schedule; glibc, set as
        # above, keeps them.
        pa.set_memory_pool(pa.system_memory_pool())
        _done = True
        log.info("allocator keeps freed memory (no mmap, no trim; Arrow on the system pool)")
        return True
