"""The measurements: wrk runs, timed twine uploads with the server's peak RSS, downloads.

Peak RSS is VmHWM from /proc/PID/status, summed over the server's process
tree (workers included). The high-water mark is reset before each upload
(``echo 5 > /proc/PID/clear_refs``), so the figure is the peak during that
upload and not since the process started; where the reset is refused, a
sampler's highest VmRSS is used instead.
"""

from __future__ import annotations

import os
import re
import resource
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass

from benchmarks import peers
from benchmarks.procs import ProcessError, run, tree
from benchmarks.servers import Server, twine

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Requests/sec, the 50 % and 99 % latencies, and errors (non-2xx/3xx and socket) from wrk."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    total = re.search(r"(\d+) requests in", output)
    if not (rps and p50 and p99 and total):
        raise ProcessError(f"unexpected wrk output:\n{output}")
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if sock:
        # Read errors are counted when a server closes a connection (gunicorn's sync workers
        # do after every response); only connect/write errors and timeouts are failures.
        errors += int(sock.group(1)) + int(sock.group(3)) + int(sock.group(4))
    return WrkResult(float(rps.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), int(total.group(1)), errors)


def wrk(url: str, *, seconds: int, threads: int = 2, connections: int = 16) -> WrkResult:
    """One wrk run against ``url`` (Accept: text/html, as pip's older versions send)."""
    out = run(
        [
            peers.which("wrk") or "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-H",
            "Accept: text/html",
            url,
        ],
        timeout=seconds + 60,
    )
    return parse_wrk(out.stdout)


# -- memory --------------------------------------------------------------------
def _status(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS of ``pid`` in kB (empty if it is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def rss_mb(roots: Iterable[int]) -> float:
    """The summed current RSS of the trees under ``roots``, in MB."""
    return sum(_status(p).get("VmRSS", 0) for r in roots for p in tree(r)) / 1024


class PeakRSS:
    """Peak RSS (MB) of the process trees under ``roots`` while the ``with`` block runs."""

    def __init__(self, roots: Iterable[int], interval: float = 0.05) -> None:
        self.roots = list(roots)
        self.interval = interval
        self.peak_by_pid: dict[int, int] = {}
        self.reset_ok = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.peak_mb = 0.0
        self.before_mb = 0.0

    def _pids(self) -> list[int]:
        return [p for r in self.roots for p in tree(r)]

    def _record(self) -> None:
        for pid in self._pids():
            st = _status(pid)
            if not st:
                continue
            seen = st.get("VmHWM", 0) if self.reset_ok else st.get("VmRSS", 0)
            self.peak_by_pid[pid] = max(self.peak_by_pid.get(pid, 0), seen)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._record()

    def __enter__(self) -> PeakRSS:
        self.before_mb = rss_mb(self.roots)
        for pid in self._pids():
            try:
                with open(f"/proc/{pid}/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                self.reset_ok = False
        self._record()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._record()
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak_mb = sum(self.peak_by_pid.values()) / 1024


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(roots: Iterable[int]) -> float:
    """User + system CPU seconds so far of the live processes in the trees under ``roots``."""
    total = 0
    for pid in (p for r in roots for p in tree(r)):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / _TICK


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- uploads and downloads -------------------------------------------------------
@dataclass
class UploadResult:
    seconds: float
    peak_rss_mb: float
    rss_before_mb: float
    #: CPU seconds during the upload: twine's, the server's processes', its services' (moto).
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    services_cpu_s: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def timed_upload(server: Server, path: str) -> UploadResult:
    """Wall time of one ``twine upload`` of ``path``, the server's peak RSS meanwhile, and the CPU
    time each side spent (the measure that load on the shared cores disturbs least)."""
    roots = [p.pid for p in server.measured]
    with PeakRSS(roots) as peak:
        client, own, services = _children_cpu(), cpu_seconds(roots), cpu_seconds(server.services)
        started = time.perf_counter()
        twine(server, [path], timeout=1200)
        seconds = time.perf_counter() - started
        client = _children_cpu() - client
        own, services = cpu_seconds(roots) - own, cpu_seconds(server.services) - services
    return UploadResult(seconds, peak.peak_mb, peak.before_mb, client, own, services)


def download_mbps(url: str, *, times: int = 5, timeout: float = 600) -> float:
    """Throughput (MB/s, 10^6 bytes) of ``times`` back-to-back downloads of ``url`` (curl into /dev/null)."""
    fmt = "%{size_download} %{time_total}\\n"
    out = run(["curl", "-sS", "--fail", *(["-o", "/dev/null", "-w", fmt, url] * times)], timeout=timeout)
    size = seconds = 0.0
    for line in out.stdout.split("\n"):
        if line.strip():
            s, t = line.split()
            size, seconds = size + float(s), seconds + float(t)
    if seconds <= 0 or not size:
        raise ProcessError(f"curl downloaded nothing from {url}: {out.stdout!r}")
    return size / seconds / 1e6


def fresh_count(server: Server, project: str, filename: str, *, requests: int = 20) -> int:
    """Of ``requests`` GETs of the project page (each a new connection), how many list ``filename``."""
    url = server.project_url(project)
    seen = 0
    for _ in range(requests):
        req = urllib.request.Request(url, headers={"Accept": "text/html", "Connection": "close"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                if filename.encode() in r.read():
                    seen += 1
        except OSError:
            pass
    return seen


def loadavg() -> float:
    """The machine's 1-minute load average (other work on the machine skews every figure)."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def _cpu_ticks() -> dict[int, tuple[str, int]]:
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.find("(") + 1 : text.rfind(")")]
        fields = text.rpartition(")")[2].split()
        out[int(entry)] = (name, int(fields[11]) + int(fields[12]))
    return out


def busy_processes(window: float = 1.0, threshold: float = 10.0) -> tuple[float, list[str]]:
    """CPU used by processes outside this benchmark over ``window`` s: (total % of a core, the busy ones)."""
    first = _cpu_ticks()
    time.sleep(window)
    second = _cpu_ticks()
    hz = os.sysconf("SC_CLK_TCK")
    ours = set(tree(os.getpid()))
    total, busy = 0.0, []
    for pid, (name, t) in second.items():
        if pid in ours or pid not in first:
            continue
        pct = 100.0 * (t - first[pid][1]) / hz / window
        total += pct
        if pct >= threshold:
            busy.append(f"{name}[{pid}] {pct:.0f}%")
    return total, busy


def wait_quiet(*, max_wait: float, threshold: float = 25.0, window: float = 1.0) -> tuple[float, list[str]]:
    """Wait (at most ``max_wait`` s) until other processes use less than ``threshold`` % of a core.

    Returns the seconds waited and what was still busy (empty when the machine went quiet).
    """
    started = time.monotonic()
    while True:
        total, busy = busy_processes(window)
        if total < threshold:
            return time.monotonic() - started, []
        if time.monotonic() - started >= max_wait:
            return time.monotonic() - started, busy or [f"others {total:.0f}%"]
