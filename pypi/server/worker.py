"""The gunicorn worker ``cloudpypi serve`` runs: gunicorn's gthread worker with these changes.

- ``Expect: 100-continue`` is answered when the application first reads the
  body, not before it runs (gunicorn answers at once): an upload without valid
  credentials gets its 401/403 before the client sends a byte of the body, and
  the connection is then closed instead of drained, its answer saying
  ``Connection: close`` (pypi.server.response).
- Errors gunicorn writes itself (400 on a bad request line, 414, 431, 500, ...)
  are plain text marked ``Cache-Control: private, no-store``, like every error
  the application makes, so no shared cache keeps them.
- A thread that answered a keep-alive request waits briefly (KEEP_LINGER) for
  that connection's next request and answers it too, instead of handing the
  connection back to the main thread's poller after every response (two thread
  hand-offs, each a GIL wait, and four system calls a request); it gives way as
  soon as another connection of the worker waits for a thread.
- The head of a response goes out in the same write as its first body bytes
  (pypi.server.response).
- With an application that offers it (``answers_inline``, pypi.inline), a
  kept-alive connection's next request for a page under ``/simple/`` or the JSON
  API is answered by the main thread itself when it becomes readable, if the page
  is already rendered for the current serial: no thread hand-off, no GIL hand-off,
  requests answered in the order they arrived. What the socket does not take at
  once of such an answer (a large page) the loop sends as the client reads it, as
  nginx does; a client that reads none of it for LOOP_WRITE_STALL seconds has a
  thread send the rest. Everything else (a page to render, an upload, a download,
  a slow client's partial head) goes to a thread as before (pypi.server.inline_io).

(``X-Forwarded-*`` and ``Forwarded`` from a peer that is not one of
``[server] trusted_proxies`` are removed by the application itself,
pypi.proxies, whatever server runs it.)

A request waits at most READ_TIMEOUT seconds for the client's next bytes.
glibc's arenas are capped in each worker before its threads start, and what
the application built at start is moved out of the garbage collector's way
once it is loaded (pypi.server.memory).
"""

from __future__ import annotations

import contextlib
import functools
import select
import selectors
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from gunicorn import util
from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import ThreadWorker

from pypi import inline
from pypi.server import inline_io, response
from pypi.server.memory import freeze_startup_objects, tune_malloc

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: Seconds a request may wait for the client's next bytes (waitress's channel_timeout was 120 s):
#: a client that stops sending mid-upload frees its thread instead of holding it for ever.
READ_TIMEOUT = 120.0
#: Seconds the event loop waits for a client to read more of an answer it is sending before
#: a thread takes the rest over (and waits for that client up to READ_TIMEOUT).
LOOP_WRITE_STALL = 1.0
#: Seconds a thread waits for the next request on the connection it just answered before
#: handing the connection back to the worker's poller (see Worker._next_request_arrives).
KEEP_LINGER = 0.05
#: While lingering, how often a thread looks whether another connection waits for it.
LINGER_SLICE = 0.005
#: A worker holding connections lets a less busy worker take a new one first: it waits this
#: long per connection it holds (at most ACCEPT_WAIT_MAX) before accepting. All workers wake
#: for a new connection and the first to call accept() gets it, so without this a client
#: opening its pool of connections at once could put most of them on one worker (14 of 16
#: was seen), which then answers them all on one core while the other idles.
ACCEPT_WAIT = 0.0002
ACCEPT_WAIT_MAX = 0.002
#: A wait older than this does not count for the connection waiting now (it waits again).
ACCEPT_WAIT_STALE = 1.0


def _readable_within(fd: int) -> Callable[[float], bool]:
    """A function telling whether ``fd`` has data (or end of file) within so many seconds
    (poll: no limit on the descriptor's number, as select's 1024)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return lambda seconds: bool(poller.poll(seconds * 1000))
    return lambda seconds: bool(select.select([fd], [], [], seconds)[0])


def write_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's ``util.write_error``, as plain text and private (never cached)."""
    body = f"{status_int} {reason}\n{mesg}\n" if mesg else f"{status_int} {reason}\n"
    data = body.encode("utf-8", "replace")
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Cache-Control: private, no-store\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode("latin-1")
    util.write_nonblock(sock, head + data)


