"""``cloudpypi serve`` as a gunicorn application (gunicorn's master, gthread workers).

The master opens the socket and keeps ``[server] workers`` processes, each
with ``[server] threads`` threads (pypi.server.worker), and one purge worker
process (pypi.server.purge_process). Each worker builds its own application
after the fork, reading the settings again: SIGHUP starts new workers on the
current settings and stops the old ones gracefully. SIGTERM stops gracefully:
no new connections, the requests in flight (an upload still arriving) are
finished for up to ``[server] graceful_timeout`` seconds; SIGINT and SIGQUIT
stop at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication

from pypi.config import Config

WSGIApp = Callable[..., Any]
WORKER_CLASS = "pypi.server.worker.Worker"


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def gunicorn_settings(
    config: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """gunicorn's settings for ``config`` (the arguments override ``[server]``)."""
    srv = config.server
    return {
        "bind": [bind_address(host or srv.host, srv.port if port is None else port)],
        "workers": workers or srv.workers,
        "threads": threads or srv.threads,
        "worker_class": WORKER_CLASS,
        "graceful_timeout": srv.graceful_timeout,
        "keepalive": srv.keepalive,
        # gunicorn believes X-Forwarded-Proto & co. from these peers only (its default trusts
        # 127.0.0.1): the same proxies the application trusts (pypi.proxies), none by default.
        "forwarded_allow_ips": ",".join(srv.trusted_proxies),
        "proc_name": "cloudpypi",
        "errorlog": "-",
        # gunicorn 24+'s control socket, one path per user: two indexes would fight over it.
        "control_socket_disable": True,
    }


class Server(BaseApplication):
    """A gunicorn application from settings and a function that builds the WSGI app (in each worker)."""

    def __init__(self, settings: dict[str, Any], build: Callable[[], WSGIApp]) -> None:
        self.settings = settings
        self.build = build
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.settings.items():
            if key in self.cfg.settings:  # settings of newer gunicorns are skipped by older ones
                self.cfg.set(key, value)

    def load(self) -> WSGIApp:
        return self.build()
