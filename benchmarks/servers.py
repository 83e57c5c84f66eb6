"""Start and stop each server under test, and load the data set through its upload API.

Every server listens on 127.0.0.1 on a free port, keeps its data under
``.work/run/NAME/`` (removed when it stops) and is stopped by PID.
``Server.measured`` are the processes whose memory counts as the server's;
services it needs (moto for S3, PostgreSQL) are not counted.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from benchmarks import ROOT, WORK, peers
from benchmarks.dataset import BENCH_PROJECT, Dataset
from benchmarks.procs import Proc, ProcessError, run, spawn, stop, wait_http

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.services.live_server import free_port, write_config  # noqa: E402

RUN = os.path.join(WORK, "run")
TWINE = os.path.join(os.path.dirname(sys.executable), "twine")
USER, PASSWORD = "bench", "bench-password"
#: Concurrent twine processes used to load the small wheels.
LOADERS = 4
#: The bucket of the servers on moto's S3.
BUCKET = "cloudpypi-bench"


@dataclass
class Server:
    name: str
    #: "cloudpypi", "peer" or "limit".
    kind: str
    url: str
    upload_url: str
    simple_url: str
    measured: list[Proc]
    cleanup: list[Callable[[], None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    user: str = USER
    password: str = PASSWORD
    #: Uploads a group of files for ``load`` (default: twine); None: twine.
    uploader: Callable[[list[str]], object] | None = None
    #: twine processes (or uploader calls) running at once in ``load``.
    loaders: int = LOADERS
    #: PIDs of the services the server needs on this machine (moto): their CPU time is measured
    #: during uploads, their memory is not counted.
    services: list[int] = field(default_factory=list)

    def project_url(self, name: str = BENCH_PROJECT) -> str:
        return f"{self.simple_url}{name}/"

    def stop(self) -> None:
        for proc in self.measured:
            stop(proc)
        for fn in reversed(self.cleanup):
            try:
                fn()
            except Exception as exc:  # cleanup must go on
                print(f"  cleanup of {self.name} failed: {exc}", file=sys.stderr)


# -- uploading -------------------------------------------------------------
def twine(server: Server, files: list[str], *, timeout: float = 900) -> subprocess.CompletedProcess:
    """``twine upload`` of ``files`` to the server; ProcessError when twine fails."""
    return run(
        [
            TWINE,
            "upload",
            "--repository-url",
            server.upload_url,
            "-u",
            server.user,
            "-p",
            server.password,
            "--disable-progress-bar",
            "--non-interactive",
            *files,
        ],
        timeout=timeout,
        env={"TWINE_CERT": "", "NO_COLOR": "1"},
    )


def load(server: Server, data: Dataset) -> float:
    """Upload every small wheel (``server.loaders`` uploaders at once); the seconds it took."""
    groups: list[list[str]] = [[] for _ in range(server.loaders)]
    for i, files in enumerate(data.small_by_project().values()):
        groups[i % server.loaders].extend(files)
    upload = server.uploader or (lambda files: twine(server, files))
    started = time.perf_counter()
    with ThreadPoolExecutor(server.loaders) as pool:
        for result in pool.map(upload, groups):
            del result
    return time.perf_counter() - started


# -- CloudPyPI -------------------------------------------------------------
def _cloudpypi(
    name: str,
    folder: str,
    *,
    database: str,
    storage: dict[str, str],
    cleanup: list[Callable[[], None]],
    notes: list[str],
    workers: str = "auto",
) -> Server:
    """CloudPyPI under ``cloudpypi serve``; ``workers = auto`` (one process per core, as the README
    advises for a busy index) unless a benchmark measures one process."""
    config = os.path.join(folder, "config.ini")
    write_config(
        config,
        {
            "server": {"data_dir": os.path.join(folder, "data"), "workers": workers},
            "webui": {"max_upload_size": "2G"},
            "database": {"url": database},
            "storage": storage,
        },
    )
    try:
        run(
            [sys.executable, "-m", "pypi.cli", "adduser", USER, "--password", PASSWORD, "--config", config],
            timeout=120,
            cwd=ROOT,
        )
    except ProcessError as exc:  # a database measured again (--database) has the user already
        if "already taken" not in str(exc):
            raise
    port = free_port()
    proc = spawn(
        name,
        [
            sys.executable,
            "-m",
            "pypi.cli",
            "serve",
            "--config",
            config,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        log_dir=folder,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/simple/", proc, timeout=60)
    return Server(name, "cloudpypi", url, url + "/legacy/", url + "/simple/", [proc], cleanup, notes)


def _postgres(cleanup: list[Callable[[], None]]) -> str:
    from tests.services.postgres import start_postgres

    pg = start_postgres()
    cleanup.append(pg.stop)
    url = pg.new_database()

    def drop() -> None:
        import psycopg2

        conn = psycopg2.connect(pg.admin_url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
        conn.close()

    cleanup.append(drop)
    return url


def start_cloudpypi_sqlite_local(name: str, folder: str, workers: str = "auto") -> Server:
    cleanup: list[Callable[[], None]] = []
    return _cloudpypi(
        name,
        folder,
        database="sqlite:///" + os.path.join(folder, "data", "db.sqlite3"),
        storage={"backend": "local"},
        cleanup=cleanup,
        notes=[],
        workers=workers,
    )


def start_cloudpypi_pg_local(name: str, folder: str) -> Server:
    cleanup: list[Callable[[], None]] = []
    try:
        return _cloudpypi(
            name, folder, database=_postgres(cleanup), storage={"backend": "local"}, cleanup=cleanup, notes=[]
        )
    except BaseException:
        _run_all(cleanup)
        raise


def start_cloudpypi_pg_s3(name: str, folder: str) -> Server:
    from tests.services.moto_s3 import MotoServer

    cleanup: list[Callable[[], None]] = []
    try:
        database = _postgres(cleanup)
        moto = MotoServer().start()
        cleanup.append(moto.close)
        client = moto.client()
        client.create_bucket(Bucket="cloudpypi-bench")
        client.close()
        storage = {
            "backend": "s3",
            "bucket": "cloudpypi-bench",
            "endpoint_url": moto.endpoint_url,
            "region": "us-east-1",
            "access_key_id": moto.access_key_id,
            "secret_access_key": moto.secret_access_key,
        }
        server = _cloudpypi(
            name,
            folder,
            database=database,
            storage=storage,
            cleanup=cleanup,
            notes=["moto's server (the object store) is not counted in the server's RSS"],
        )
        server.services.append(moto.process.pid)
        return server
    except BaseException:
        _run_all(cleanup)
        raise


def _run_all(cleanup: list[Callable[[], None]]) -> None:
    for fn in reversed(cleanup):
        try:
            fn()
        except Exception:
            pass


# -- pypiserver --------------------------------------------------------------
def _pypiserver_app(packages: str) -> str:
    # No authentication (-P . -a .): pypiserver checks no password on upload.
    return f"pypiserver:app(root={packages!r}, password_file='.', authenticate=[])"


def start_pypiserver_gevent(name: str, folder: str) -> Server:
    """As pypiserver's container runs it: gunicorn, one gevent worker, preload_app."""
    packages = os.path.join(folder, "packages")
    os.makedirs(packages, exist_ok=True)
    port = free_port()
    conf = os.path.join(folder, "gunicorn.conf.py")
    with open(conf, "w") as f:
        f.write('errorlog = "-"\npreload_app = True\nworkers = 1\nworker_class = "gevent"\n')
    proc = spawn(
        name,
        [
            peers.venv_bin("pypiserver", "gunicorn"),
            "-c",
            conf,
            "-b",
            f"127.0.0.1:{port}",
            _pypiserver_app(packages),
        ],
        log_dir=folder,
        cwd=folder,
    )
    server = _pypiserver(
        name,
        port,
        proc,
        [
            "gunicorn, 1 gevent worker, preload_app (the container's gunicorn.conf.py), watchdog listing "
            "cache (the container's requirements); no upload authentication",
            "small wheels loaded by one twine process: with 2 or 4 at once, responses broke off "
            "(IncompleteRead) and twine's retry got 400 'already exists'",
        ],
    )
    server.loaders = 1
    return server


