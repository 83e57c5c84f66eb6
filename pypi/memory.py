"""Keeps a long-running server's memory flat under glibc's allocator.

Two glibc defaults let a threaded upload server grow far beyond what it holds:
every new thread (waitress's, the hashing and S3 transfer threads) may get a
malloc arena of its own, each keeping freed memory; and after the first large
buffer is freed the mmap threshold rises up to 32 MiB, so the 1 MiB chunks an
upload is read in come from those arenas and stay there. Capping the arenas and
fixing the threshold makes large buffers go back to the system when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

#: mallopt parameters, from glibc's malloc.h.
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

ARENA_MAX = 2
MMAP_THRESHOLD = 256 * 1024


def tune_malloc(arena_max: int = ARENA_MAX, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Apply the settings above; False (and nothing changed) where the C library is not glibc.

    Call it before the server starts its threads: arenas already made are kept.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_ARENA_MAX, arena_max)) and bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold))
    if not ok:
        log.debug("mallopt refused the settings; the allocator keeps its defaults")
    return ok
