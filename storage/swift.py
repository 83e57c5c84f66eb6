"""OpenStack Swift, through python-swiftclient.

Objects live in one container, optionally below a prefix. Files larger than
``segment_size`` are stored as Static Large Objects: the segments go to the
container ``<container>_segments`` (the ``swift`` CLI's convention) under
``<prefix><path>/<upload id>/``, then one manifest PUT makes the object appear
at its path at once. A swiftclient ``Connection`` is not thread-safe, so each
thread gets its own copy of a template connection.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import email.utils
import http.client
import importlib.util
import io
import json
import logging
import os
import shutil
import tempfile
import threading
import uuid
import weakref
from collections.abc import Iterator, Mapping
from typing import BinaryIO
from urllib.parse import quote, urlsplit

import requests
import urllib3
from swiftclient.client import ClientException, Connection

from storage.base import (
    NotFound,
    ObjectHeaders,
    ObjectInfo,
    RangeNotSatisfiable,
    Storage,
    StorageError,
    StorageMisconfigured,
    StorageUnavailable,
    StreamingReader,
    Temporary,
    Upload,
    check_path,
    parse_content_range,
    range_header,
    set_read_info,
    settings_section,
)
from storage.swift_upload import SwiftUpload

log = logging.getLogger(__name__)

GiB = 1024**3
MiB = 1024**2
DEFAULT_SEGMENT_SIZE = 1 * GiB
#: Swift's default max_file_size: no single object (or segment) may be larger.
MAX_SEGMENT_SIZE = 5 * GiB
#: Swift's default max_manifest_segments.
MAX_SEGMENTS = 1000
#: Read size for downloads, and the spool size kept in memory for unseekable uploads.
CHUNK = 1 * MiB
SPOOL_IN_MEMORY = 8 * MiB

_UTC = datetime.timezone.utc  # noqa: UP017 - datetime.UTC needs 3.11, setup.py allows 3.10
_AUTH_VERSIONS = {"1": "1.0", "1.0": "1.0", "2": "2.0", "2.0": "2.0", "3": "3"}
#: What a network failure looks like, whichever layer raises it.
_TRANSPORT_ERRORS = (
    OSError,
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
)


class SwiftStorage(Storage):
    """Objects in one Swift container, below an optional prefix.

    Give either ``connection`` (a swiftclient Connection used as a template:
    each thread works on its own shallow copy) or the plain values
    ``auth_url``, ``user``, ``key`` and, for Keystone (``auth_version`` 2 or
    3), ``project`` and the domains. ``public_url`` is the URL at which
    clients can read the container (public ACL or a CDN); without it
    ``public_url()`` returns None.
    """

    name = "swift"
    #: Objects asked for per listing request (Swift's default maximum).
    _page_size = 10000

    def __init__(
        self,
        *,
        container: str,
        connection: Connection | None = None,
        auth_url: str | None = None,
        user: str | None = None,
        key: str | None = None,
        auth_version: str = "1",
        project: str | None = None,
        project_domain: str | None = None,
        user_domain: str | None = None,
        region: str | None = None,
        prefix: str = "",
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        segment_container: str | None = None,
        public_url: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        temp_url_key: str | None = None,
    ) -> None:
        if not container or "/" in container:
            raise ValueError(f"invalid Swift container name: {container!r}")
        if segment_size < 1:
            raise ValueError("segment_size must be positive")
        if connection is None:
            if not auth_url:
                raise ValueError("SwiftStorage needs a connection or an auth_url")
            os_options = {}
            if project:
                os_options.update(tenant_name=project, project_name=project)
            if project_domain:
                os_options["project_domain_name"] = project_domain
            if user_domain:
                os_options["user_domain_name"] = user_domain
            if region:
                os_options["region_name"] = region
            connection = Connection(
                authurl=auth_url,
                user=user,
                key=key,
                auth_version=_AUTH_VERSIONS.get(str(auth_version), str(auth_version)),
                os_options=os_options,
                retries=retries,
                timeout=timeout,
                starting_backoff=0.5,
                max_backoff=8,
            )
        self.container = container
        self.segment_container = segment_container or f"{container}_segments"
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.segment_size = segment_size
        self.base_url = public_url.rstrip("/") + "/" if public_url else None
        self._template = connection
        self._secret = connection.key or ""
        self._local = threading.local()
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._segment_container_ready = False
        #: The account's TempURL key (``[storage] temp_url_key``): signs expiring URLs.
        self.temp_url_key = temp_url_key or None
        self._temp_url_key_set = False

    @classmethod
    def from_config(cls, settings: Mapping[str, str], *, data_dir: str) -> SwiftStorage:
        """Build from ``[storage]``.

        Settings: ``auth_url``, ``auth_version`` (1 tempauth, the default; 2 or
        3 Keystone, which needs ``project`` (alias ``tenant``) and takes
        ``project_domain``/``user_domain``, default ``Default``, and ``region``),
        ``user``, ``key`` or ``key_file`` (a file holding the key, relative to
        ``data_dir``), ``container`` (required), ``prefix``, ``segment_size``
        (bytes, or with a KB/MB/GB binary suffix as for S3; default 1GB),
        ``public_url``, ``timeout`` (seconds, default 30), ``retries`` (default 3).
        """

        s = settings_section(settings, data_dir)
        get = s.text

        container = get("container")
        if not container:
            raise StorageMisconfigured("[storage] container is required for backend = swift", key="container")
        if "/" in container or len(container.encode()) > 256:
            raise StorageMisconfigured(
                f"[storage] container = {container!r} is not a valid Swift container name "
                "(no '/', at most 256 bytes)",
                key="container",
            )
        auth_url = get("auth_url")
        if not auth_url.startswith(("http://", "https://")):
            raise StorageMisconfigured(
                f"[storage] auth_url must be an http(s) URL, got {auth_url!r}", key="auth_url"
            )
        auth_version = _AUTH_VERSIONS.get(get("auth_version") or "1")
        if auth_version is None:
            raise StorageMisconfigured(
                f"[storage] auth_version = {get('auth_version')!r}: use 1 (tempauth), 2 or 3 (Keystone)",
                key="auth_version",
            )
        if auth_version != "1.0" and importlib.util.find_spec("keystoneclient") is None:
            raise StorageMisconfigured(
                f"[storage] auth_version = {auth_version} (Keystone) needs python-keystoneclient "
                "(pip install python-keystoneclient)",
                key="auth_version",
            )
        user = get("user")
        if not user:
            raise StorageMisconfigured("[storage] user is required for backend = swift", key="user")
        key = s.secret("key", required=True)
        project, tenant = get("project"), get("tenant")
        if project and tenant and project != tenant:
            raise StorageMisconfigured(
                "[storage] project and tenant are two names for one setting; set only one",
                key="tenant",
            )
        project = project or tenant
        if auth_version != "1.0" and not project:
            raise StorageMisconfigured(
                f"[storage] project is required with auth_version = {auth_version}",
                key="project",
            )
        domain_default = "Default" if auth_version == "3" else None
        prefix = get("prefix").strip("/")
        if prefix:
            try:
                check_path(prefix)
            except ValueError:
                raise StorageMisconfigured(
                    f"[storage] prefix = {prefix!r} is not a valid path prefix", key="prefix"
                ) from None
        public_url = get("public_url") or None
        if public_url and not public_url.startswith(("http://", "https://")):
            raise StorageMisconfigured(
                f"[storage] public_url must be an http(s) URL, got {public_url!r}",
                key="public_url",
            )
        return cls(
            container=container,
            auth_url=auth_url,
            user=user,
            key=key,
            auth_version=auth_version,
            project=project or None,
            project_domain=get("project_domain") or domain_default,
            user_domain=get("user_domain") or domain_default,
            region=get("region") or None,
            prefix=prefix,
            segment_size=s.size("segment_size", DEFAULT_SEGMENT_SIZE, low=MiB, high=MAX_SEGMENT_SIZE),
            public_url=public_url,
            timeout=s.seconds("timeout", 30.0, low=0.001, high=24 * 3600),
            retries=s.whole("retries", 3, low=0, high=100),
            temp_url_key=s.secret("temp_url_key"),
        )

    # -- connections and errors ------------------------------------------------------------

    def _conn(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._copy_template()
            self._local.conn = conn
            with self._lock:
                self._connections.add(conn)
        return conn

    def _copy_template(self, **changes: object) -> Connection:
        conn = copy.copy(self._template)
        conn.http_conn = None
        conn.os_options = dict(conn.os_options)
        for name, value in changes.items():
            setattr(conn, name, value)
        return conn

    @contextlib.contextmanager
    def _errors(self, what: str, path: str | None = None) -> Iterator[None]:
        """Translate swiftclient and network errors; a 404 is NotFound(path) if path is given."""
        try:
            yield
        except StorageError:
            raise
        except _SourceError as exc:
            raise StorageUnavailable(f"{what}: reading the file failed: {exc}") from None
        except ClientException as exc:
            if exc.http_status == 404 and path is not None:
                raise NotFound(path) from None
            raise self._client_error(exc, what) from None
        except _TRANSPORT_ERRORS as exc:
            raise StorageUnavailable(
                self._scrub(f"{what}: cannot reach Swift (auth_url {self._template.authurl}): {exc}")
            ) from None

    def _missing_container(self, hint: str = "") -> StorageMisconfigured:
        """The error for a 404 from the container itself: ``[storage] container`` is not there."""
        return StorageMisconfigured(
            f"[storage] container {self.container!r} does not exist{hint}", key="container"
        )

    def _client_error(self, exc: ClientException, what: str) -> StorageError:
        status = exc.http_status
        if status == 401 or (status is None and "nauthori" in str(exc)):
            return StorageMisconfigured(
                f"[storage] user/key: Swift at {self._template.authurl} refused the credentials "
                f"of user {self._template.user!r} ({what})",
                key="key",
            )
        if status == 403:
            return StorageMisconfigured(
                f"[storage] container: user {self._template.user!r} may not access container "
                f"{self.container!r} ({what}: 403 Forbidden)",
                key="container",
            )
        reason = f"{status} {exc.http_reason}" if status else str(exc)
        return StorageUnavailable(self._scrub(f"{what}: Swift answered {reason}"))

    def _scrub(self, message: str) -> str:
        return message.replace(self._secret, "***") if self._secret else message

    def _name(self, path: str) -> str:
        return self.prefix + path

    # -- the Storage interface -------------------------------------------------------------

    def check(self) -> None:
        """Log in (one attempt, no retries) and create the container if it does not exist.

        Raises StorageMisconfigured (key ``key`` for refused credentials,
        ``auth_url`` for an auth URL that is not one, ``container`` for a
        container the user may not use) or StorageUnavailable naming the
        auth_url when it cannot be reached. The segment container is created
        on the first large upload.
        """
        conn = self._copy_template(retries=0)
        auth_url = self._template.authurl
        try:
            try:
                conn.head_container(self.container)
            except ClientException as exc:
                if exc.http_status != 404:
                    raise
                conn.put_container(self.container)
        except ClientException as exc:
            status = exc.http_status
            if not conn.token and status and 400 <= status < 500 and status != 401:
                raise StorageMisconfigured(
                    f"[storage] auth_url: {auth_url} answered the login with {status} "
                    f"{exc.http_reason}; is it the Swift auth endpoint?",
                    key="auth_url",
                ) from None
            raise self._client_error(exc, f"checking container {self.container!r}") from None
        except _TRANSPORT_ERRORS as exc:
            where = (
                f"the storage URL {conn.url} (from auth_url {auth_url})"
                if conn.token
                else f"auth_url {auth_url}"
            )
            raise StorageUnavailable(self._scrub(f"[storage] cannot reach {where}: {exc}")) from None
        finally:
            conn.close()
        if not self._template.token:  # let the threads' connections start from this login
            self._template.url, self._template.token = conn.url, conn.token

    def _put(self, path: str, local_file: BinaryIO, headers: ObjectHeaders) -> None:
        """Store the file; larger than ``segment_size`` it becomes a Static Large Object.

        A stream whose size cannot be found by seeking is spooled to a
        temporary file first. Metadata keys come back from ``metadata()``
        lower-cased, with ``_`` turned into ``-`` (Swift stores them as HTTP
        headers). Segments of an object this replaces are deleted afterwards.
        """
        name = self._name(path)
        http_headers = self._http_headers(headers)
        with _sized(local_file, path) as (f, size), self._errors(f"storing {path}"):
            if size > self.segment_size * MAX_SEGMENTS:
                raise StorageMisconfigured(
                    f"[storage] segment_size: {path} ({size} bytes) needs more than "
                    f"{MAX_SEGMENTS} segments of {self.segment_size} bytes",
                    key="segment_size",
                )
            replaced = self._segments_of(name)
            conn = self._conn()
            source = _Source(f)
            try:
                if size > self.segment_size:
                    self._put_slo(conn, name, source, size, http_headers)
                else:
                    conn.put_object(
                        self.container, name, contents=source, content_length=size, headers=http_headers
                    )
            except ClientException as exc:
                if exc.http_status == 404:
                    raise self._missing_container(" (check() creates it)") from None
                raise
            self._delete_segments(replaced)

    @staticmethod
    def _http_headers(headers: ObjectHeaders) -> dict[str, str]:
        """The PUT headers that give an object its type, Cache-Control and metadata."""
        http_headers = {"Content-Type": headers.content_type}
        if headers.cache_control:
            http_headers["Cache-Control"] = headers.cache_control
        for meta_key, value in headers.metadata.items():
            http_headers[f"X-Object-Meta-{meta_key}"] = value
        return http_headers

    def _ensure_segment_container(self, conn: Connection) -> None:
        if not self._segment_container_ready:
            conn.put_container(self.segment_container)
            self._segment_container_ready = True

    def _begin_upload(
        self, path: str | None, headers: ObjectHeaders, *, local_copy: str | None, size_hint: int | None
    ) -> Upload:
        """Segments sent while the body arrives, the manifest at completion (storage.swift_upload).

        The segments are named after the object's path, so a path not known yet
        falls back to the default writer (the file is sent at completion).
        """
        if path is None:
            return super()._begin_upload(path, headers, local_copy=local_copy, size_hint=size_hint)
        return SwiftUpload(self, path, headers, threshold=min(self.segment_size, SPOOL_IN_MEMORY))

    def _put_slo(self, conn: Connection, name: str, f: _Source, size: int, headers: dict[str, str]) -> None:
        """Upload the segments, then the manifest; on any failure delete the segments sent."""
        self._ensure_segment_container(conn)
        upload = f"{name}/{uuid.uuid4().hex}"
        manifest: list[dict[str, object]] = []
        try:
            offset = 0
            while offset < size:
                length = min(self.segment_size, size - offset)
                segment = f"{upload}/{len(manifest):08d}"
                etag = conn.put_object(self.segment_container, segment, contents=f, content_length=length)
                manifest.append(
                    {
                        "path": f"/{self.segment_container}/{segment}",
                        "etag": etag,
                        "size_bytes": length,
                    }
                )
                offset += length
            conn.put_object(
                self.container,
                name,
                contents=json.dumps(manifest),
                query_string="multipart-manifest=put",
                headers=headers,
            )
        except BaseException:
            self._delete_segments([str(s["path"]) for s in manifest])
            raise

    def _segments_of(self, name: str) -> list[str]:
        """The segment paths (``/container/object``) of the SLO at ``name``, if it is one."""
        conn = self._conn()
        try:
            headers = conn.head_object(self.container, name)
        except ClientException as exc:
            if exc.http_status == 404:
                return []
            raise
        if headers.get("x-static-large-object", "").lower() != "true":
            return []
        _, body = conn.get_object(self.container, name, query_string="multipart-manifest=get")
        own = f"/{self.segment_container}/{name}/"
        try:
            segments = [str(s.get("name", "")) for s in json.loads(body)]
        except (ValueError, TypeError, AttributeError):
            log.warning("unreadable manifest at %s/%s", self.container, name)
            return []
        return [s for s in segments if s.startswith(own)]

    def _delete_segments(self, paths: list[str]) -> None:
        """Best effort: a segment left behind costs space, never correctness."""
        conn = self._conn()
        for segment_path in paths:
            container, _, obj = segment_path.lstrip("/").partition("/")
            try:
                conn.delete_object(container, obj)
            except ClientException as exc:
                if exc.http_status != 404:
                    log.warning("could not delete segment %s: %s", segment_path, exc)
            except _TRANSPORT_ERRORS as exc:
                log.warning("could not delete segment %s: %s", segment_path, exc)

    def _open(self, path: str, start: int, stop: int | None) -> BinaryIO:
        """One GET, with a Range header for a range (a Static Large Object reads as one file)."""
        name = self._name(path)
        ranged = start != 0 or stop is not None
        headers = {"Range": range_header(start, stop)} if ranged else None
        with self._errors(f"reading {path}", path):
            try:
                answer, body = self._conn().get_object(
                    self.container, name, resp_chunk_size=CHUNK, headers=headers
                )
            except ClientException as exc:
                if exc.http_status == 416:
                    raise RangeNotSatisfiable(f"{path}: the range holds no byte of the object") from None
                raise
        span = parse_content_range(answer.get("content-range")) if ranged else None
        info = self._info_of(path, answer)
        if span:
            info = ObjectInfo(
                path=path,
                size=span[2],
                etag=info.etag,
                last_modified=info.last_modified,
                content_type=info.content_type,
            )
        reader = io.BufferedReader(
            StreamingReader(body, lambda: self._errors(f"reading {path}", path)), buffer_size=CHUNK
        )
        return set_read_info(reader, info, (span[0], span[1]) if span else None)

    def _stat(self, path: str) -> ObjectInfo:
        """Size, type and ETag from a HEAD; a Static Large Object's ETag is its manifest's."""
        with self._errors(f"reading {path}", path):
            headers = self._conn().head_object(self.container, self._name(path))
        return self._info_of(path, headers)

    def _info_of(self, path: str, headers: Mapping[str, str]) -> ObjectInfo:
        last_modified = headers.get("last-modified")
        return ObjectInfo(
            path=path,
            size=int(headers.get("content-length", 0)),
            etag=headers.get("etag", "").strip('"') or None,
            last_modified=email.utils.parsedate_to_datetime(last_modified) if last_modified else None,
            content_type=headers.get("content-type"),
        )

    def _metadata(self, path: str) -> dict[str, str]:
        """The object's metadata, keys lower-cased with ``-`` for ``_`` (see ``put``)."""
        with self._errors(f"reading {path}", path):
            headers = self._conn().head_object(self.container, self._name(path))
        return {k[len("x-object-meta-") :]: v for k, v in headers.items() if k.startswith("x-object-meta-")}

    def _delete(self, path: str) -> None:
        """Remove the object; for a Static Large Object its segments too."""
        name = self._name(path)
        conn = self._conn()
        with self._errors(f"deleting {path}"):
            try:
                headers = conn.head_object(self.container, name)
                if headers.get("x-static-large-object", "").lower() != "true":
                    conn.delete_object(self.container, name)
                    return
                conn.delete_object(
                    self.container,
                    name,
                    query_string="multipart-manifest=delete",
                    headers={"Accept": "application/json"},
                )
                # That DELETE answers 200 whatever happened: the HEAD must now find nothing.
                conn.head_object(self.container, name)
            except ClientException as exc:
                if exc.http_status == 404:
                    return
                raise
            raise StorageUnavailable(f"deleting {path}: Swift kept the large object's manifest")

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Page through the container listing (``marker``), yielding as pages arrive."""
        marker = ""
        conn = self._conn()
        while True:
            with self._errors(f"listing {prefix or '/'}"):
                try:
                    _, items = conn.get_container(
                        self.container,
                        prefix=self.prefix + prefix,
                        marker=marker,
                        limit=self._page_size,
                    )
                except ClientException as exc:
                    if exc.http_status == 404:
                        raise self._missing_container() from None
                    raise
            if not items:
                return
            for item in items:
                if "name" in item:
                    yield self._listed(item)
            marker = items[-1].get("name") or items[-1].get("subdir")

    def _listed(self, item: Mapping[str, object]) -> ObjectInfo:
        name = str(item["name"])
        modified = None
        if item.get("last_modified"):
            # Listings give microseconds; HEAD's Last-Modified rounds up to the second.
            modified = datetime.datetime.fromisoformat(str(item["last_modified"])).replace(tzinfo=_UTC)
            if modified.microsecond:
                modified = modified.replace(microsecond=0) + datetime.timedelta(seconds=1)
        etag = str(item.get("slo_etag") or item.get("hash") or "").strip('"')
        return ObjectInfo(
            path=name[len(self.prefix) :],
            size=int(str(item.get("bytes") or 0)),
            etag=etag or None,
            last_modified=modified,
            content_type=str(item["content_type"]) if item.get("content_type") else None,
        )

    def stale_temporaries(self, older_than: float) -> Iterator[Temporary]:
        """Segment groups (``<prefix><path>/<upload id>/``) no manifest uses, whose newest segment
        is older than ``older_than`` s: the segments of a killed large-object upload."""
        cutoff = datetime.datetime.now(_UTC) - datetime.timedelta(seconds=older_than)
        conn = self._conn()
        groups: dict[str, list[Mapping[str, object]]] = {}
        marker = ""
        while True:
            with self._errors("listing segments"):
                try:
                    _, items = conn.get_container(
                        self.segment_container, prefix=self.prefix, marker=marker, limit=self._page_size
                    )
                except ClientException as exc:
                    if exc.http_status == 404:  # no segment container: no large object ever started
                        return
                    raise
            if not items:
                break
            for item in items:
                group, slash, _ = str(item.get("name") or "").rpartition("/")
                if slash and "/" in group:
                    groups.setdefault(group, []).append(item)
            marker = str(items[-1].get("name") or "")
        for group, items in sorted(groups.items()):
            newest = max(self._listed(item).last_modified or cutoff for item in items)
            if newest >= cutoff:
                continue
            name, _, upload_id = group.rpartition("/")
            with self._errors("reading the manifest", name[len(self.prefix) :]):
                used = self._segments_of(name)
            if any(s.startswith(f"/{self.segment_container}/{group}/") for s in used):
                continue
            yield Temporary(
                name=f"{name[len(self.prefix) :]} (large-object segments {upload_id})",
                size=sum(int(str(item.get("bytes") or 0)) for item in items),
                started=newest,
                ref=[str(item["name"]) for item in items],
            )

    def remove_temporary(self, temporary: Temporary) -> None:
        conn = self._conn()
        for segment in temporary.ref:
            with self._errors("deleting segment", segment):
                try:
                    conn.delete_object(self.segment_container, segment)
                except ClientException as exc:
                    if exc.http_status != 404:
                        raise

    def _public_url(self, path: str) -> str | None:
        """``public_url`` + the object's name in the container (prefix included), URL-quoted."""
        if not self.base_url:
            return None
        return self.base_url + quote(self._name(path), safe="/")

    def _signed_url(self, path: str, expires_in: int) -> str | None:
        """A TempURL (the ``tempurl`` middleware) for GET, valid ``expires_in`` seconds.

        None without ``[storage] temp_url_key``. The key is set on the account
        (``X-Account-Meta-Temp-URL-Key``) the first time, so Swift can check it.
        """
        if not self.temp_url_key:
            return None
        from swiftclient.utils import generate_temp_url

        name = self._name(path)
        with self._errors("signing a URL for", path):
            conn = self._conn()
            if not conn.url:
                conn.url, conn.token = conn.get_auth()
            if not self._temp_url_key_set:
                conn.post_account({"X-Account-Meta-Temp-URL-Key": self.temp_url_key})
                self._temp_url_key_set = True
            parts = urlsplit(conn.url)
            object_path = f"{parts.path.rstrip('/')}/{self.container}/{quote(name, safe='/')}"
            signed = generate_temp_url(object_path, int(expires_in), self.temp_url_key, "GET")
        return f"{parts.scheme}://{parts.netloc}{signed}"

    def close(self) -> None:
        with self._lock:
            connections = list(self._connections)
            self._connections = weakref.WeakSet()
        self._local = threading.local()
        for conn in connections:
            conn.close()


