"""Talks to the upstream index: PEP 691 JSON with a PEP 503 HTML fallback, XML-RPC serials.

Requests go through one ``urllib3`` pool of keep-alive connections per
client (thread-safe: the mirror's threads share it, each connection serving
one request at a time), with a timeout on every request. Credentials for a
private upstream are sent only to upstream's own host (never to a file host
elsewhere, not even after a redirect) and never appear in an error message.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import xmlrpc.client
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

import urllib3
from packaging.utils import canonicalize_name

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
ACCEPT = f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
USER_AGENT = "cloudpypi-mirror/1"
BLOCK = 1 << 20


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
    ) -> None:
        self.url = url.rstrip("/") + "/"
        self.timeout = timeout
        self._host = urlsplit(self.url).netloc
        self._auth = (
            "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode() if username else ""
        )
        #: The XML-RPC endpoint (pypi.org's /pypi beside /simple/), None once it proved absent.
        root = self.url[: -len("simple/")] if self.url.endswith("/simple/") else self.url
        self.xmlrpc_url: str | None = root + "pypi"
        #: The JSON API's root (pypi.org's /pypi/<name>/json), None once it proved absent.
        self.json_url: str | None = root + "pypi/"
        self._pool = urllib3.PoolManager(
            num_pools=8,
            maxsize=max(1, connections),
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            # Redirects are followed (Authorization is dropped when one leaves the host);
            # nothing else is retried here (see _open).
            retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5),
        )

    def close(self) -> None:
        """Close the kept connections."""
        self._pool.clear()

    # -- HTTP ------------------------------------------------------------
    def _open(
        self, url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
    ) -> _Response:
        """The response to a GET (a POST with ``data``), its body not read yet; the caller
        reads it inside ``with``. Raises UpstreamError for 4xx, UpstreamUnavailable otherwise."""
        sent = {"User-Agent": USER_AGENT, **(headers or {})}
        if self._auth and urlsplit(url).netloc == self._host:
            sent["Authorization"] = self._auth
        for attempt in (1, 2):
            try:
                response = self._pool.urlopen(
                    "POST" if data is not None else "GET",
                    url,
                    body=data,
                    headers=sent,
                    preload_content=False,
                    decode_content=False,
                )
                break
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
                if attempt == 1 and isinstance(reason, urllib3.exceptions.ProtocolError):
                    continue  # a kept connection the server closed meanwhile: once more, on a new one
                raise UpstreamUnavailable(f"upstream unreachable ({_safe(url)}): {_reason(reason)}") from None
        if response.status >= 300:
            response.drain_conn()
            response.release_conn()
            kind = UpstreamUnavailable if response.status >= 500 else UpstreamError
            raise kind(f"upstream answered {response.status} for {_safe(url)}", response.status)
        return _Response(response, url)

    def _get(self, url: str, accept: str = ACCEPT) -> tuple[bytes, str, dict[str, str]]:
        """(body, final URL, headers)."""
        with self._open(url, headers={"Accept": accept}) as response:
            try:
                body = response.read()
            except (TimeoutError, OSError) as exc:
                raise UpstreamUnavailable(f"upstream stopped answering ({_safe(url)}): {exc}") from None
            return body, response.url, response.headers

    def _xmlrpc(self, method: str, *params: Any) -> Any:
        """Call an XML-RPC method; None when upstream does not offer XML-RPC."""
        if self.xmlrpc_url is None:
            return None
        body = xmlrpc.client.dumps(params, method).encode()
        try:
            with self._open(self.xmlrpc_url, data=body, headers={"Content-Type": "text/xml"}) as response:
                data = response.read()
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
        """normalized name -> upstream serial (0 when upstream gives none)."""
        listed = self._xmlrpc("list_packages_with_serial")
        if isinstance(listed, dict):
            return {canonicalize_name(n): int(s) for n, s in listed.items()}
        body, _url, headers = self._get(self.url)
        if headers.get("content-type", "").startswith(JSON_TYPE):
            data = json.loads(body)
            return {canonicalize_name(p["name"]): int(p.get("_last-serial") or 0) for p in data["projects"]}
        parser = _Links()
        parser.feed(body.decode("utf-8", "replace"))
        return {canonicalize_name(text.strip()): 0 for _attrs, text in parser.links if text.strip()}

    def last_serial(self) -> int | None:
        found = self._xmlrpc("changelog_last_serial")
        return int(found) if isinstance(found, int) else None

    def changed_since(self, serial: int) -> tuple[set[str], int] | None:
        """(names changed after ``serial``, newest serial), or None without XML-RPC."""
        changes = self._xmlrpc("changelog_since_serial", serial)
        if not isinstance(changes, list):
            return None
        names = {canonicalize_name(c[0]) for c in changes}
        newest = max([serial, *(int(c[4]) for c in changes)])
        return names, newest

    # -- project pages ---------------------------------------------------
    def project(self, name: str) -> ProjectPage | None:
        """The project's files, or None when upstream has no such project (404)."""
        url = urljoin(self.url, canonicalize_name(name) + "/")
        try:
            body, final, headers = self._get(url)
        except UpstreamError as exc:
            if exc.status in (404, 410):
                return None
            raise
        serial = int(headers.get("x-pypi-last-serial") or 0)
        digest = hashlib.sha256(body).hexdigest()
        try:
            if headers.get("content-type", "").startswith(JSON_TYPE):
                files = _files_from_json(json.loads(body), final)
            else:
                files = _files_from_html(body.decode("utf-8", "replace"), final)
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamError(f"upstream's page for {name} is not a simple-API page: {exc}") from None
        return ProjectPage(canonicalize_name(name), files, serial, digest)

    def project_json(self, name: str) -> dict[str, Any] | None:
        """Upstream's JSON API answer for a project it has (``info``: the latest release's
        metadata), or None when upstream offers no JSON API or cannot answer now."""
        if self.json_url is None:
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
        except (UpstreamError, ValueError):
            self.json_url = None  # a 404 for a project upstream has, or not JSON: no JSON API
            return None
        return data

    # -- files -----------------------------------------------------------
    def fetch_bytes(self, url: str, *, limit: int = 16 * 1024 * 1024) -> bytes:
        with self._open(url) as response:
            data = response.read(limit + 1)
        if len(data) > limit:
            raise UpstreamError(f"{_safe(url)} is larger than {limit} bytes")
        return data

    def download(self, url: str, dest_dir: str, *, max_size: int = 0) -> Downloaded:
        """Stream ``url`` into a new file in ``dest_dir``, hashing it; the caller removes it."""
        os.makedirs(dest_dir, exist_ok=True)
        sha256, md5, blake2 = hashlib.sha256(), hashlib.md5(), hashlib.blake2b(digest_size=32)
        size = 0
        fd, path = _mkstemp(dest_dir)
        try:
            with os.fdopen(fd, "wb") as out, self._open(url) as response:
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


