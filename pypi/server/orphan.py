"""A child process that stops when the process that started it dies, even by SIGKILL.

The gunicorn master runs the purge worker as a child (pypi.server.purge_process)
and stops it on every orderly exit; a master killed with SIGKILL runs no exit
hook, and without this the purge worker would be left running (and holding
its database connections). On Linux the kernel sends SIGTERM the moment the
parent dies (``prctl(PR_SET_PDEATHSIG)``); everywhere, a thread also polls
the parent's pid (it catches a parent that died before the prctl, and systems
without prctl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

log = logging.getLogger("cloudpypi")

#: From linux/prctl.h.
PR_SET_PDEATHSIG = 1
#: Seconds between two looks at the parent's pid.
POLL_INTERVAL = 1.0


def _set_pdeathsig(signum: int) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent dies; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def watch_parent(
    parent_pid: int, on_orphaned: Callable[[], None], *, interval: float = POLL_INTERVAL
) -> threading.Thread:
    """Call ``on_orphaned`` (once, from a daemon thread) when ``parent_pid`` is no longer
    this process's parent; on Linux also have SIGTERM sent at the parent's death (so
    the process's SIGTERM handler must stop it, as ``on_orphaned`` does).

    Returns the watching thread (already started).
    """
    _set_pdeathsig(signal.SIGTERM)

    def watch() -> None:
        stopped = threading.Event()
        while os.getppid() == parent_pid:
            stopped.wait(interval)
        log.warning("parent process %d is gone: stopping", parent_pid)
        on_orphaned()

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread
