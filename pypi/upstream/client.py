"""Talks to the upstream index: PEP 691 JSON with a PEP 503 HTML fallback, XML-RPC serials.

Requests go through one pool of keep-alive ``http.client`` connections per
client (thread-safe: threads share it, each connection serving one request at
a time), with a timeout on every request. (urllib3's layers above
``http.client`` were a fifth of a mirror worker's CPU: its URL parsing, retry
and timeout objects and response wrapping, for every file.) Credentials for a
private upstream are sent only to upstream's own host (never to a file host
elsewhere, not even after a redirect) and never appear in an error message.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.client
import io
import json
import os
import re
import socket
import ssl
import threading
import time
import xmlrpc.client
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

from packaging.utils import (
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

from cloudpypi_base.files import create_numbered

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
ACCEPT = f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
USER_AGENT = "cloudpypi-mirror/1"
BLOCK = 1 << 20
#: Redirects followed for one request.
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
#: Bytes of an error answer read to keep its connection; a longer one closes it.
DRAIN_LIMIT = 64 * 1024
#: The largest project page, JSON API answer or PEP 658 metadata read from upstream; a
#: longer (or endless) one is an error, not held in memory.
MAX_PAGE = 64 * 1024 * 1024
#: The largest listing of the whole index read (XML-RPC list_packages_with_serial, the
#: changelog, the /simple/ page: pypi.org's are some tens of MB).
MAX_LISTING = 512 * 1024 * 1024
#: A page is read within ``timeout`` seconds in all (not per read: a server sending a byte a
#: second never ends a read). Larger bodies (files, listings) get ``timeout`` seconds plus
#: one second per MIN_RATE bytes received: a slower trickle is given up on.
MIN_RATE = 32 * 1024
#: A distribution file name as it may become the last part of a storage path.
_FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+!-]*")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
#: A project name that can exist (PEP 508), within a length no real one reaches; any other
#: name is never asked of upstream (nor becomes part of a URL to it).
_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,198}[A-Za-z0-9])?")
#: Content types a simple-API page comes as (none: a static tree's server may send none).
_HTML_TYPES = ("", "text/html", "application/vnd.pypi.simple.v1+html", "application/xhtml+xml")
_JSON_TYPES = (JSON_TYPE, "application/json")


def valid_name(name: Any) -> bool:
    """Whether ``name`` is a project name that can exist (PEP 508's rule)."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def _serial(value: Any) -> int:
    """An upstream serial (an int, or its decimal text), 0 when it is anything else."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) < 19:
        return int(value)
    return value if isinstance(value, int) and 0 <= value < 2**63 else 0


def _content_type(headers: dict[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


class UpstreamError(Exception):
    """Upstream answered, but not with what was asked for (bad page, wrong status)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        #: The HTTP status upstream answered with (None: no answer at all).
        self.status = status


class UpstreamUnavailable(UpstreamError):
    """Upstream could not be reached, timed out, or answered 5xx."""


class HashMismatch(UpstreamError):
    """A downloaded file's bytes do not match upstream's sha256."""


@dataclass(frozen=True)
class UpstreamFile:
    filename: str
    url: str
    sha256: str
    blake2_256: str = ""
    requires_python: str = ""
    #: False, or the reason (possibly "") it is yanked.
    yanked: bool | str = False
    #: The sha256 of upstream's PEP 658 metadata; "" when offered without a hash; None when not offered.
    metadata_sha256: str | None = None
    size: int | None = None
    upload_time: str = ""


@dataclass(frozen=True)
class ProjectPage:
    name: str
    files: list[UpstreamFile]
    #: Upstream's X-PyPI-Last-Serial for the page (0 when it sends none).
    serial: int
    #: A digest of what the page says, to tell whether it changed.
    digest: str
    #: Why each file not taken was refused (a hostile name, hash or link).
    refused: tuple[str, ...] = ()


@dataclass(frozen=True)
class Downloaded:
    path: str
    size: int
    sha256: str
    md5: str
    blake2_256: str


class UpstreamClient:
    """One upstream simple index at ``url`` (ending in ``/``).

    ``connections`` is how many keep-alive connections per host are kept for
    reuse (more may be open at once; the extra ones are closed after use).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        username: str = "",
        password: str = "",
        connections: int = 16,
        file_hosts: tuple[str, ...] = (),
    ) -> None:
        self.url = url.rstrip("/") + "/"
        self.timeout = timeout
        self._host = urlsplit(self.url).netloc
        #: (host, port) pairs a request may go to: upstream's own and ``file_hosts``' (port
        #: None: the scheme's default port). A link or redirect elsewhere is never followed.
        self._origins = {_origin(self.url)} | {_origin("//" + h) for h in file_hosts}
        self._auth = (
            "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode() if username else ""
        )
        #: The XML-RPC endpoint (pypi.org's /pypi beside /simple/), None once it proved absent.
        root = self.url[: -len("simple/")] if self.url.endswith("/simple/") else self.url
        self.xmlrpc_url: str | None = root + "pypi"
        #: The JSON API's root (pypi.org's /pypi/<name>/json), None once it proved absent.
        self.json_url: str | None = root + "pypi/"
        self._pool = _Pool(max(1, connections), timeout)

    def close(self) -> None:
        """Close the kept connections."""
        self._pool.clear()

    def allowed(self, url: str) -> bool:
        """Whether ``url`` is an http(s) URL on upstream's own host or one of ``file_hosts``."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        default = 443 if parts.scheme == "https" else 80
        origins = self._origins
        return (parts.hostname, port or default) in origins or (
            (parts.hostname, None) in origins and port in (None, default)
        )

    # -- HTTP ------------------------------------------------------------
    def _open(
        self,
        url: str,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        rate: int | None = None,
    ) -> _Response:
        """The response to a GET (a POST with ``data``), its body not read yet; the caller
        reads it inside ``with``. Redirects are followed (Authorization is sent only to
        upstream's own host). Raises UpstreamError for 4xx, UpstreamUnavailable otherwise.
        Everything (connecting, redirects, the head, the body) must be done within ``timeout``
        seconds, plus one per ``rate`` bytes received when given (see MIN_RATE)."""
        deadline = _Deadline(self.timeout, rate)
        method = "POST" if data is not None else "GET"
        redirected: int | None = None  # the status of the redirect that led here
        for _hop in range(MAX_REDIRECTS + 1):
            try:
                parts = urlsplit(url)
                port = parts.port  # ValueError when it is not a number
                if _CONTROL.search(url):
                    raise ValueError("control characters or spaces")
            except ValueError:
                raise UpstreamUnavailable("upstream unreachable: it gave a malformed URL") from None
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UpstreamUnavailable(f"upstream unreachable: not an http(s) URL: {_safe(url)}")
            if not self.allowed(url):
                raise UpstreamError(
                    f"upstream pointed to {parts.hostname}, neither its own host nor one of "
                    "[upstream] file_hosts; not followed",
                    redirected,
                )
            sent = {"User-Agent": USER_AGENT, **(headers or {})}
            if self._auth and parts.netloc == self._host:
                sent["Authorization"] = self._auth
            key = (parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn, response = self._request(key, method, target, data, sent, url, deadline)
            answer = _Response(response, url, self._pool, key, conn)
            location = response.getheader("Location")
            if response.status in REDIRECTS and location:
                answer.drain()
                redirected = response.status
                url = urljoin(url, location)
                if response.status == 303:
                    method, data = "GET", None
                continue
            break
        if response.status >= 300:
            answer.drain()
            kind = UpstreamUnavailable if response.status >= 500 else UpstreamError
            raise kind(f"upstream answered {response.status} for {_safe(url)}", response.status)
        return answer

    def _request(
        self,
        key: tuple[str, str, int],
        method: str,
        target: str,
        body: bytes | None,
        headers: dict[str, str],
        url: str,
        deadline: _Deadline,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send one request on a kept connection (once more on a new one when the server
        had closed the kept one meanwhile); the connection and its response's head."""
        for attempt in (1, 2):
            conn, reused = self._pool.take(key)
            try:
                conn.deadline = deadline  # type: ignore[attr-defined]
                left = deadline.left()
                if left <= 0:
                    raise TimeoutError("timed out")
                if conn.sock is None:
                    conn.timeout = min(self.timeout, left)  # connect()'s
                else:
                    conn.sock.settimeout(min(self.timeout, left))
                conn.request(method, target, body=body, headers=headers)
                return conn, conn.getresponse()
            except (OSError, http.client.HTTPException, ValueError) as exc:
                # ValueError: http.client's InvalidURL (control characters in a redirect's target)
                conn.close()
                if attempt == 1 and reused and _closed_by_peer(exc):
                    continue
                raise UpstreamUnavailable(f"upstream unreachable ({_safe(url)}): {_reason(exc)}") from None
        raise AssertionError("unreachable")

    def _get(
        self, url: str, accept: str = ACCEPT, *, limit: int = MAX_PAGE, rate: int | None = None
    ) -> tuple[bytes, str, dict[str, str]]:
        """(body, final URL, headers): a page of at most ``limit`` bytes, not encoded."""
        with self._open(url, headers={"Accept": accept}, rate=rate) as response:
            return _body(response, url, limit), response.url, response.headers

    def _xmlrpc(self, method: str, *params: Any) -> Any:
        """Call an XML-RPC method; None when upstream does not offer XML-RPC."""
        if self.xmlrpc_url is None:
            return None
        body = xmlrpc.client.dumps(params, method).encode()
        try:
            with self._open(
                self.xmlrpc_url, data=body, headers={"Content-Type": "text/xml"}, rate=MIN_RATE
            ) as response:
                data = _body(response, self.xmlrpc_url, MAX_LISTING)
            return xmlrpc.client.loads(data)[0][0]
        except UpstreamError as exc:
            if exc.status is None:
                raise  # no answer at all: upstream is down
            self.xmlrpc_url = None  # an HTTP error: upstream has no XML-RPC
            return None
        except Exception:  # not an XML-RPC answer (an HTML page, a fault, expat errors)
            self.xmlrpc_url = None
            return None

    # -- listing ---------------------------------------------------------
    def list_projects(self) -> dict[str, int]:
        """normalized name -> upstream serial (0 when upstream gives none).

        Names that cannot exist are left out (never asked of upstream)."""
        listed = self._xmlrpc("list_packages_with_serial")
        if isinstance(listed, dict):
            return {canonicalize_name(n): _serial(s) for n, s in listed.items() if valid_name(n)}
        body, _url, headers = self._get(self.url, limit=MAX_LISTING, rate=MIN_RATE)
        kind = _content_type(headers)
        if kind in _JSON_TYPES:
            try:
                data = json.loads(body)
            except (ValueError, RecursionError):
                data = None
            if not isinstance(data, dict) or not isinstance(data.get("projects"), list):
                raise UpstreamError("upstream's /simple/ is not a simple-API index")
            return {
                canonicalize_name(p["name"]): _serial(p.get("_last-serial"))
                for p in data["projects"]
                if isinstance(p, dict) and valid_name(p.get("name"))
            }
        if kind not in _HTML_TYPES:
            raise UpstreamError(f"upstream's /simple/ is not a simple-API index ({kind})")
        parser = _Links()
        parser.feed(body.decode("utf-8", "replace"))
        return {canonicalize_name(t.strip()): 0 for _attrs, t in parser.links if valid_name(t.strip())}

    def last_serial(self) -> int | None:
        found = self._xmlrpc("changelog_last_serial")
        return found if isinstance(found, int) and not isinstance(found, bool) and found >= 0 else None

    def changed_since(self, serial: int) -> tuple[set[str], int] | None:
        """(names changed after ``serial``, newest serial), or None without XML-RPC (or
        when its answer is not a changelog: the caller then checks every project)."""
        changes = self._xmlrpc("changelog_since_serial", serial)
        if not isinstance(changes, list):
            return None
        names, newest = set(), serial
        for c in changes:
            if not isinstance(c, (list, tuple)) or len(c) < 5 or not isinstance(c[0], str):
                return None
            if valid_name(c[0]):
                names.add(canonicalize_name(c[0]))
            newest = max(newest, _serial(c[4]))
        return names, newest

    # -- project pages ---------------------------------------------------
    def project(self, name: str) -> ProjectPage | None:
        """The project's files, or None when upstream has no such project (404; a name that
        cannot exist is not asked)."""
        if not valid_name(name):
            return None
        url = urljoin(self.url, canonicalize_name(name) + "/")
        try:
            body, final, headers = self._get(url)
        except UpstreamError as exc:
            if exc.status in (404, 410):
                return None
            raise
        serial = _serial(headers.get("x-pypi-last-serial"))
        digest = hashlib.sha256(body).hexdigest()
        kind = _content_type(headers)
        try:
            if kind in _JSON_TYPES:
                found = _files_from_json(json.loads(body), final)
            elif kind in _HTML_TYPES:
                found = _files_from_html(body.decode("utf-8", "replace"), final)
            else:
                raise ValueError(f"its content type is {kind}")
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise UpstreamError(f"upstream's page for {name} is not a simple-API page: {exc}") from None
        files, refused = [], []
        for f in found:
            reason = self._refusal(f, name)
            if reason is None:
                files.append(f)
            else:
                refused.append(reason)
        return ProjectPage(canonicalize_name(name), files, serial, digest, tuple(refused))

    def _refusal(self, f: UpstreamFile, project: str) -> str | None:
        """Why upstream's file ``f`` of ``project`` is not taken, or None to take it: its name
        must be a plain file name of that project (it becomes part of the storage path and
        of the file registry), its hash a sha256 hex digest, its link on an allowed host."""
        name = f.filename if isinstance(f.filename, str) else ""
        shown = repr(name[:200])
        if not _FILENAME.fullmatch(name):
            return f"{shown}: not a plain file name"
        if _project_of(name) != canonicalize_name(project):
            return f"{shown}: not a file of {project}"
        if not _HEX64.fullmatch(f.sha256) or (f.blake2_256 and not _HEX64.fullmatch(f.blake2_256)):
            return f"{shown}: its hash is not a hex digest"
        if not self.allowed(f.url):
            return f"{shown}: its link is not on upstream's host nor one of [upstream] file_hosts"
        return None

    def project_json(self, name: str) -> dict[str, Any] | None:
        """Upstream's JSON API answer for a project it has (``info``: the latest release's
        metadata), or None when upstream offers no JSON API or cannot answer now."""
        if self.json_url is None or not valid_name(name):
            return None
        try:
            body, _url, headers = self._get(
                self.json_url + canonicalize_name(name) + "/json", accept="application/json"
            )
            data = json.loads(body)
            if not isinstance(data, dict) or not isinstance(data.get("info"), dict):
                raise ValueError("not a JSON API answer")
        except UpstreamUnavailable:
            return None  # not now; the simple page was enough
        except (UpstreamError, ValueError, RecursionError):
            self.json_url = None  # a 404 for a project upstream has, or not JSON: no JSON API
            return None
        return data

    # -- files -----------------------------------------------------------
    def fetch_bytes(self, url: str, *, limit: int = 16 * 1024 * 1024) -> bytes:
        with self._open(url) as response:
            return _body(response, url, limit, decoded=False)

    def download(self, url: str, dest_dir: str, *, max_size: int = 0) -> Downloaded:
        """Stream ``url`` into a new file ``dest_dir/upstream-<pid>-<n>.part``, hashing it; the
        caller removes it (or has the store take it)."""
        sha256, md5, blake2 = hashlib.sha256(), hashlib.md5(), hashlib.blake2b(digest_size=32)
        size = 0
        fd, path = _mkstemp(dest_dir)
        try:
            with os.fdopen(fd, "wb") as out, self._open(url, rate=MIN_RATE) as response:
                for block in _blocks(response, url):
                    size += len(block)
                    if max_size and size > max_size:
                        raise UpstreamError(f"{_safe(url)} is larger than {max_size} bytes")
                    out.write(block)
                    sha256.update(block)
                    md5.update(block)
                    blake2.update(block)
        except BaseException:
            os.unlink(path)
            raise
        return Downloaded(path, size, sha256.hexdigest(), md5.hexdigest(), blake2.hexdigest())


class _Pool:
    """Idle keep-alive connections per (scheme, host, port), the newest first; at most
    ``keep`` of each are kept (the others are closed after use)."""

    def __init__(self, keep: int, timeout: float) -> None:
        self._keep = keep
        self._timeout = timeout
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def take(self, key: tuple[str, str, int]) -> tuple[http.client.HTTPConnection, bool]:
        """A connection to ``key``, and whether it was kept from an earlier request."""
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop(), True
        scheme, host, port = key
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=self._timeout, context=self._tls
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self._timeout)
        conn.deadline = None  # type: ignore[attr-defined]
        conn.response_class = functools.partial(_TimedResponse, conn)  # type: ignore[assignment]
        return conn, False

    def give_back(self, key: tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self._keep:
                idle.append(conn)
                return
        conn.close()

    def clear(self) -> None:
        with self._lock:
            kept, self._idle = self._idle, {}
        for conns in kept.values():
            for conn in conns:
                conn.close()


class _Response:
    """A response read inside ``with``: its connection goes back to the pool when the body
    was read to the end, and is closed otherwise."""

    def __init__(
        self,
        response: http.client.HTTPResponse,
        url: str,
        pool: _Pool,
        key: tuple[str, str, int],
        conn: http.client.HTTPConnection,
    ) -> None:
        self._response = response
        #: The URL that answered (after redirects).
        self.url = url
        #: Headers, with lower-case names.
        self.headers = {k.lower(): v for k, v in response.getheaders()}
        self._pool, self._key, self._conn = pool, key, conn
        self._released = False

    def read(self, amount: int | None = None) -> bytes:
        try:
            return self._response.read(amount)
        except (http.client.HTTPException, OSError) as exc:
            raise OSError(_reason(exc)) from None

    def incomplete(self) -> bool:
        """Whether the body ended before its Content-Length (the server closed early)."""
        return bool(self._response.length)

    def drain(self) -> None:
        """Read a short body to its end and release the connection (an error, a redirect)."""
        try:
            self._response.read(DRAIN_LIMIT)
        except (http.client.HTTPException, OSError):
            pass
        self._release()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._response.isclosed() and not self._response.will_close:
            self._pool.give_back(self._key, self._conn)  # read to the end: reusable
        else:
            self._response.close()
            self._conn.close()

    def __enter__(self) -> _Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self._release()


class _Deadline:
    """When one request must be done: ``timeout`` seconds after it started, plus one second
    per ``rate`` bytes received (with a rate)."""

    __slots__ = ("timeout", "rate", "start", "received")

    def __init__(self, timeout: float, rate: int | None) -> None:
        self.timeout = timeout
        self.rate = rate
        self.start = time.monotonic()
        self.received = 0

    def left(self) -> float:
        allowed = self.timeout + (self.received / self.rate if self.rate else 0.0)
        return self.start + allowed - time.monotonic()


class _TimedReader(io.RawIOBase):
    """A response's socket reads, each given only the time its request has left (a server
    trickling bytes never makes one read wait past the request's deadline)."""

    def __init__(self, sock: socket.socket, conn: http.client.HTTPConnection, held: io.IOBase) -> None:
        self._sock = sock
        self._conn = conn
        #: http.client's own reader of the socket, kept open while this one is: the socket
        #: (closed by the connection at once when the server will close it) stays usable.
        self._held = held

    def close(self) -> None:
        super().close()
        self._held.close()

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        deadline: _Deadline | None = getattr(self._conn, "deadline", None)
        if deadline is not None:
            left = deadline.left()
            if left <= 0:
                raise TimeoutError("timed out")
            current = self._sock.gettimeout()
            if current is None or current > left + 0.1:  # (a system call: not on every read)
                self._sock.settimeout(min(deadline.timeout, left))
        n = self._sock.recv_into(b)
        if deadline is not None:
            deadline.received += n
        return n


class _TimedResponse(http.client.HTTPResponse):
    """http.client's response, reading through a _TimedReader."""

    def __init__(
        self, conn: http.client.HTTPConnection, sock: socket.socket, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp = io.BufferedReader(_TimedReader(sock, conn, self.fp))


def _body(response: _Response, url: str, limit: int, *, decoded: bool = True) -> bytes:
    """The whole body of at most ``limit`` bytes (UpstreamError beyond: an endless or huge
    body is never held). ``decoded``: a page must come as sent (we ask for no encoding; a
    gzip or deflate body is refused, never inflated)."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if decoded and encoding not in ("", "identity"):
        raise UpstreamError(f"upstream sent {_safe(url)} {encoding}-encoded, which was not asked for")
    parts, size = [], 0
    for block in _blocks(response, url):
        size += len(block)
        if size > limit:
            raise UpstreamError(f"{_safe(url)} is larger than {limit} bytes; not read")
        parts.append(block)
    return b"".join(parts)


def _closed_by_peer(exc: BaseException) -> bool:
    """Whether a kept connection failed because the server had closed it (worth one retry)."""
    return isinstance(
        exc,
        (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionResetError, BrokenPipeError),
    )


def _reason(exc: BaseException) -> str:
    """What went wrong, in a few words and without any URL (it may carry credentials)."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(
        exc,
        (http.client.RemoteDisconnected, http.client.IncompleteRead, ConnectionResetError, BrokenPipeError),
    ):
        return "connection closed"
    if isinstance(exc, (socket.gaierror, ConnectionError, ssl.SSLError)):
        return "cannot connect"
    return type(exc).__name__


def _blocks(response: Any, url: str) -> Iterator[bytes]:
    """The body in blocks, to its end; UpstreamUnavailable when it stops early (a read fails,
    or the connection closes before its Content-Length: http.client then just ends it)."""
    while True:
        try:
            block = response.read(BLOCK)
        except (TimeoutError, OSError) as exc:
            raise UpstreamUnavailable(f"upstream stopped sending {_safe(url)}: {exc}") from None
        if not block:
            if response.incomplete():
                raise UpstreamUnavailable(f"upstream stopped sending {_safe(url)}: connection closed")
            return
        yield block


def _mkstemp(folder: str) -> tuple[int, str]:
    """A new file ``folder/upstream-<pid>-<n>.part`` (0600) open for writing, ``folder``
    created when missing; a name a killed process left is skipped."""
    try:
        return create_numbered(folder, "upstream-", ".part")
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        return create_numbered(folder, "upstream-", ".part")


def _origin(url: str) -> tuple[str, int | None]:
    """(host, port) of a URL (port None when it has none and no scheme says which)."""
    parts = urlsplit(url)
    port = parts.port
    if port is None and parts.scheme:
        port = 443 if parts.scheme == "https" else 80
    return (parts.hostname or "", port)


@functools.lru_cache(maxsize=1 << 16)
def name_and_version(filename: str) -> tuple[str, str] | None:
    """The normalized project name and the version a wheel's or sdist's file name carries,
    or None when it is neither. Cached (bounded): a sync asks it several times per file
    (checks, filters, fetch, rows, yanks) and packaging's parse costs more than the rest of
    the per-file bookkeeping."""
    try:
        if filename.endswith(".whl"):
            name, version = parse_wheel_filename(filename)[:2]
        elif filename.endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(filename)
        else:
            return None
    except ValueError:  # InvalidWheelFilename, InvalidSdistFilename, InvalidVersion
        return None
    return canonicalize_name(name), str(version)


def _project_of(filename: str) -> str | None:
    """The normalized project name a wheel's or sdist's file name carries, or None."""
    parsed = name_and_version(filename)
    return parsed[0] if parsed else None


def _hex(value: Any) -> str:
    """A digest as lower-case hex, or "" when it is not one (never a path part)."""
    text = value.lower() if isinstance(value, str) else ""
    return text if _HEX64.fullmatch(text) else ""


def _safe(url: str) -> str:
    """The URL without any user:password@ part."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
    return parts.geturl()


def _meta_hash(value: Any) -> str | None:
    if value is None or value is False:
        return None
    if isinstance(value, dict):
        return str(value.get("sha256") or "")
    if isinstance(value, str):
        if value.startswith("sha256="):
            return value[len("sha256=") :]
        return "" if value in ("true", "") else ""
    return ""


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _files_from_json(data: Any, base: str) -> list[UpstreamFile]:
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise ValueError("no list of files")
    files = []
    for f in data["files"]:
        if not isinstance(f, dict) or not isinstance(f.get("url"), str):
            continue
        hashes = f.get("hashes")
        if not isinstance(hashes, dict) or not isinstance(hashes.get("sha256"), str):
            continue  # unverifiable: never taken
        yanked = f.get("yanked", False)
        size = f.get("size")
        meta = _meta_hash(f.get("core-metadata", f.get("data-dist-info-metadata")))
        files.append(
            UpstreamFile(
                filename=_text(f.get("filename")),
                url=urljoin(base, f["url"]),
                sha256=hashes["sha256"].lower(),
                blake2_256=_text(hashes.get("blake2b_256") or hashes.get("blake2_256")).lower(),
                requires_python=_text(f.get("requires-python")),
                yanked=(yanked if isinstance(yanked, str) else bool(yanked)),
                metadata_sha256=meta if meta is None else _hex(meta),
                size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
                upload_time=_text(f.get("upload-time")),
            )
        )
    return files


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[dict[str, str | None], str]] = []
        self._attrs: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "a":
            self._attrs = dict(attrs)
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._attrs is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._attrs is not None:
            self.links.append((self._attrs, "".join(self._text)))
            self._attrs = None


def _files_from_html(text: str, base: str) -> list[UpstreamFile]:
    parser = _Links()
    parser.feed(text)
    files = []
    for attrs, label in parser.links:
        href = attrs.get("href") or ""
        url, fragment = urldefrag(urljoin(base, href))
        algo, _, value = fragment.partition("=")
        if algo != "sha256" or not value:
            continue  # unverifiable: never taken
        filename = label.strip() or url.rsplit("/", 1)[-1]
        yanked: bool | str = False
        if "data-yanked" in attrs:
            yanked = attrs["data-yanked"] or ""
        meta = _meta_hash(attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata")))
        files.append(
            UpstreamFile(
                filename=filename,
                url=url,
                sha256=value.lower(),
                requires_python=attrs.get("data-requires-python") or "",
                yanked=yanked,
                metadata_sha256=meta if meta is None else _hex(meta),
            )
        )
    return files
