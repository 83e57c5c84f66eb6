"""One ``cloudpypi purge-worker`` process per host, kept by the gunicorn master.

The master starts it when it is ready (``when_ready``), starts another if it
exits, restarts it on SIGHUP (``on_reload``, so it reads the new settings)
and stops it on exit (``on_exit``). Workers never run a purge worker of their
own: the purges of every worker's uploads are sent by this one process. A
worker wakes it after each commit through a pipe the master opens before the
workers fork (one byte, never blocking); changes made elsewhere are found
within ``[cdn] purge_poll_interval`` (1 s). A master killed outright (SIGKILL,
no exit hook) takes its purge worker with it: the purge worker is told the
master's pid and stops when it loses that parent (pypi.server.orphan).

``hooks(config_path)`` gives these gunicorn server hooks; ``cloudpypi serve``
and ``pypi.server.gunicorn_conf`` install them.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from typing import Any

from cdn.purge import PurgerMisconfigured, flag
from pypi.config import Config, ConfigError

log = logging.getLogger("cloudpypi")

#: Set in a process whose gunicorn master keeps a purge worker (and inherited by its workers).
MANAGED = False
#: The write end of the master's wake-up pipe, inherited by the workers (None: no purge worker).
WAKE_FD: int | None = None
#: Seconds to wait before starting again a purge worker that exited.
RESTART_DELAY = 1.0


def wanted(config: Config) -> bool:
    """Whether ``serve`` runs the purge worker (``[cdn] purge_thread``, default true)."""
    try:
        return flag(config.cdn.options, "purge_thread", True)
    except PurgerMisconfigured as exc:
        raise ConfigError(str(exc)) from None


class PurgeProcess:
    """``python -m pypi.cli purge-worker [--config PATH]`` as a child of the current process."""

    def __init__(self, config_path: str | None, wake_fd: int | None = None) -> None:
        self.config_path = config_path
        self.wake_fd = wake_fd
        self.proc: subprocess.Popen | None = None
        self._exited_at = 0.0

    def command(self) -> list[str]:
        args = [sys.executable, "-m", "pypi.cli", "purge-worker", "--parent-pid", str(os.getpid())]
        if self.wake_fd is not None:
            args += ["--wake-fd", str(self.wake_fd)]
        return args + (["--config", self.config_path] if self.config_path else [])

    def start(self) -> None:
        fds = () if self.wake_fd is None else (self.wake_fd,)
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, pass_fds=fds)
        log.info("purge worker: process %d", self.proc.pid)

    def check(self) -> None:
        """Start another purge worker if this one exited (called from the master's loop)."""
        if self.proc is None or self.proc.poll() is None:
            return
        now = time.monotonic()
        if not self._exited_at:
            # The master may have reaped it (its waitpid(-1)): the code is then unknown.
            code = self.proc.returncode
            log.error("purge worker %d exited (code %s); starting another", self.proc.pid, code)
            self._exited_at = now
        if now - self._exited_at >= RESTART_DELAY:  # one that dies at once must not spin
            self._exited_at = 0.0
            self.start()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM: it finishes the send in progress and exits."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        except ChildProcessError:  # reaped by the master's own waitpid
            pass

    def restart(self) -> None:
        self.stop()
        self.start()


def wake() -> None:
    """Tell the purge worker that a commit queued purges (a worker's ``after_commit``). Never raises."""
    if WAKE_FD is not None:
        try:
            os.write(WAKE_FD, b"\0")
        except OSError:  # full (it is busy or restarting: it polls anyway) or closed
            pass


def hooks(config_path: str | None, enabled: bool) -> dict[str, Any]:
    """gunicorn settings (server hooks) that keep one purge worker beside the workers."""
    global MANAGED
    MANAGED = True
    if not enabled:
        return {}
    purger = PurgeProcess(config_path)

    def when_ready(server: Any) -> None:
        global WAKE_FD
        purger.wake_fd, WAKE_FD = os.pipe()
        os.set_blocking(WAKE_FD, False)
        purger.start()
        manage_workers = server.manage_workers

        def manage_workers_and_purger() -> None:
            manage_workers()
            if server.pid == os.getpid():
                purger.check()

        server.manage_workers = manage_workers_and_purger

    def on_reload(server: Any) -> None:
        purger.restart()

    def on_exit(server: Any) -> None:
        purger.stop()

    return {"when_ready": when_ready, "on_reload": on_reload, "on_exit": on_exit}