class _Expect:
    """One request's pending ``100 Continue``: sent on the first read, unless the answer started."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.sent = False
        self.answered = False

    def send(self) -> None:
        if not self.sent and not self.answered:
            self.sent = True
            self.sock.sendall(_CONTINUE)


class _ContinueInput:
    """``wsgi.input`` that sends the interim ``100 Continue`` the first time it is read."""

    def __init__(self, raw: Any, expect: _Expect) -> None:
        self._raw = raw
        self._expect = expect

    def read(self, size: int | None = None) -> bytes:
        self._expect.send()
        return self._raw.read(size)

    def readline(self, size: int | None = None) -> bytes:
        self._expect.send()
        return self._raw.readline(size)

    def readlines(self, hint: int | None = None) -> list[bytes]:
        self._expect.send()
        return self._raw.readlines(hint)

    def __iter__(self):
        self._expect.send()
        return iter(self._raw)


class _Replay:
    """A connection's parser that gives back one request already read (by the event loop,
    which could not answer it), then steps aside for the real parser."""

    def __init__(self, conn: Any, req: Any) -> None:
        self._conn = conn
        self._parser = conn.parser
        self._req = req

    def __iter__(self) -> _Replay:
        return self

    def __next__(self) -> Any:
        self._conn.parser = self._parser
        return self._req

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


class Worker(ThreadWorker):
    """gthread with a lazy ``100 Continue``, private error pages and inline answers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request = threading.local()
        self.inline = False
        self._accept_after: float | None = None
        #: Connections whose answer the loop is sending: conn -> (stall deadline, the rest).
        self._writing: dict[Any, tuple[float, list]] = {}

    def init_process(self) -> None:
        tune_malloc()  # before any of this worker's threads exist
        util.write_error = write_error  # the one writer of gunicorn's own error pages
        response.install()  # the head goes out with the first body bytes, in one write
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app = self.wsgi

        def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
            return self._call(app, environ, start_response)

        self.wsgi = application
        self.inline = getattr(app, "answers_inline", False) is True
        freeze_startup_objects()  # before the first request: collections stay short

    def _call(self, app: Callable, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if getattr(self._request, "inline", False):
            environ[inline.ENVIRON_KEY] = True
        expect: _Expect | None = getattr(self._request, "expect", None)
        if expect is None:
            return app(environ, start_response)
        environ["wsgi.input"] = _ContinueInput(environ["wsgi.input"], expect)

        def answered(status: str, headers: list, exc_info: Any = None) -> Any:
            expect.answered = True
            return start_response(status, headers, exc_info)

        return app(environ, answered)

    def handle(self, conn: Any) -> Any:
        """One request, then the next ones on the same connection as long as each arrives
        within KEEP_LINGER seconds and no other connection waits for a thread."""
        result = super().handle(conn)
        while result is True and not self._loop_answers_next(conn) and self._next_request_arrives(conn):
            result = super().handle(conn)
        return result

    def _loop_answers_next(self, conn: Any) -> bool:
        """Whether the connection's next request is likely one the event loop answers (its
        last one was a page under /simple/ or the JSON API): then the thread hands it back at once."""
        return self.inline and getattr(conn, "last_inline", False)

    # -- new connections spread over the workers -----------------------------------------
    def accept(self, listener: Any) -> None:
        if self._accept_now():
            super().accept(listener)

    def _accept_now(self) -> bool:
        """Whether to accept the waiting connection now; else stop listening for a moment
        (ACCEPT_WAIT per connection held), leaving it to a less busy worker."""
        wait = min(self.nr_conns * ACCEPT_WAIT, ACCEPT_WAIT_MAX) if self.cfg.workers > 1 else 0.0
        now = time.monotonic()
        after = self._accept_after
        if wait <= 0 or (after is not None and after <= now <= after + ACCEPT_WAIT_STALE):
            self._accept_after = None
            return True  # idle, alone, or it has waited already: this connection is its
        self._accept_after = now + wait
        self.set_accept_enabled(False)
        return False

    def set_accept_enabled(self, enabled: bool) -> None:
        if enabled and self._accept_after is not None and time.monotonic() < self._accept_after:
            enabled = False  # still leaving new connections to the others
        super().set_accept_enabled(enabled)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        now = time.monotonic()
        after = self._accept_after
        if after is not None and after > now:  # wake up to listen again
            timeout = min(timeout, after - now)
        if self._writing:  # wake up to hand a stalled answer to a thread
            timeout = min(timeout, min(deadline for deadline, _ in self._writing.values()) - now)
        super().wait_for_and_dispatch_events(max(0.0, timeout))
        if self._writing:
            self._hand_over_stalled()

    # -- answers from the event loop (pypi.inline) ----------------------------------------
    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        """A kept-alive connection has data: answer it here if it qualifies, else as gthread does."""
        if not self.inline or not self.alive:
            super().on_client_socket_readable(conn, client)
            return
        try:
            data = inline_io.waiting_head(conn.sock)
        except OSError:
            data = b""
        if data is None:
            return  # a spurious wake-up: nothing to read yet, stay in the poller
        if not inline_io.qualifies(data) or conn.parser.unreader.buf.getvalue():
            super().on_client_socket_readable(conn, client)
            return
        try:
            self._answer_inline(conn)
        except Exception:  # never the loop's end: this connection's only
            self.log.exception("Error answering a request in the event loop")
            self._close(conn)

    def _release(self, conn: Any) -> None:
        """Take the connection out of the poller and the keep-alive list (a thread takes it)."""
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)
        with contextlib.suppress(ValueError):
            self.keepalived_conns.remove(conn)

    def _submit(self, conn: Any, fn: Callable[..., Any], *args: Any) -> None:
        fs = self.tpool.submit(fn, *args)
        fs.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))

    def _answer_inline(self, conn: Any) -> None:
        try:
            req = next(conn.parser)  # the whole head is in the socket's buffer: no blocking read
        except (StopIteration, OSError, http_errors.NoMoreData):
            self._close(conn)
            return
        except Exception as exc:  # a request gunicorn's parser refuses: its error page, as on a thread
            self.handle_error(None, conn.sock, conn.client, exc)
            self._close(conn)
            return
        sock = conn.sock
        collected = inline_io.Collected(sock)
        conn.sock = collected
        self._request.expect = None
        self._request.inline = True
        try:
            keepalive = super().handle_request(req, conn)
        except inline.NeedsThread:
            conn.sock = sock
            self._release(conn)
            conn.parser = _Replay(conn, req)
            self._submit(conn, self.handle, conn)
            return
        except Exception:  # the application answers its own errors: this is the server's
            self.log.exception("Error answering a request in the event loop")
            conn.sock = sock
            self._close(conn)
            return
        finally:
            conn.sock = sock
            self._request.inline = False
        conn.last_inline = True
        try:
            rest = inline_io.send_now(sock, collected.chunks)
        except OSError:
            rest, keepalive = [], False
        if rest and keepalive:  # the loop sends the rest as the client reads it
            self._write_from_loop(conn, rest)
            return
        if rest or not keepalive:
            # The socket took only part of it (a client slow to read), or the connection
            # ends: a thread sends the rest, then gthread closes or keeps the connection.
            self._release(conn)
            self._submit(conn, self._send_rest, conn, rest, keepalive)
            return
        self.keepalived_conns.remove(conn)  # answered: its keep-alive time starts again
        conn.set_timeout()
        self.keepalived_conns.append(conn)

    def _write_from_loop(self, conn: Any, rest: list) -> None:
        """Send ``rest`` of the answer from the loop each time the client has read some of it."""
        self._release(conn)
        self._writing[conn] = (time.monotonic() + LOOP_WRITE_STALL, rest)
        self.poller.register(conn.sock, selectors.EVENT_WRITE, functools.partial(self._on_writable, conn))

    def _on_writable(self, conn: Any, _sock: Any) -> None:
        """The client read some of the answer the loop is sending: send what the socket takes."""
        _, rest = self._writing.pop(conn)
        try:
            rest = inline_io.send_now(conn.sock, rest)
        except OSError:
            self._close(conn)
            return
        if rest:
            self._writing[conn] = (time.monotonic() + LOOP_WRITE_STALL, rest)
            return
        if not self.alive:  # stopping: the answer is whole, the connection ends
            self._close(conn)
            return
        self.poller.modify(
            conn.sock, selectors.EVENT_READ, functools.partial(self.on_client_socket_readable, conn)
        )
        conn.set_timeout()
        self.keepalived_conns.append(conn)

    def _hand_over_stalled(self) -> None:
        """Give a thread each answer whose client read nothing of it for LOOP_WRITE_STALL seconds."""
        now = time.monotonic()
        for conn, (deadline, rest) in list(self._writing.items()):
            if deadline <= now:
                del self._writing[conn]
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self.poller.unregister(conn.sock)
                self._submit(conn, self._send_rest, conn, rest, True)

    def _send_rest(self, conn: Any, rest: list[bytes], keepalive: bool) -> bool:
        conn.sock.setblocking(True)
        conn.sock.settimeout(READ_TIMEOUT)
        for chunk in rest:
            conn.sock.sendall(chunk)
        return keepalive

    def _close(self, conn: Any) -> None:
        if getattr(conn, "closed_by_loop", False):
            return
        conn.closed_by_loop = True
        self._release(conn)
        self.nr_conns -= 1
        conn.close()

    def _next_request_arrives(self, conn: Any) -> bool:
        """Whether to answer ``conn``'s next request in this thread: it arrived within
        KEEP_LINGER seconds and no connection of this worker is waiting for a thread.

        Handing a keep-alive connection back to gthread's main thread costs two thread
        hand-offs (and their GIL waits) and four system calls a request; a client that
        sends its next request at once is served on without them.
        """
        if conn.parser.unreader.buf.getvalue():
            return True  # read ahead already (a pipelining client)
        try:
            wait = _readable_within(conn.sock.fileno())
        except (OSError, ValueError):  # closed meanwhile
            return False
        deadline = time.monotonic() + KEEP_LINGER
        while self.alive and not self._connections_waiting():
            try:
                if wait(LINGER_SLICE):
                    return True
            except (OSError, ValueError):
                return False
            if time.monotonic() >= deadline:
                break
        return False

    def _connections_waiting(self) -> bool:
        """Whether connections of this worker wait for a thread (a lingering one must give way)."""
        if self.nr_conns <= self.cfg.threads:
            return False  # a thread for each connection: none can be waiting
        work = getattr(self.tpool, "_work_queue", None)
        return work is None or not work.empty()

    def handle_request(self, req: Any, conn: Any) -> bool:
        # gunicorn's wsgi.create() answers 100 as soon as it sees the header,
        # before the application could refuse the request: take the job over.
        expect = _Expect(conn.sock) if getattr(req, "_expected_100_continue", False) else None
        if expect is not None:
            req._expected_100_continue = False
        setattr(req, response.PENDING_CONTINUE, expect)  # an answer before it says Connection: close
        self._request.expect = expect
        conn.last_inline = inline_io.answerable(req.method, req.path)
        conn.sock.settimeout(READ_TIMEOUT)  # gthread leaves the socket blocking without a timeout
        try:
            # A client still waiting to send the body it was never asked for: the answer
            # says Connection: close, and the connection closes rather than wait for (and
            # read) a body to discard (pypi.server.response.body_left_unread).
            return super().handle_request(req, conn)
        finally:
            self._request.expect = None
