"""Keeps a long-running server's memory flat under glibc's allocator.

Two glibc behaviours let a threaded upload server grow far beyond what it holds:
every new thread (the server's, the hashing and S3 transfer threads) may get a
malloc arena of its own, each keeping the memory freed in it; and after the
first large buffer is freed the mmap threshold rises (up to 32 MiB), so the
1 MiB blocks an upload is read in come from those arenas and stay there.
The arenas are capped at start, and what an upload freed is given back to the
system after it. (A fixed mmap threshold would do the latter too, but then
every block the server sends a file in is a fresh mmap: downloads ran at half
speed.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import sys
from typing import Any

log = logging.getLogger(__name__)

#: mallopt's parameter, from glibc's malloc.h.
M_ARENA_MAX = -8
ARENA_MAX = 2


@functools.lru_cache(maxsize=1)
def _libc() -> Any | None:
    """glibc, or None where the C library is another (macOS, musl's lacks malloc_trim)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def tune_malloc(arena_max: int = ARENA_MAX) -> bool:
    """Cap glibc's arenas; False (nothing changed) elsewhere. Call before the server's threads start."""
    libc = _libc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(M_ARENA_MAX, arena_max))
    if not ok:
        log.debug("mallopt refused M_ARENA_MAX; the allocator keeps its default")
    return ok


def release_free_memory() -> bool:
    """Give memory freed inside the heap back to the system (glibc's malloc_trim)."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def freeze_startup_objects() -> int:
    """Move every object alive now (modules, the application, its caches' shells) to the
    collector's permanent generation; the number moved.

    A full collection walks every tracked object: in a worker with the application
    loaded that is some 50 ms during which no thread of the process runs, and
    it would come back every few thousand requests. What exists when the
    application is ready lives as long as the process, so the collector need
    not look at it again (``gc.freeze``, as Instagram's and gunicorn users' servers do).
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