class _SourceError(Exception):
    """Reading the caller's file failed (deliberately not an OSError: swiftclient retries those)."""


class _Source:
    """The file being stored, as swiftclient reads it (``read``, and ``tell``/``seek`` to retry)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f

    def read(self, size: int = -1) -> bytes:
        try:
            return self._f.read(size)
        except OSError as exc:
            raise _SourceError(exc.strerror or str(exc)) from None

    def tell(self) -> int:
        return self._f.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._f.seek(offset, whence)


@contextlib.contextmanager
def _sized(f: BinaryIO, path: str) -> Iterator[tuple[BinaryIO, int]]:
    """Yield a file positioned where ``f`` was and the number of bytes left in it.

    Seekable files are used as they are; anything else is first copied to a
    temporary file (in memory up to 8 MiB), so memory stays flat.
    """
    size = None
    try:
        pos = f.tell()
        size = f.seek(0, os.SEEK_END) - pos
        f.seek(pos)
    except (AttributeError, OSError, ValueError):
        size = None
    if size is not None:
        yield f, size
        return
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        try:
            shutil.copyfileobj(f, spool, CHUNK)
        except OSError as exc:
            raise StorageUnavailable(
                f"storing {path}: reading the file failed: {exc.strerror or exc}"
            ) from None
        size = spool.tell()
        spool.seek(0)
        yield spool, size  # type: ignore[misc]
