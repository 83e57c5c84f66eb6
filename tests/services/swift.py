"""A one-node OpenStack Swift on 127.0.0.1 for the tests (tempauth + s3api).

Uses the Debian packages ``swift swift-proxy swift-account swift-container
swift-object memcached`` (``scripts/install-test-deps`` installs them). Rings,
configuration, devices and logs all live in a temporary folder; each server is
started directly (``workers = 0``, so the PID held is the one serving) and
stopped by that PID. The object devices go on tmpfs (``/dev/shm``) when it
accepts the extended attributes Swift keeps metadata in, which lifts ext4's
~4 KB cap on an object's metadata.

The only file outside the temporary folder is ``/etc/swift/swift.conf``: Swift
always reads it from there. The packaged one is used as it is; where it is
missing, a minimal one (just a hash path suffix) is written, which a test
machine can accept.

``start_swift(workdir)`` works outside pytest too (benchmarks; ``with
start_swift(d) as swift: ...`` stops it); the session-scoped ``swift_service``
fixture (registered in ``tests/conftest.py``) wraps it.
"""

from __future__ import annotations

import atexit
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

try:
    import pytest
except ImportError:  # start_swift() alone, e.g. from a benchmark run without the test extra
    pytest = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Self  # 3.11+, only ever evaluated by type checkers

    import swiftclient.client

SWIFT_CONF = "/etc/swift/swift.conf"
#: Swift's Python modules import only under the system interpreter.
SYSTEM_PYTHON = "/usr/bin/python3"
SERVERS = ("account", "container", "object")
ACCOUNT, USER = "test", "tester"
REGION = "us-east-1"
PART_POWER = 8
STARTUP_TIMEOUT = 90.0  # a loaded 2-core machine (CI with -n 3) can take over 30 s
#: s3api before tempauth (it turns S3 signatures into tempauth identities); slo after both;
#: tempurl before tempauth (it authorises signed, expiring URLs of private objects).
PROXY_PIPELINE = " ".join(
    (
        "catch_errors gatekeeper healthcheck proxy-logging cache listing_formats",
        "tempurl s3api tempauth copy slo dlo proxy-logging proxy-server",
    )
)

_MINIMAL_SWIFT_CONF = """\
# Written by CloudPyPI's test setup (tests/services/swift.py): no swift.conf was installed.
[swift-hash]
swift_hash_path_suffix = cloudpypi-tests

[storage-policy:0]
name = Policy-0
default = yes
"""

_RING_SCRIPT = """\
import sys
from swift.common.ring import RingBuilder

swift_dir, part_power = sys.argv[1], int(sys.argv[2])
for arg in sys.argv[3:]:
    name, port = arg.split("=")
    builder = RingBuilder(part_power, 1, 1)
    builder.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1",
                     "port": int(port), "device": "d0", "weight": 1.0, "meta": ""})
    builder.rebalance()
    builder.get_ring().save(f"{swift_dir}/{name}.ring.gz")
"""


class SwiftStartError(RuntimeError):
    """The one-node Swift could not be started; the message carries the server's log tail."""


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen
    log: str

    def alive(self) -> bool:
        """Running, and not a zombie waiting to be reaped."""
        if self.popen.poll() is not None:
            return False
        return _proc_state(self.popen.pid) not in (None, "Z")

    def log_tail(self, lines: int = 25) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                tail = f.read().splitlines()[-lines:]
        except OSError:
            return "(no log)"
        return "\n".join(tail) or "(log is empty)"


