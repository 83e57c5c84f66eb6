"""``python -m benchmarks.large_pages DATABASE_URL``: the large project's pages against nginx, quickly.

The part of ``benchmarks scale`` that compares the 10,000-file project's pages with nginx
sending the same bytes as static files, against a database ``benchmarks scale`` built
already (nothing is built or uploaded): ``/pypi/<large>/json`` asked with gzip,
``/simple/<large>/`` HTML without it and PEP 691 JSON with it, each followed by nginx
sending the bytes that answer carried. The server is started as the scale benchmark
starts it (``cloudpypi serve``, one worker per core). ``--rounds N`` alternates the two
N times and prints the medians; ``--hold`` leaves the server up for a profiler.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics

from benchmarks import WORK
from benchmarks.procs import tree
from benchmarks.scale import GZ, HTML, JSON_SIMPLE, LARGE_PROJECT, _serve, fetch, wrk
from benchmarks.servers import start_nginx

FOLDER = os.path.join(WORK, "large_pages")
#: figure -> (path, request headers)
PAGES = {
    "large_json_api": (f"/pypi/{LARGE_PROJECT}/json", GZ),
    "large_project_html_identity": (f"/simple/{LARGE_PROJECT}/", HTML),
    "large_project_json": (f"/simple/{LARGE_PROJECT}/", {**JSON_SIMPLE, **GZ}),
    "simple_index_identity": ("/simple/", HTML),
}


def _cpu_seconds(pid: int) -> float:
    """The user and system CPU seconds the server's processes have used so far."""
    total = 0
    for child in tree(pid):
        try:
            with open(f"/proc/{child}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.large_pages")
    parser.add_argument("database", help="a database built by benchmarks scale")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", choices=sorted(PAGES), action="append")
    parser.add_argument("--hold", action="store_true", help="keep the server up until Enter")
    args = parser.parse_args(argv)
    pages = {k: PAGES[k] for k in (args.only or PAGES)}
    server = _serve("cloudpypi-large-pages", args.database, os.path.join(FOLDER, "server"))
    bodies: dict[str, bytes] = {}
    try:
        for key, (path, headers) in pages.items():
            fetch(server.url + path, headers)  # warm: render once
            _, bodies[key] = fetch(server.url + path, headers)  # as sent (gzip bytes when asked)
        if args.hold:
            print(f"serving at {server.url} (pids {[p.pid for p in server.measured]}); Enter stops it")
            with contextlib.suppress(EOFError):
                input()
        nginx = start_nginx(
            "nginx-large-pages",
            os.path.join(FOLDER, "nginx"),
            pages={f"/simple/{key}/": body for key, body in bodies.items()} | {"/simple/": b"ready"},
            files=[],
        )
        results: dict[str, list[tuple[float, float]]] = {}
        try:
            for _ in range(args.rounds):
                for key, (path, headers) in pages.items():
                    before = _cpu_seconds(server.measured[0].pid)
                    ours = wrk(server.url + path, args.seconds, headers)
                    cpu = _cpu_seconds(server.measured[0].pid) - before
                    theirs = wrk(nginx.url + f"/simple/{key}/", args.seconds, {})
                    results.setdefault(key, []).append((ours["MB_per_s"], theirs["MB_per_s"]))
                    print(
                        f"{key:30} {ours['rps']:8.1f} req/s {ours['MB_per_s']:7.1f} MB/s "
                        f"(p99 {ours['p99_ms']:.0f} ms, errors {ours['errors']}, "
                        f"{1e6 * cpu / max(1.0, ours['rps'] * args.seconds):.0f} µs CPU a request)  nginx "
                        f"{theirs['rps']:8.1f} req/s {theirs['MB_per_s']:7.1f} MB/s  "
                        f"{100 * ours['MB_per_s'] / max(theirs['MB_per_s'], 0.1):.0f} %",
                        flush=True,
                    )
        finally:
            nginx.stop()
    finally:
        server.stop()
    for key, runs in results.items():
        ours = statistics.median(r[0] for r in runs)
        theirs = statistics.median(r[1] for r in runs)
        print(
            f"median {key:30} {ours:7.1f} MB/s  nginx {theirs:7.1f} MB/s  {100 * ours / theirs:.0f} %  "
            f"({len(bodies[key]):,} bytes)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
