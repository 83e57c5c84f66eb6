"""The whole run: install peers, build the data set, measure each server in turn, write the report.

One server runs at a time. A failing step is recorded (and shown in the
report) and the run goes on with the next step.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks import dataset, measure, peers, report, servers
from benchmarks.dataset import BENCH_PROJECT, FRESH_VERSION, Dataset
from benchmarks.servers import SERVERS, Server

LIMITS = ("twine-floor", "nginx")
ALL = (*LIMITS[:1], *SERVERS, LIMITS[1])


@dataclass
class Options:
    quick: bool = False
    only: tuple[str, ...] = ()
    repetitions: int = 3
    wrk_seconds: int = 10
    wrk_threads: int = 2
    wrk_connections: int = 16
    with_huge: bool = True
    #: Seconds the whole run may spend waiting for other processes to go quiet before a sample.
    quiet_budget: float = 240.0

    @classmethod
    def make(cls, *, quick: bool, only: tuple[str, ...]) -> Options:
        if quick:
            return cls(quick=True, only=only, repetitions=1, wrk_seconds=5, with_huge=False, quiet_budget=30)
        return cls(only=only)


class Log:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.0f} s] {message}", flush=True)


def _machine() -> str:
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // 1024 // 1024
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{os.cpu_count()} cores, {mem} GiB, Linux {platform.release()}, Python {platform.python_version()}"
    )


class Suite:
    def __init__(self, options: Options, log: Log) -> None:
        self.o = options
        self.log = log
        self.results: dict = {"meta": {}, "servers": {}}
        self.pages: dict[str, bytes] = {}
        self.quiet_left = options.quiet_budget

    def quiet(self, record: dict, what: str, max_wait: float = 20.0) -> None:
        """Wait (within the run's budget) for other processes to go quiet; note it if they did not."""
        waited, busy = measure.wait_quiet(max_wait=max(0.0, min(max_wait, self.quiet_left)), window=0.5)
        self.quiet_left -= max(0.0, waited - 0.5)
        if busy:
            record.setdefault("busy", []).append(f"{what}: {', '.join(busy[:4])}")

    # -- helpers -------------------------------------------------------------
    def _step(self, record: dict, what: str, fn: Callable[[], object]) -> object | None:
        try:
            return fn()
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            self.log(f"  {what} FAILED: {message.splitlines()[0][:300]}")
            record.setdefault("errors", {})[what] = message[:4000] + "\n" + traceback.format_exc()[-2000:]
            return None

    def _record(self, name: str, kind: str, server: Server | None = None) -> dict:
        record = {"kind": kind, "notes": list(server.notes) if server else [], "metrics": {}, "errors": {}}
        self.results["servers"][name] = record
        return record

    # -- the run ---------------------------------------------------------------
    def run(self) -> tuple[str, str, str]:
        o = self.o
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        selected = [n for n in ALL if not o.only or n in o.only]
        self.results["meta"] = {
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "quick": o.quick,
            "repetitions": o.repetitions,
            "wrk_seconds": o.wrk_seconds,
            "wrk_threads": o.wrk_threads,
            "wrk_connections": o.wrk_connections,
            "machine": _machine(),
            "selected": selected,
            "bench_project": BENCH_PROJECT,
        }
        self.log("peers: pypiserver, devpi (virtualenvs), nginx, wrk (apt)")
        self.results["meta"]["versions"] = peers.ensure_all(self.log)
        self.log("data set")
        data = dataset.build(repetitions=o.repetitions, with_huge=o.with_huge, log=self.log)
        self.results["meta"]["dataset"] = data.meta
        for name in selected:
            if name == "twine-floor":
                self.floor(data)
            elif name == "nginx":
                self.nginx(data)
            else:
                self.server(name, data)
            self.results["meta"]["elapsed_s"] = time.monotonic() - self.log.started
            report.write(self.results, stamp)
        self.results["meta"]["elapsed_s"] = time.monotonic() - self.log.started
        return report.write(self.results, stamp)

    def _uploads(self, server: Server, record: dict, data: Dataset, *, huge: bool = True) -> None:
        for key, label in (("bench-big", "200mb"), ("bench-huge", "1gib"))[: 2 if huge else 1]:
            for i, path in enumerate(data.large.get(key, [])):
                self.quiet(record, f"upload {label} #{i + 1}")
                result = self._step(
                    record, f"upload {label} #{i + 1}", lambda p=path: measure.timed_upload(server, p)
                )
                if result is None:
                    continue
                record["metrics"].setdefault(f"upload_{label}_s", []).append(result.seconds)
                record["metrics"].setdefault(f"upload_{label}_rss_mb", []).append(result.peak_rss_mb)
                for side in ("client", "server", "services"):
                    value = getattr(result, f"{side}_cpu_s")
                    record["metrics"].setdefault(f"upload_{label}_{side}_cpu_s", []).append(value)
                record.setdefault("rss_before_upload_mb", []).append(result.rss_before_mb)
                self.log(
                    f"  upload {label} #{i + 1}: {result.seconds:.2f} s, peak RSS "
                    f"{result.peak_rss_mb:.0f} MB (before {result.rss_before_mb:.0f} MB); CPU s: twine "
                    f"{result.client_cpu_s:.2f}, server {result.server_cpu_s:.2f}"
                    + (f", moto {result.services_cpu_s:.2f}" if server.services else "")
                    + f"; load {measure.loadavg():.1f}"
                )

    def _wrk(self, record: dict, prefix: str, url: str) -> None:
        self._step(record, f"{prefix} warm-up", lambda: measure.wrk(url, seconds=1))
        for i in range(self.o.repetitions):
            self.quiet(record, f"{prefix} #{i + 1}")
            result = self._step(
                record,
                f"{prefix} #{i + 1}",
                lambda: measure.wrk(
                    url,
                    seconds=self.o.wrk_seconds,
                    threads=self.o.wrk_threads,
                    connections=self.o.wrk_connections,
                ),
            )
            if result is None:
                continue
            m = record["metrics"]
            m.setdefault(f"{prefix}_rps", []).append(result.rps)
            m.setdefault(f"{prefix}_p50_ms", []).append(result.p50_ms)
            m.setdefault(f"{prefix}_p99_ms", []).append(result.p99_ms)
            m.setdefault(f"{prefix}_errors", []).append(result.errors)
            self.log(
                f"  {prefix} #{i + 1}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
                f"p99 {result.p99_ms:.2f} ms, {result.errors} errors"
            )
            if result.errors:
                record.setdefault("errors", {})[f"{prefix} #{i + 1}"] = (
                    f"{result.errors} of {result.requests} requests failed"
                )

    def _downloads(self, record: dict, url: str) -> None:
        self._step(record, "download warm-up", lambda: measure.download_mbps(url))
        for i in range(self.o.repetitions):
            self.quiet(record, f"download #{i + 1}")
            mbps = self._step(record, f"download #{i + 1}", lambda: measure.download_mbps(url))
            if mbps is not None:
                record["metrics"].setdefault("download_200mb_mbps", []).append(mbps)
                self.log(f"  download #{i + 1}: {mbps:,.0f} MB/s")

    # -- each kind of server ------------------------------------------------------
    def server(self, name: str, data: Dataset) -> None:
        kind, start = SERVERS[name]
        self.log(f"== {name}")
        record = self._record(name, kind)
        try:
            ctx = servers.started(name, start)
            server = ctx.__enter__()
        except Exception as exc:
            self.log(f"  start FAILED: {exc}")
            record["errors"]["start"] = str(exc)[:4000]
            return
        try:
            record["notes"] = list(server.notes)
            record["url"] = server.url
            seconds = self._step(record, "load", lambda: servers.load(server, data))
            if seconds is not None:
                record["metrics"]["load_small_s"] = [seconds]
                self.log(f"  loaded {len(data.small)} small wheels in {seconds:.1f} s")
            record["rss_idle_mb"] = measure.rss_mb(p.pid for p in server.measured)
            page = self._step(record, "project page", lambda: servers.get(server.project_url()))
            if page is not None:
                record["project_page_links"] = page.count(b"<a ")
                record["project_page_bytes"] = len(page)
                if kind == "cloudpypi" and "/simple/" not in self.pages:
                    self.pages[f"/simple/{BENCH_PROJECT}/"] = page
                    index = self._step(record, "index page", lambda: servers.get(server.simple_url))
                    if index is not None:
                        self.pages["/simple/"] = index
            self._wrk(record, "simple_project", server.project_url())
            self._wrk(record, "simple_index", server.simple_url)
            self._fresh(server, record, data)
            self._uploads(server, record, data)
            big = data.large["bench-big"][0]
            url = self._step(
                record,
                "find download URL",
                lambda: servers.file_url(server, "bench-big", os.path.basename(big)),
            )
            if url:
                self._downloads(record, url)
            record["rss_end_mb"] = measure.rss_mb(p.pid for p in server.measured)
        finally:
            ctx.__exit__(None, None, None)

    def _fresh(self, server: Server, record: dict, data: Dataset) -> None:
        """Upload a new version of the measured project, then count GETs that list it."""
        filename = os.path.basename(data.fresh)
        if self._step(record, "fresh upload", lambda: servers.twine(server, [data.fresh])) is None:
            return
        seen = measure.fresh_count(server, BENCH_PROJECT, filename)
        record["metrics"]["fresh_of_20"] = [seen]
        self.log(f"  {BENCH_PROJECT} {FRESH_VERSION} listed right after its upload by {seen} of 20 GETs")

    def floor(self, data: Dataset) -> None:
        self.log("== twine-floor")
        record = self._record("twine-floor", "limit")
        with servers.started("twine-floor", servers.start_floor) as server:
            record["notes"] = list(server.notes)
            self._uploads(server, record, data)
        for key in list(record["metrics"]):
            if key.endswith("_rss_mb"):
                del record["metrics"][key]
        if any(name.endswith("-s3") for name in self.results["meta"]["selected"]):
            self.s3_floor(data)

    def s3_floor(self, data: Dataset) -> None:
        """twine against an endpoint that streams the raw body into moto: what S3 on moto costs alone."""
        self.log(f"== {report.S3_FLOOR}")
        record = self._record(report.S3_FLOOR, "limit")
        with servers.started(report.S3_FLOOR, servers.start_s3_floor) as server:
            record["notes"] = list(server.notes)
            self._uploads(server, record, data, huge=False)
        for key in list(record["metrics"]):
            if key.endswith("_rss_mb"):
                del record["metrics"][key]

    def nginx(self, data: Dataset) -> None:
        self.log("== nginx")
        record = self._record("nginx", "limit")
        if not self.pages:
            self.pages = fallback_pages(data)
            record["notes"] = ["pages generated from the data set (no CloudPyPI ran)"]
        big = data.large["bench-big"][0]
        with servers.started("nginx", servers.start_nginx, pages=self.pages, files=[big]) as server:
            record["notes"] = record["notes"] + list(server.notes)
            self._wrk(record, "simple_project", server.project_url())
            self._wrk(record, "simple_index", server.simple_url)
            self._downloads(record, f"{server.url}/files/{os.path.basename(big)}")


def fallback_pages(data: Dataset) -> dict[str, bytes]:
    """PEP 503 pages for the measured project and the index, built from the data set."""
    import hashlib

    links = []
    for path in data.small_by_project().get(BENCH_PROJECT.replace("-", "_"), []):
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        name = os.path.basename(path)
        links.append(f'    <a href="/files/{name}#sha256={digest}">{name}</a><br/>\n')
    project = f"<!DOCTYPE html>\n<html><body>\n{''.join(links)}</body></html>\n".encode()
    names = [dataset.project_name(i) for i in range(dataset.PROJECTS)]
    index = "".join(f'    <a href="/simple/{n}/">{n}</a><br/>\n' for n in names)
    return {
        f"/simple/{BENCH_PROJECT}/": project,
        "/simple/": f"<html><body>\n{index}</body></html>\n".encode(),
    }


def main(*, quick: bool, only: tuple[str, ...]) -> int:
    log = Log()
    suite = Suite(Options.make(quick=quick, only=only), log)
    json_path, md_path, text = suite.run()
    print()
    print(text)
    log(f"done: {md_path} and {json_path}")
    return 0