@dataclass
class SwiftService:
    """A running one-node Swift; logs are in ``workdir``/log/<server>.log."""

    auth_url: str
    user: str
    key: str
    proxy_url: str
    storage_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret: str
    s3_region: str
    workdir: str
    startup_seconds: float = 0.0
    processes: list[_Process] = field(default_factory=list)
    _cleanup: list[str] = field(default_factory=list)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM each server by PID, SIGKILL what is still alive after ``timeout``.

        Also removes the tmpfs devices folder; ``workdir`` (configs, logs) is the
        caller's. Idempotent.
        """
        for proc in self.processes:
            if proc.alive():
                proc.popen.terminate()
        deadline = time.monotonic() + timeout
        for proc in self.processes:
            while proc.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.alive():
                proc.popen.kill()
                try:
                    proc.popen.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        self.processes = []
        for path in self._cleanup:
            shutil.rmtree(path, ignore_errors=True)
        self._cleanup = []

    def check_alive(self) -> None:
        """Raise SwiftStartError with the log tail of any server that has died."""
        for proc in self.processes:
            if not proc.alive():
                raise SwiftStartError(
                    f"swift {proc.name} (pid {proc.popen.pid}) died; log {proc.log}:\n" + proc.log_tail()
                )

    def connection(self, **kwargs: object) -> swiftclient.client.Connection:
        """A python-swiftclient Connection logged in as the test user (for test set-up)."""
        import swiftclient.client

        kwargs.setdefault("retries", 0)
        return swiftclient.client.Connection(authurl=self.auth_url, user=self.user, key=self.key, **kwargs)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_swift(workdir: str, *, tmpfs: bool = True) -> SwiftService:
    """Start memcached and the account, container, object and proxy servers under ``workdir``.

    Returns once a tempauth login succeeds and an object can be written and
    read back (typically in 3-5 s). Tries other ports if one was taken
    meanwhile. Raises SwiftStartError, naming the missing package or showing
    the log tail of the server that failed.
    """
    started = time.monotonic()
    _check_installed()
    _ensure_swift_conf()
    for attempt in range(3):
        try:
            service = _start_once(os.path.join(os.path.abspath(workdir), f"run{attempt}"), tmpfs)
        except SwiftStartError as exc:
            port_taken = "Address already in use" in str(exc) or "Could not bind" in str(exc)
            if port_taken and attempt < 2:
                continue
            raise
        service.startup_seconds = time.monotonic() - started
        return service
    raise AssertionError("unreachable")


def _start_once(workdir: str, tmpfs: bool) -> SwiftService:
    swift_dir = os.path.join(workdir, "etc")
    log_dir = os.path.join(workdir, "log")
    for d in (swift_dir, log_dir, os.path.join(workdir, "cache")):
        os.makedirs(d, exist_ok=True)
    cleanup: list[str] = []
    port = dict(zip(("proxy", "memcached", *SERVERS), _free_ports(5), strict=True))
    key = secrets.token_hex(12)
    try:
        _configure(workdir, swift_dir, port, key, _devices_folder(workdir, tmpfs, cleanup))
    except BaseException:
        for path in cleanup:
            shutil.rmtree(path, ignore_errors=True)
        raise

    proxy_url = f"http://127.0.0.1:{port['proxy']}"
    service = SwiftService(
        auth_url=f"{proxy_url}/auth/v1.0",
        user=f"{ACCOUNT}:{USER}",
        key=key,
        proxy_url=proxy_url,
        storage_url=f"{proxy_url}/v1/AUTH_{ACCOUNT}",
        s3_endpoint=proxy_url,
        s3_access_key=f"{ACCOUNT}:{USER}",
        s3_secret=key,
        s3_region=REGION,
        workdir=workdir,
        _cleanup=cleanup,
    )
    try:
        memcached = ["memcached", "-l", "127.0.0.1", "-p", str(port["memcached"]), "-U", "0"]
        memcached += ["-m", "64", "-t", "1"]
        if os.geteuid() == 0:
            memcached += ["-u", "root"]
        service.processes.append(_spawn("memcached", memcached, log_dir))
        for name in (*SERVERS, "proxy"):
            conf = os.path.join(swift_dir, f"{name}-server.conf")
            cmd = [f"/usr/bin/swift-{name}-server", conf, "-v"]
            service.processes.append(_spawn(f"{name}-server", cmd, log_dir))
        _wait_ready(service, port)
    except BaseException:
        service.stop()
        raise
    atexit.register(service.stop)
    return service


def _configure(workdir: str, swift_dir: str, port: dict[str, int], key: str, devices: str) -> None:
    """Write the rings and the four servers' configuration files."""
    os.makedirs(os.path.join(devices, "d0"), exist_ok=True)
    user = pwd.getpwuid(os.geteuid()).pw_name
    _build_rings(swift_dir, {name: port[name] for name in SERVERS})
    for name in SERVERS:
        _write(
            os.path.join(swift_dir, f"{name}-server.conf"),
            _backend_conf(name, port[name], devices, swift_dir, workdir, user),
        )
    _write(
        os.path.join(swift_dir, "proxy-server.conf"),
        _proxy_conf(port["proxy"], port["memcached"], swift_dir, workdir, user, key),
    )


def _check_installed() -> None:
    needed = [f"/usr/bin/swift-{n}-server" for n in (*SERVERS, "proxy")] + [SYSTEM_PYTHON]
    missing = [p for p in needed if not os.access(p, os.X_OK)]
    if shutil.which("memcached") is None:
        missing.append("memcached")
    if missing:
        raise SwiftStartError(
            f"Swift test service: missing {', '.join(missing)}; "
            "run scripts/install-test-deps (as root) to install the Debian packages"
        )


def _ensure_swift_conf() -> None:
    if os.path.exists(SWIFT_CONF):
        return
    try:
        os.makedirs(os.path.dirname(SWIFT_CONF), exist_ok=True)
        _write(SWIFT_CONF, _MINIMAL_SWIFT_CONF)
    except OSError as exc:
        raise SwiftStartError(
            f"Swift reads {SWIFT_CONF}, which is missing and cannot be created ({exc.strerror}); "
            "install the 'swift' Debian package or create it with a [swift-hash] section"
        ) from None