def start_pypiserver_4sync(name: str, folder: str) -> Server:
    """As pypiserver's README suggests for gunicorn: 4 sync workers."""
    packages = os.path.join(folder, "packages")
    os.makedirs(packages, exist_ok=True)
    port = free_port()
    proc = spawn(
        name,
        [
            peers.venv_bin("pypiserver-plain", "gunicorn"),
            "-w",
            "4",
            "--timeout",
            "600",
            "-b",
            f"127.0.0.1:{port}",
            _pypiserver_app(packages),
        ],
        log_dir=folder,
        cwd=folder,
    )
    return _pypiserver(
        name,
        port,
        proc,
        [
            "`gunicorn -w4 'pypiserver:app(...)'` (its README), pypiserver "
            "installed without the cache extra, --timeout 600 (the default "
            "30 s can kill a worker mid-upload); no upload authentication"
        ],
    )


def _pypiserver(name: str, port: int, proc: Proc, notes: list[str]) -> Server:
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/simple/", proc, timeout=60)
    return Server(name, "peer", url, url + "/", url + "/simple/", [proc], [], notes)


# -- devpi -------------------------------------------------------------------
def start_devpi(name: str, folder: str) -> Server:
    """devpi-server with its defaults (waitress, 50 threads), an index bench/dev with no bases."""
    serverdir = os.path.join(folder, "server")
    clientdir = os.path.join(folder, "client")
    run(
        [
            peers.venv_bin("devpi", "devpi-init"),
            "--serverdir",
            serverdir,
            "--no-root-pypi",
            "--root-passwd",
            "root-password",
        ],
        timeout=120,
    )
    port = free_port()
    # The 1 GiB wheel plus its form does not fit devpi's default 1 GiB body limit.
    proc = spawn(
        name,
        [
            peers.venv_bin("devpi", "devpi-server"),
            "--serverdir",
            serverdir,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-request-body-size",
            str(4 * 1024**3),
        ],
        log_dir=folder,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/+api", proc, timeout=90)
        devpi = [peers.venv_bin("devpi", "devpi"), "--clientdir", clientdir]
        run([*devpi, "use", url], timeout=60)
        run([*devpi, "login", "root", "--password", "root-password"], timeout=60)
        run([*devpi, "user", "-c", USER, f"password={PASSWORD}", "email=bench@example.invalid"], timeout=60)
        run([*devpi, "login", USER, "--password", PASSWORD], timeout=60)
        run([*devpi, "index", "-c", "dev", "bases=", "volatile=False"], timeout=60)
        run([*devpi, "use", f"{USER}/dev"], timeout=60)
    except BaseException:
        stop(proc)
        raise
    index = f"{url}/{USER}/dev"
    counter = iter(range(1_000_000))

    def devpi_upload(files: list[str]) -> None:
        # devpi upload authenticates with the login's token: twine's Basic auth costs devpi an
        # argon2 password check (~0.2 s of CPU) on every one of the 1,000 uploads.
        group = os.path.join(folder, f"upload-{next(counter)}")
        os.makedirs(group)
        for path in files:
            os.link(path, os.path.join(group, os.path.basename(path)))
        run([*devpi, "upload", "--from-dir", group], timeout=1800)
        shutil.rmtree(group, ignore_errors=True)

    return Server(
        name,
        "peer",
        url,
        index + "/",
        index + "/+simple/",
        [proc],
        [],
        [
            "devpi-server defaults except --max-request-body-size 4 GiB (default 1 GiB); "
            "small wheels loaded with `devpi upload --from-dir`, large ones with twine"
        ],
        uploader=devpi_upload,
    )


# -- the limits --------------------------------------------------------------
NGINX_CONF = """\
worker_processes auto;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
user root;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    types {{ text/html html; }}
    client_body_temp_path {folder}/tmp;
    proxy_temp_path {folder}/tmp;
    fastcgi_temp_path {folder}/tmp;
    uwsgi_temp_path {folder}/tmp;
    scgi_temp_path {folder}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {folder}/www;
        index index.html;
    }}
}}
"""


def start_nginx(name: str, folder: str, *, pages: dict[str, bytes], files: list[str]) -> Server:
    """nginx serving ``pages`` (URL path -> body) and ``files`` (under /files/) as static files."""
    www = os.path.join(folder, "www")
    os.makedirs(os.path.join(folder, "tmp"), exist_ok=True)
    for path, body in pages.items():
        target = os.path.join(www, path.strip("/"), "index.html")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(body)
    os.makedirs(os.path.join(www, "files"), exist_ok=True)
    for path in files:
        link = os.path.join(www, "files", os.path.basename(path))
        if not os.path.exists(link):
            os.symlink(path, link)
    port = free_port()
    conf = os.path.join(folder, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(folder=folder, port=port))
    nginx = peers.which("nginx") or "nginx"
    run([nginx, "-t", "-c", conf, "-p", folder], timeout=30)
    proc = spawn(name, [nginx, "-c", conf, "-p", folder], log_dir=folder)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/simple/", proc, timeout=30)
    return Server(
        name,
        "limit",
        url,
        "",
        url + "/simple/",
        [proc],
        [],
        ["static copies of the pages, sendfile on, worker_processes auto"],
    )


def _floor(name: str, folder: str, args: list[str], note: str, **server: object) -> Server:
    """``benchmarks.floor`` on a free port with ``args``: an upload endpoint that does no more
    than ``note`` says."""
    port = free_port()
    proc = spawn(name, [sys.executable, "-m", "benchmarks.floor", str(port), *args], log_dir=folder, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/", proc, timeout=30)
    return Server(name, "limit", url, url + "/legacy/", url + "/simple/", [proc], notes=[note], **server)


def start_floor(name: str, folder: str) -> Server:
    """The twine floor: an HTTP endpoint that reads and discards the upload body."""
    return _floor(name, folder, [], "reads the body in 1 MiB blocks and discards it")


def start_s3_floor(name: str, folder: str) -> Server:
    """The S3 floor: an endpoint that streams the raw body into moto as a multipart upload."""
    from tests.services.moto_s3 import MotoServer

    moto = MotoServer().start()
    try:
        client = moto.client()
        client.create_bucket(Bucket=BUCKET)
        client.close()
        return _floor(
            name,
            folder,
            ["--s3", moto.endpoint_url, BUCKET],
            "the raw body streamed to moto as a multipart upload (8 MiB parts, 4 in flight), then completed",
            cleanup=[moto.close],
            services=[moto.process.pid],
        )
    except BaseException:
        moto.close()
        raise


# -- registry ----------------------------------------------------------------
#: name -> (kind, start function). The order is the run order and the table's column order.
SERVERS: dict[str, tuple[str, Callable[[str, str], Server]]] = {
    "cloudpypi-sqlite-local": ("cloudpypi", start_cloudpypi_sqlite_local),
    "cloudpypi-pg-local": ("cloudpypi", start_cloudpypi_pg_local),
    "cloudpypi-pg-s3": ("cloudpypi", start_cloudpypi_pg_s3),
    "pypiserver-gevent": ("peer", start_pypiserver_gevent),
    "pypiserver-4sync": ("peer", start_pypiserver_4sync),
    "devpi": ("peer", start_devpi),
}


@contextmanager
def started(name: str, start: Callable[..., Server], **kwargs) -> Iterator[Server]:
    """A server running in a fresh folder; stopped and its folder removed afterwards."""
    folder = os.path.join(RUN, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    server = start(name, folder, **kwargs)
    try:
        yield server
    finally:
        server.stop()
        keep = os.path.join(WORK, "logs", name)
        shutil.rmtree(keep, ignore_errors=True)
        os.makedirs(keep)
        for entry in os.listdir(folder):
            if entry.endswith(".log"):
                shutil.copy(os.path.join(folder, entry), keep)
        shutil.rmtree(folder, ignore_errors=True)


# -- reading pages -------------------------------------------------------------
def get(url: str, *, timeout: float = 30) -> bytes:
    req = urllib.request.Request(url, headers={"Accept": "text/html"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def file_url(server: Server, project: str, filename: str) -> str:
    """The absolute URL of ``filename`` as the server's /simple/<project>/ page links it."""
    page_url = server.project_url(project)
    body = get(page_url).decode("utf-8", "replace")
    for href in re.findall(r'href="([^"]+)"', body):
        href = html.unescape(href)
        if urllib.parse.urlsplit(href).path.rsplit("/", 1)[-1] == filename:
            return urllib.parse.urljoin(page_url, href.split("#", 1)[0])
    raise LookupError(f"{filename} is not linked from {page_url}")
