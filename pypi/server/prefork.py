"""Runs a WSGI application under waitress in one or several processes sharing one socket.

Waitress is a threaded server: one process uses about one core. With
``workers > 1`` the listening socket is opened once and each forked worker
serves it with its own threads, database connections and purge worker, so
every core answers. Nothing is shared between workers but the socket: page
caches are keyed by the database's serial, so they all answer the same.
A worker that dies is replaced; SIGTERM or SIGINT stops them all.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("cloudpypi")

WSGIApp = Callable[..., Any]


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket (IPv6 when ``host`` is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=backlog)


def _serve(build: Callable[[], WSGIApp], sock: socket.socket, options: dict) -> None:
    import waitress

    waitress.serve(build(), sockets=[sock], **options)


def run(build: Callable[[], WSGIApp], *, host: str, port: int, workers: int, **options: Any) -> int:
    """Serve until stopped. ``build`` makes the application (called in each worker, after fork).

    ``options`` are waitress settings (threads, max_request_body_size, ...).
    """
    sock = listen(host, port)
    if workers <= 1:
        _serve(build, sock, options)
        return 0
    children: dict[int, float] = {}
    stopping = False

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 0
            try:
                _serve(build, sock, options)
            except BaseException:
                log.exception("worker %d failed", os.getpid())
                code = 1
            finally:
                os._exit(code)
        children[pid] = time.monotonic()

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(workers):
        spawn()
    log.info("%d worker processes: %s", workers, ", ".join(map(str, children)))
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        started = children.pop(pid, None)
        if stopping or started is None:
            continue
        log.error("worker %d exited (status %d); starting another", pid, status)
        if time.monotonic() - started < 1:
            time.sleep(1)  # a worker that dies at once must not spin the CPU
        spawn()
    sock.close()
    return 0