def _devices_folder(workdir: str, tmpfs: bool, cleanup: list[str]) -> str:
    """A tmpfs folder when /dev/shm takes large user xattrs, else one in ``workdir``."""
    if tmpfs and os.path.isdir("/dev/shm"):
        try:
            folder = tempfile.mkdtemp(prefix="cloudpypi-swift-", dir="/dev/shm")
        except OSError:
            folder = None
        if folder:
            cleanup.append(folder)
            probe = os.path.join(folder, "probe")
            try:
                with open(probe, "wb"):
                    pass
                os.setxattr(probe, "user.swift.metadata", b"x" * 16384)
                os.unlink(probe)
                return folder
            except OSError:
                pass
    return os.path.join(workdir, "devices")


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _build_rings(swift_dir: str, ports: dict[str, int]) -> None:
    args = [f"{name}={p}" for name, p in ports.items()]
    result = subprocess.run(
        [SYSTEM_PYTHON, "-c", _RING_SCRIPT, swift_dir, str(PART_POWER), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise SwiftStartError(f"building the Swift rings failed:\n{result.stderr[-2000:]}")


def _common(port: int, swift_dir: str, workdir: str, user: str, log_name: str) -> str:
    return f"""\
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = 0
user = {user}
swift_dir = {swift_dir}
log_name = {log_name}
log_level = INFO
log_address = {os.path.join(workdir, "no-syslog")}
bind_timeout = 3
recon_cache_path = {os.path.join(workdir, "cache")}
"""


def _backend_conf(name: str, port: int, devices: str, swift_dir: str, workdir: str, user: str) -> str:
    return (
        _common(port, swift_dir, workdir, user, f"{name}-server")
        + f"""\
devices = {devices}
mount_check = false
disable_fallocate = true

[pipeline:main]
pipeline = healthcheck {name}-server

[filter:healthcheck]
use = egg:swift#healthcheck

[app:{name}-server]
use = egg:swift#{name}
"""
    )


def _proxy_conf(port: int, memcached_port: int, swift_dir: str, workdir: str, user: str, key: str) -> str:
    return (
        _common(port, swift_dir, workdir, user, "proxy-server")
        + f"""\

[pipeline:main]
pipeline = {PROXY_PIPELINE}

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true
error_suppression_interval = 0

[filter:s3api]
use = egg:swift#s3api
location = {REGION}

[filter:tempurl]
use = egg:swift#tempurl

[filter:tempauth]
use = egg:swift#tempauth
user_{ACCOUNT}_{USER} = {key} .admin

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:{memcached_port}

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo

[filter:dlo]
use = egg:swift#dlo
"""
    )


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _spawn(name: str, cmd: list[str], log_dir: str) -> _Process:
    log = os.path.join(log_dir, f"{name}.log")
    with open(log, "ab") as out:
        popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd="/")
    return _Process(name, popen, log)


def _wait_ready(service: SwiftService, port: dict[str, int]) -> None:
    """Wait for every port to listen, a tempauth login, and one object written and read back."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    pending = dict(port)
    last_error = ""
    while pending:
        service.check_alive()
        for name, p in list(pending.items()):
            try:
                socket.create_connection(("127.0.0.1", p), timeout=0.5).close()
                del pending[name]
            except OSError as exc:
                last_error = f"{name} on port {p}: {exc}"
        if pending:
            if time.monotonic() > deadline:
                raise SwiftStartError(f"Swift did not start in {STARTUP_TIMEOUT:.0f} s: {last_error}")
            time.sleep(0.05)
    while True:
        service.check_alive()
        try:
            _probe(service)
            return
        except (OSError, urllib.error.URLError, _ProbeFailed) as exc:
            last_error = str(exc)
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}:\n{p.log_tail(10)}" for p in service.processes)
            raise SwiftStartError(
                f"Swift did not become ready in {STARTUP_TIMEOUT:.0f} s: {last_error}\n{logs}"
            )
        time.sleep(0.1)


class _ProbeFailed(Exception):
    pass


def _probe(service: SwiftService) -> None:
    """Log in with tempauth, then create, write, read and remove a probe container."""
    auth = urllib.request.Request(
        service.auth_url, headers={"X-Auth-User": service.user, "X-Auth-Key": service.key}
    )
    with urllib.request.urlopen(auth, timeout=5) as resp:
        token = resp.headers.get("X-Auth-Token")
        if resp.status != 200 or not token:
            raise _ProbeFailed(f"auth answered {resp.status} without a token")
    base = f"{service.storage_url}/startup-probe"
    for method, url, data in (
        ("PUT", base, None),
        ("PUT", f"{base}/probe", b"ok"),
        ("GET", f"{base}/probe", None),
        ("DELETE", f"{base}/probe", None),
        ("DELETE", base, None),
    ):
        req = urllib.request.Request(url, data=data, method=method, headers={"X-Auth-Token": token})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            raise _ProbeFailed(f"{method} {url} answered {exc.code}") from None
        if method == "GET" and body != b"ok":
            raise _ProbeFailed(f"probe object read back as {body!r}")


def _proc_state(pid: int) -> str | None:
    """The process state letter from /proc (``Z`` for a zombie), or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


if pytest is not None:

    @pytest.fixture(scope="session")
    def swift_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwiftService]:
        """A one-node Swift for the whole test session, stopped at its end."""
        service = start_swift(str(tmp_path_factory.mktemp("swift")))
        try:
            yield service
        finally:
            service.stop()
