"""Answering a request in the server's event loop, without a thread: what the application promises.

The server's worker (pypi.server.worker) may call the application from its
event loop for a GET or HEAD of ``/simple/...`` or ``/pypi/...`` (the JSON API)
that arrived whole on a kept-alive connection, with ``environ[ENVIRON_KEY]`` set,
when the database is on the same host (``Database.local``). The application then
answers only if the answer is cheap and cannot block: a page already rendered
for the serial it has just read (the database is still asked for the serial on
every request, so an upload is visible at once, in every process). Anything
else (a page to render, credentials to check, an upstream to ask, any view not
marked ``capable``) raises ``NeedsThread`` before a byte is written, and the
worker hands the same request to a thread as it does every other one.

No thread hand-off and no lock contention for the common request: one thread of
the process answers them one after the other, in the order they arrived, so a
request never waits for the GIL behind other threads (see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

#: The WSGI environ key the worker sets on a request it asks to be answered inline.
ENVIRON_KEY = "cloudpypi.inline"

V = TypeVar("V", bound=Callable)


class NeedsThread(Exception):
    """The request needs work the event loop must not do: answer it on a thread."""


def active(environ: dict) -> bool:
    """Whether this request is being answered in the event loop (only cheap answers allowed)."""
    return environ.get(ENVIRON_KEY, False) is True


def require_thread(environ: dict) -> None:
    """Raise NeedsThread if the request is being answered in the event loop."""
    if environ.get(ENVIRON_KEY, False) is True:
        raise NeedsThread


def capable(view: V) -> V:
    """Mark a view as able to answer inline (it raises NeedsThread itself when it cannot)."""
    view.inline_capable = True  # type: ignore[attr-defined]
    return view


def is_capable(view: Callable) -> bool:
    return getattr(view, "inline_capable", False) is True