class _Response:
    """A urllib3 response read inside ``with``: its connection goes back to the pool when
    the body was read to the end, and is closed otherwise."""

    def __init__(self, response: urllib3.BaseHTTPResponse, url: str) -> None:
        self._response = response
        #: The URL finally answered (after redirects; urllib3 keeps only their history).
        self.url = url
        for step in getattr(response.retries, "history", ()) or ():
            if step.redirect_location:
                self.url = urljoin(self.url, step.redirect_location)
        #: Headers, with lower-case names.
        self.headers = {k.lower(): v for k, v in response.headers.items()}
        self._done = False

    def read(self, amount: int | None = None) -> bytes:
        try:
            data = self._response.read(amount)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise OSError(_reason(exc)) from None
        if amount is None or len(data) < amount:  # urllib3 reads ``amount`` bytes unless at the end
            self._done = True
        return data

    def __enter__(self) -> _Response:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            self._response.close()  # not read to the end: the connection cannot be reused
        self._response.release_conn()


def _reason(exc: BaseException) -> str:
    """What went wrong, in a few words and without any URL (it may carry credentials)."""
    if isinstance(exc, urllib3.exceptions.NewConnectionError):  # before TimeoutError: it is one
        return "connection refused" if "refused" in str(exc).lower() else "cannot connect"
    if isinstance(exc, (urllib3.exceptions.TimeoutError, TimeoutError)):
        return "timed out"
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return "connection closed"
    return type(exc).__name__


def _blocks(response: Any, url: str) -> Iterator[bytes]:
    while True:
        try:
            block = response.read(BLOCK)
        except (TimeoutError, OSError) as exc:
            raise UpstreamUnavailable(f"upstream stopped sending {_safe(url)}: {exc}") from None
        if not block:
            return
        yield block


def _mkstemp(folder: str) -> tuple[int, str]:
    import tempfile

    return tempfile.mkstemp(prefix="upstream-", suffix=".part", dir=folder)


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


def _files_from_json(data: dict, base: str) -> list[UpstreamFile]:
    files = []
    for f in data["files"]:
        hashes = f.get("hashes") or {}
        if not hashes.get("sha256"):
            continue  # unverifiable: never taken
        yanked = f.get("yanked", False)
        files.append(
            UpstreamFile(
                filename=f["filename"],
                url=urljoin(base, f["url"]),
                sha256=hashes["sha256"].lower(),
                blake2_256=(hashes.get("blake2b_256") or hashes.get("blake2_256") or "").lower(),
                requires_python=f.get("requires-python") or "",
                yanked=(yanked if isinstance(yanked, str) else bool(yanked)),
                metadata_sha256=_meta_hash(f.get("core-metadata", f.get("data-dist-info-metadata"))),
                size=f.get("size"),
                upload_time=f.get("upload-time") or "",
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
        meta = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
        files.append(
            UpstreamFile(
                filename=filename,
                url=url,
                sha256=value.lower(),
                requires_python=attrs.get("data-requires-python") or "",
                yanked=yanked,
                metadata_sha256=_meta_hash(meta),
            )
        )
    return files
