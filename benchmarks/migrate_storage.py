"""migrate-storage of many small files, local disk -> S3 on moto's server: --jobs 8 against --jobs 1.

``python -m benchmarks.migrate_storage [--files 2000] [--size 4096] [--jobs 1,8]
[--latency-ms 0,20] [--repeat 1]``

Builds an index (SQLite + local files) of ``--files`` objects of ``--size``
bytes under ``benchmarks/.work/migrate-storage``, starts moto's S3 server on
127.0.0.1, and runs ``cloudpypi migrate-storage`` (in-process, through
``pypi.cli.main``) into a fresh bucket for each ``--jobs`` value, in two
settings:

- latency 0: boto3 talks to moto directly over loopback. Both ends are Python
  on this machine and every request costs CPU on both, so the speed-up of
  more jobs is capped by the cores (and moto, one process, uses at most one);
- latency N ms: the same moto behind a TCP forwarder (a process of its own)
  that holds each response N ms, as a store across a network does: a PUT
  costs two round trips (boto3 waits for ``100 Continue``). This is the case
  ``--jobs`` is for.

Prints the figures, with the CPU time the migration and moto used, and writes
them to ``benchmarks/results/migrate-storage-<time>.json`` (and
``migrate-storage-latest.json``). Target (issue 3): --jobs 8 at least 4x
faster than --jobs 1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import io
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time

from benchmarks import RESULTS, ROOT, WORK
from pypi.cli import main as cloudpypi
from pypi.index import packages
from pypi.index.db import Database
from pypi.index.objects import content_path
from storage.local import LocalStorage
from tests.services.live_server import write_config
from tests.services.moto_s3 import MotoServer, empty_and_delete_bucket, new_bucket_name

TARGET_SPEEDUP = 4.0
PER_PROJECT = 100


def build_index(folder: str, files: int, size: int) -> str:
    """An index of ``files`` random objects of ``size`` bytes (no uploads: rows and files directly)."""
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    data = os.path.join(folder, "data")
    db = Database(f"sqlite:///{data}/index.sqlite3")
    db.migrate()
    store = LocalStorage(root=os.path.join(data, "packages"))
    with db.transaction(write=True) as tx:
        for i in range(files):
            name = f"bench-{i // PER_PROJECT:03d}"
            version = f"1.{i % PER_PROJECT}"
            project = packages.get_project(tx, name) or packages.create_project(tx, name)
            release = packages.create_release(tx, project["id"], version, {})
            body = os.urandom(size)
            sha256 = hashlib.sha256(body).hexdigest()
            blake2 = hashlib.blake2b(body, digest_size=32).hexdigest()
            filename = f"bench_{i // PER_PROJECT:03d}-{version}-py3-none-any.whl"
            path = content_path(blake2, filename)
            store.put(
                path,
                io.BytesIO(body),
                content_type="application/zip",
                metadata={"project": name, "version": version, "sha256": sha256},
            )
            packages.add_file(
                tx,
                release["id"],
                {
                    "filename": filename,
                    "path": path,
                    "size": size,
                    "md5_digest": hashlib.md5(body).hexdigest(),
                    "sha256_digest": sha256,
                    "blake2_256_digest": blake2,
                    "packagetype": "bdist_wheel",
                    "python_version": "py3",
                    "upload_time": "2024-01-01T00:00:00.000000Z",
                },
            )
    db.close()
    return write_config(
        os.path.join(folder, "config.ini"),
        {
            "server": {"data_dir": data},
            "database": {"url": f"sqlite:///{data}/index.sqlite3"},
            "storage": {"backend": "local"},
        },
    )


def start_latency_proxy(target_port: int, seconds: float) -> tuple[subprocess.Popen, str]:
    """``tests.services.tcp_proxy`` in its own process, delaying responses; (process, endpoint)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.services.tcp_proxy", str(target_port), "--delay", str(seconds)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    port = proc.stdout.readline().strip()
    if not port.isdigit():
        proc.kill()
        raise SystemExit(f"the latency proxy did not start: {port!r}")
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_once(moto: MotoServer, endpoint: str, folder: str, config: str, jobs: int) -> dict:
    """One migration into a new bucket through ``endpoint``; its figures."""
    client = moto.client()
    bucket = new_bucket_name()
    client.create_bucket(Bucket=bucket)
    target = write_config(
        os.path.join(folder, f"target-{jobs}.ini"),
        {
            "storage": {
                "backend": "s3",
                "bucket": bucket,
                "endpoint_url": endpoint,
                "region": "us-east-1",
                "access_key_id": moto.access_key_id,
                "secret_access_key": moto.secret_access_key,
            }
        },
    )
    out, err = io.StringIO(), io.StringIO()
    moto_cpu, own_cpu = _cpu_seconds(moto.process.pid), _own_cpu()
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cloudpypi(["migrate-storage", "--config", config, "--to", target, "--jobs", str(jobs)])
    seconds = time.perf_counter() - started
    moto_cpu = _cpu_seconds(moto.process.pid) - moto_cpu
    own_cpu = _own_cpu() - own_cpu
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    in_bucket = sum(page.get("KeyCount", 0) for page in pages)
    empty_and_delete_bucket(client, bucket)
    client.close()
    if code != 0:
        raise SystemExit(
            f"migrate-storage --jobs {jobs} exited {code}:\n{out.getvalue()}\n{err.getvalue()[-3000:]}"
        )
    return {
        "jobs": jobs,
        "seconds": round(seconds, 3),
        "cpu_seconds_migration": round(own_cpu, 2),
        "cpu_seconds_moto": round(moto_cpu, 2),
        "load_average_before": round(load, 2),
        "objects_in_bucket": in_bucket,
        "summary": out.getvalue().strip().splitlines()[-1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.migrate_storage", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--size", type=int, default=4096, help="bytes per file (default 4096)")
    parser.add_argument("--jobs", default="1,8", help="comma-separated --jobs values (default 1,8)")
    parser.add_argument(
        "--latency-ms", default="0,20", help="comma-separated added response latencies (default 0,20)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per setting; the median counts")
    args = parser.parse_args(argv)
    jobs_values = [int(j) for j in args.jobs.split(",")]
    latencies = [float(ms) for ms in args.latency_ms.split(",")]

    folder = os.path.join(WORK, "migrate-storage")
    print(f"building an index of {args.files} files of {args.size} bytes in {folder} ...", flush=True)
    t0 = time.perf_counter()
    config = build_index(folder, args.files, args.size)
    print(f"  built in {time.perf_counter() - t0:.1f} s; starting moto's S3 server", flush=True)
    moto = MotoServer().start()
    moto_port = int(moto.endpoint_url.rsplit(":", 1)[1])
    settings: list[dict] = []
    try:
        for latency in latencies:
            proxy, endpoint = (
                start_latency_proxy(moto_port, latency / 1000) if latency else (None, moto.endpoint_url)
            )
            runs = []
            try:
                for _ in range(args.repeat):
                    for jobs in jobs_values:
                        run = run_once(moto, endpoint, folder, config, jobs)
                        runs.append(run)
                        print(
                            f"  latency {latency:g} ms, --jobs {jobs}: {run['seconds']:.2f} s "
                            f"(CPU: migration {run['cpu_seconds_migration']} s, moto "
                            f"{run['cpu_seconds_moto']} s; load {run['load_average_before']}); "
                            f"{run['summary']}",
                            flush=True,
                        )
            finally:
                if proxy:
                    stop(proxy)
            medians = {
                j: statistics.median(r["seconds"] for r in runs if r["jobs"] == j) for j in jobs_values
            }
            setting: dict = {
                "added_latency_ms": latency,
                "runs": runs,
                "median_seconds": {str(j): round(s, 3) for j, s in medians.items()},
                "files_per_second": {str(j): round(args.files / s, 1) for j, s in medians.items()},
            }
            if 1 in medians and 8 in medians:
                speedup = medians[1] / medians[8]
                setting["speedup_8_vs_1"] = round(speedup, 2)
                setting["target_met"] = speedup >= TARGET_SPEEDUP
            settings.append(setting)
    finally:
        moto.close()

    result = {
        "benchmark": "migrate-storage local -> S3 (moto server)",
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "files": args.files,
        "file_size": args.size,
        "target_speedup_8_vs_1": TARGET_SPEEDUP,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": settings,
    }
    print()
    print(
        f"migrate-storage, {args.files} files of {args.size} bytes, local -> S3 on moto "
        f"({os.cpu_count()} CPUs)"
    )
    for setting in settings:
        where = (
            "loopback" if not setting["added_latency_ms"] else f"+{setting['added_latency_ms']:g} ms latency"
        )
        for j, s in setting["median_seconds"].items():
            print(f"  {where:<18} --jobs {j:<3} {s:8.2f} s  {setting['files_per_second'][j]:8.1f} files/s")
        if "speedup_8_vs_1" in setting:
            print(
                f"  {where:<18} speed-up --jobs 8 / --jobs 1: {setting['speedup_8_vs_1']:.2f}x "
                f"(target >= {TARGET_SPEEDUP:.0f}x: {'met' if setting['target_met'] else 'NOT met'})"
            )
    os.makedirs(RESULTS, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for name in (f"migrate-storage-{stamp}.json", "migrate-storage-latest.json"):
        with open(os.path.join(RESULTS, name), "w") as f:
            json.dump(result, f, indent=1)
    print(f"results: {os.path.join(RESULTS, f'migrate-storage-{stamp}.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
