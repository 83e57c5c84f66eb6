"""``python -m benchmarks scale [--scale F]``: CloudPyPI at pypi.org's size against 1,000 files.

Builds two PostgreSQL databases with set-based SQL (``INSERT ... SELECT
generate_series``, indexes and constraints dropped during the load and rebuilt
after it): the 1,000-file data set (50 projects x 20 files) and pypi.org's
shape (600,000 projects, 6,000,000 files, a 10,000,000-row journal, one
project with 10,000 files; ``--scale`` multiplies all but the large project).
Each is served by ``cloudpypi serve`` (workers = the machine's cores) and the
issue 12 table is measured against both in the same run; ``EXPLAIN (ANALYZE,
BUFFERS)`` of each hot query at size goes into the report.
Results: ``.work/scale/results.json`` and ``.work/scale/explain.txt``.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import xmlrpc.client
from dataclasses import dataclass

from benchmarks import ROOT, WORK, peers
from benchmarks.measure import PeakRSS, parse_wrk, rss_mb
from benchmarks.procs import run
from benchmarks.servers import Server, _cloudpypi, _postgres, start_nginx

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

FOLDER = os.path.join(WORK, "scale")
TS = "2024-01-01T00:00:00.000000Z"
LARGE_PROJECT = "huge-project"
LARGE_RELEASES, LARGE_PER_RELEASE = 1000, 10
SMALL_PROJECT = "pkg-0000007"
TABLES = ("users", "api_tokens", "projects", "roles", "releases", "files", "file_registry", "journal")


@dataclass(frozen=True)
class Shape:
    projects: int
    releases_per_project: int
    files_per_release: int
    journal: int
    large_project: bool

    @property
    def files(self) -> int:
        return self.projects * self.releases_per_project * self.files_per_release + (
            LARGE_RELEASES * LARGE_PER_RELEASE if self.large_project else 0
        )


SMALL = Shape(projects=50, releases_per_project=2, files_per_release=10, journal=2000, large_project=False)


def pypi_shape(scale: float) -> Shape:
    return Shape(
        projects=max(100, int(600_000 * scale)),
        releases_per_project=2,
        files_per_release=5,
        journal=max(1000, int(10_000_000 * scale)),
        large_project=True,
    )


# -- building -------------------------------------------------------------------


def create_database(url: str) -> bool:
    """Create the database ``url`` names on its server when it does not exist; whether it did."""
    import psycopg2
    from psycopg2 import sql as pgsql

    base, name = url.rsplit("/", 1)
    name = name.split("?", 1)[0]
    conn = psycopg2.connect(base + "/postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone():
                return False
            cur.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
            return True
    finally:
        conn.close()


def build(url: str, shape: Shape, log=print) -> float:
    """Fill the migrated, empty database at ``url`` with ``shape``; the seconds it took."""
    import psycopg2

    from pypi.index.db import Database

    if create_database(url):
        log(f"created {url.rsplit('/', 1)[-1]}")
    Database(url).migrate()
    started = time.perf_counter()
    conn = psycopg2.connect(url)
    conn.autocommit = True
    cur = conn.cursor()

    def sql(text: str, *args) -> None:
        t = time.perf_counter()
        cur.execute(text, args or None)
        log(f"  {time.perf_counter() - t:6.1f} s  {' '.join(text.split())[:90]}")

    cur.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype IN ('u', 'f') AND connamespace = 'public'::regnamespace "
        "ORDER BY contype DESC"  # unique first: foreign keys need them back first
    )
    constraints = cur.fetchall()
    cur.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
        "AND indexname NOT IN (SELECT conname FROM pg_constraint)"
    )
    indexes = cur.fetchall()
    for table, name, _ in reversed(constraints):
        cur.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        cur.execute(f'DROP INDEX "{name}"')
    cur.execute("SET synchronous_commit = off")
    cur.execute("SET maintenance_work_mem = '256MB'")

    P, R, F, J = shape.projects, shape.releases_per_project, shape.files_per_release, shape.journal
    # Journal: row g <= P creates project g; row g > P is a release of project ((g - 1) % P) + 1.
    # So project p's last serial is p + floor((J - p) / P) * P, computed instead of aggregated.
    sql(
        "INSERT INTO projects (id, name, normalized_name, created, last_serial) "
        "SELECT p, 'pkg-' || lpad(p::text, 7, '0'), 'pkg-' || lpad(p::text, 7, '0'), %s, "
        "p + ((%s - p) / %s) * %s FROM generate_series(1, %s) p",
        TS,
        J,
        P,
        P,
        P,
    )
    sql(
        "INSERT INTO releases (id, project_id, version, canonical_version, created, summary) "
        "SELECT (p - 1) * %s + k, p, '1.' || k, '1.' || k, %s, 'A project of the scale benchmark' "
        "FROM generate_series(1, %s) p, generate_series(1, %s) k",
        R,
        TS,
        P,
        R,
    )
    file_cols = (
        "INSERT INTO files (id, release_id, filename, path, size, md5_digest, sha256_digest, "
        "blake2_256_digest, packagetype, python_version, requires_python, upload_time) "
    )
    sql(
        file_cols
        + "SELECT (r - 1) * %s + j, r, fn, 'packages/' || substr(h, 1, 2) || '/' || substr(h, 3, 2) "
        "|| '/' || h || '/' || fn, 10000 + j, substr(h, 1, 32), h, h, 'bdist_wheel', 'py3', '>=3.8', %s "
        "FROM (SELECT r, j, 'pkg_' || lpad(((r - 1) / %s + 1)::text, 7, '0') || '-1.' || ((r - 1) %% %s + 1) "
        "|| '-py3' || j || '-none-any.whl' AS fn, md5(r::text || '/' || j) || md5(j::text || '/' || r) AS h "
        "FROM generate_series(1, %s) r, generate_series(1, %s) j) s",
        F,
        TS,
        R,
        R,
        P * R,
        F,
    )
    serial = J
    if shape.large_project:
        pid, rbase, fbase = P + 1, P * R, P * R * F
        serial = J + 2
        sql(
            "INSERT INTO projects (id, name, normalized_name, created, last_serial) "
            "VALUES (%s, %s, %s, %s, %s)",
            pid,
            LARGE_PROJECT,
            LARGE_PROJECT,
            TS,
            serial,
        )
        sql(
            "INSERT INTO releases (id, project_id, version, canonical_version, created, summary) "
            "SELECT %s + v, %s, '0.' || v, '0.' || v, %s, 'The large project' FROM generate_series(1, %s) v",
            rbase,
            pid,
            TS,
            LARGE_RELEASES,
        )
        sql(
            file_cols + "SELECT %s + (v - 1) * %s + j, %s + v, fn, 'packages/' || substr(h, 1, 2) || '/' || "
            "substr(h, 3, 2) || '/' || h || '/' || fn, 20000 + j, substr(h, 1, 32), h, h, 'bdist_wheel', "
            "'py3', '>=3.8', %s FROM (SELECT v, j, 'huge_project-0.' || v || '-py3' || j || '-none-any.whl' "
            "AS fn, md5('huge' || v || '/' || j) || md5(j || '/huge' || v) AS h "
            "FROM generate_series(1, %s) v, generate_series(1, %s) j) s",
            fbase,
            LARGE_PER_RELEASE,
            rbase,
            TS,
            LARGE_RELEASES,
            LARGE_PER_RELEASE,
        )
    sql("INSERT INTO file_registry (filename) SELECT filename FROM files")
    sql(
        "INSERT INTO journal (id, name, version, action, submitted_date, submitted_by) "
        "SELECT g, 'pkg-' || lpad((CASE WHEN g <= %s THEN g ELSE (g - 1) %% %s + 1 END)::text, 7, '0'), "
        "CASE WHEN g <= %s THEN NULL ELSE '1.1' END, CASE WHEN g <= %s THEN 'create' ELSE 'new release' END, "
        "%s, 'bench' FROM generate_series(1, %s) g",
        P,
        P,
        P,
        P,
        TS,
        J,
    )
    if shape.large_project:
        sql(
            "INSERT INTO journal (id, name, version, action, submitted_date, submitted_by) VALUES "
            "(%s, %s, NULL, 'create', %s, 'bench'), (%s, %s, '0.1', 'new release', %s, 'bench')",
            J + 1,
            LARGE_PROJECT,
            TS,
            J + 2,
            LARGE_PROJECT,
            TS,
        )
    for table in ("projects", "releases", "files", "journal"):
        cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))")
    cur.execute("SELECT to_regclass('serials') IS NOT NULL")
    if cur.fetchone()[0]:  # the serial counter (migration 0002) starts after the loaded journal
        cur.execute("UPDATE serials SET value = (SELECT MAX(id) FROM journal)")
    for table, name, definition in constraints:
        sql(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    for _, definition in indexes:
        sql(definition)
    sql("VACUUM ANALYZE")
    conn.close()
    return time.perf_counter() - started


# -- measuring --------------------------------------------------------------------


def wrk(url: str, seconds: int, headers: dict[str, str], connections: int = 16) -> dict:
    args = [peers.which("wrk") or "wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    out = run([*args, url], timeout=seconds + 120)
    result = parse_wrk(out.stdout)
    transfer = 0.0
    for line in out.stdout.splitlines():
        if line.startswith("Transfer/sec:"):
            value = line.split()[1]
            unit = {"B": 1, "KB": 1e3 / 1.024 * 1.024, "MB": 1024**2, "GB": 1024**3}
            for suffix in ("GB", "MB", "KB", "B"):
                if value.endswith(suffix):
                    transfer = float(value[: -len(suffix)]) * (1024 if suffix == "KB" else unit[suffix])
                    break
    return {
        "rps": result.rps,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors,
        "MB_per_s": round(transfer / 1024**2, 1),
    }


def fetch(url: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> tuple[float, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        body = response.read()
    return time.perf_counter() - started, body


GZ = {"Accept-Encoding": "gzip"}
HTML = {"Accept": "text/html"}
JSON_SIMPLE = {"Accept": "application/vnd.pypi.simple.v1+json"}


def measure(
    server: Server, db_url: str, large: str, seconds: int, folder: str, log=print, *, with_cli: bool = True
) -> dict:
    """The issue 12 figures against one running server; ``large`` is the project with the most files."""
    out: dict = {}
    base = server.url
    for path in ("/simple/", f"/simple/{SMALL_PROJECT}/", f"/simple/{large}/", f"/pypi/{large}/json"):
        fetch(base + path, {**HTML, **GZ})  # warm: render once
    fetch(base + f"/simple/{large}/", {**JSON_SIMPLE, **GZ})
    rows = [
        ("simple_project_rps", f"/simple/{SMALL_PROJECT}/", {**HTML, **GZ}),
        ("simple_index_rps", "/simple/", {**HTML, **GZ}),
        ("simple_index_identity_rps", "/simple/", HTML),
        ("simple_index_json_rps", "/simple/", {**JSON_SIMPLE, **GZ}),
        ("large_project_html_rps", f"/simple/{large}/", {**HTML, **GZ}),
        ("large_project_html_identity_rps", f"/simple/{large}/", HTML),
        ("large_project_json_rps", f"/simple/{large}/", {**JSON_SIMPLE, **GZ}),
        ("large_json_api_rps", f"/pypi/{large}/json", GZ),
        ("home_rps", "/", GZ),
        ("search_rps", "/?q=pkg-00001", GZ),
    ]
    for key, path, headers in rows:
        out[key] = wrk(base + path, seconds, headers)
        log(
            f"    {key:34} {out[key]['rps']:9.1f} req/s  p50 {out[key]['p50_ms']:.1f} ms  "
            f"p99 {out[key]['p99_ms']:.1f} ms  {out[key]['MB_per_s']} MB/s"
        )
    # XML-RPC lists, with the server's peak RSS meanwhile.
    rpc = base + "/pypi"
    xml = {"Content-Type": "text/xml"}
    with PeakRSS(p.pid for p in server.measured) as peak:
        t, body = fetch(rpc, xml, xmlrpc.client.dumps((), "list_packages_with_serial").encode())
    out["list_packages_with_serial"] = {
        "seconds": round(t, 3),
        "MB": round(len(body) / 1e6, 1),
        "server_peak_rss_mb": round(peak.peak_mb, 1),
    }
    last = xmlrpc.client.ServerProxy(rpc).changelog_last_serial()
    with PeakRSS(p.pid for p in server.measured) as peak:
        t, body = fetch(
            rpc, xml, xmlrpc.client.dumps((max(0, last - 50_000),), "changelog_since_serial").encode()
        )
    out["changelog_since_serial"] = {
        "seconds": round(t, 3),
        "MB": round(len(body) / 1e6, 1),
        "server_peak_rss_mb": round(peak.peak_mb, 1),
    }
    log(f"    xmlrpc: {out['list_packages_with_serial']}  {out['changelog_since_serial']}")
    # Uploads: to an existing project (the HTML /simple/ must not change), then a new project.
    import psycopg2

    from benchmarks.servers import twine
    from tests.dists import make_wheel

    conn = psycopg2.connect(db_url)
    with conn, conn.cursor() as cur:  # the benchmark user owns the project it uploads to
        cur.execute(
            "INSERT INTO roles (project_id, user_id, role) SELECT p.id, u.id, 'owner' "
            "FROM projects p, users u WHERE p.normalized_name = %s AND u.username = %s "
            "ON CONFLICT (project_id, user_id) DO UPDATE SET role = 'owner'",  # roles are lower case
            (SMALL_PROJECT, server.user),
        )
    conn.close()
    wheels = os.path.join(folder, "wheels")
    os.makedirs(wheels, exist_ok=True)
    _, before = fetch(base + "/simple/", HTML)
    times = []
    run_id = int(time.time())  # a reused database (--database) already holds earlier runs' uploads
    for i in range(5):
        path = make_wheel(wheels, SMALL_PROJECT, f"9.{run_id}.{i}")
        started = time.perf_counter()
        twine(server, [path], timeout=300)
        times.append(time.perf_counter() - started)
    out["upload_existing_s"] = round(sorted(times)[len(times) // 2], 3)
    t, after = fetch(base + "/simple/", HTML)
    out["simple_index_after_upload_s"] = round(t, 3)
    out["simple_index_html_unchanged_after_upload"] = before == after
    new_name = f"brand-new-project-{run_id}"
    path = make_wheel(wheels, new_name, "1.0")
    started = time.perf_counter()
    twine(server, [path], timeout=300)
    out["upload_new_project_s"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()  # freshness: from the end of the upload
    seen = None
    while time.perf_counter() - started < 30:
        t, body = fetch(base + "/simple/", HTML)
        if f"/simple/{new_name}/".encode() in body:
            seen = time.perf_counter() - started
            break
    out["new_project_in_simple_after_s"] = round(seen, 2) if seen is not None else None
    log(
        f"    uploads: existing {out['upload_existing_s']} s, new {out['upload_new_project_s']} s, "
        f"/simple/ after upload {out['simple_index_after_upload_s']} s, unchanged "
        f"{out['simple_index_html_unchanged_after_upload']}, new name visible after {seen} s"
    )
    out["server_rss_mb"] = round(rss_mb(p.pid for p in server.measured), 1)
    out["worker_rss_mb"] = _worker_rss(server)
    log(f"    RSS: server tree {out['server_rss_mb']} MB, workers {out['worker_rss_mb']}")
    # fsck and migrate-storage --dry-run (the objects are not in the store: every one is "missing").
    config = os.path.join(folder, "config.ini")
    for name, args in (
        ()
        if not with_cli
        else (
            ("fsck", ["fsck"]),
            ("migrate_storage_dry_run", ["migrate-storage", "--dry-run", "--to", _target(folder)]),
        )
    ):
        out[name] = _timed_cli(config, args, log)
    return out


def _worker_rss(server: Server) -> list[float]:
    from benchmarks.procs import tree

    found = []
    for pid in tree(server.measured[0].pid):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        found.append(round(int(line.split()[1]) / 1024, 1))
        except OSError:
            pass
    return found


def _target(folder: str) -> str:
    target = os.path.join(folder, "target.ini")
    with open(target, "w") as f:
        f.write(f"[storage]\nbackend = local\npath = {os.path.join(folder, 'target-store')}\n")
    return target


def _timed_cli(config: str, args: list[str], log, limit: float = 300) -> dict:
    """Run the command with its output to a file (6 M problems are ~1 GB of lines: not held here)."""
    cmd = ["/usr/bin/time", "-f", "%e %M %U %S", sys.executable, "-m", "pypi.cli", *args, "--config", config]
    started = time.perf_counter()
    out_path = os.path.join(os.path.dirname(config), f"{args[0]}.out")
    try:
        with open(out_path, "wb") as out:
            proc = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.PIPE, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        result = {"seconds": None, "peak_rss_mb": None, "note": f"killed after {limit:.0f} s"}
    else:
        last = proc.stderr.strip().splitlines()[-1].split() if proc.stderr.strip() else ["0", "0"]
        try:
            result = {
                "seconds": float(last[0]),
                "peak_rss_mb": round(int(last[1]) / 1024, 1),
                "cpu_seconds": round(float(last[2]) + float(last[3]), 1),
                "rc": proc.returncode,
            }
        except (ValueError, IndexError):
            result = {
                "seconds": round(time.perf_counter() - started, 1),
                "peak_rss_mb": None,
                "rc": proc.returncode,
                "stderr": proc.stderr[-500:],
            }
    result["output_mb"] = round(os.path.getsize(out_path) / 1e6, 1)
    os.remove(out_path)
    log(f"    {' '.join(args[:2])}: {result}")
    return result


EXPLAINS = {
    "upload: UPDATE projects ... WHERE normalized_name": "UPDATE projects SET last_serial = last_serial "
    "WHERE normalized_name = 'pkg-0000007'",
    "project row": "SELECT id, name, normalized_name, created, last_serial FROM projects "
    "WHERE normalized_name = 'pkg-0000007'",
    "project files (large project)": "SELECT f.id, f.filename, f.path, r.version FROM files f "
    "JOIN releases r ON r.id = f.release_id WHERE r.project_id = (SELECT id FROM projects "
    f"WHERE normalized_name = '{LARGE_PROJECT}') ORDER BY f.filename",
    "file by path": "SELECT * FROM files WHERE path = (SELECT path FROM files WHERE id = 12345)",
    "file by name": "SELECT 1 FROM file_registry WHERE filename = 'pkg_0000007-1.1-py31-none-any.whl'",
    "last serial": "SELECT MAX(id) FROM journal",
    "name-set version (/simple/ HTML)": "SELECT MAX(id) FROM journal "
    "WHERE action IN ('create', 'remove project')",
    "journal since serial (changelog_since_serial)": "SELECT id, name, version, action, submitted_date "
    "FROM journal WHERE id > (SELECT MAX(id) - 50000 FROM journal) ORDER BY id LIMIT 50000",
    "search (prefix)": "SELECT name, normalized_name, last_serial FROM projects "
    "WHERE normalized_name LIKE 'pkg-00001%' ORDER BY normalized_name LIMIT 100",
    "home counts (estimates)": "SELECT relname, reltuples FROM pg_class WHERE relkind = 'r' "
    "AND relname IN ('projects', 'releases', 'files')",
    "recent releases": "SELECT p.name, r.version FROM releases r JOIN projects p ON p.id = r.project_id "
    "ORDER BY r.id DESC LIMIT 20",
    "stored page": "SELECT version, rendered FROM stored_pages WHERE page = 'simple-index/html'",
    # pypi.index.stream.referenced_objects (fsck, migrate-storage --dry-run): an index-only scan.
    "fsck / migrate-storage page (path order)": 'SELECT f.path COLLATE "C", f.filename, f.size, '
    "f.sha256_digest, f.metadata_sha256 FROM files f WHERE f.path COLLATE \"C\" > 'packages/80' "
    'ORDER BY f.path COLLATE "C" LIMIT 10000',
}


def explain(url: str) -> str:
    import psycopg2

    conn = psycopg2.connect(url)
    cur = conn.cursor()
    parts = []
    for what, sql in EXPLAINS.items():
        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        parts.append(f"-- {what}\n{sql}\n" + "\n".join(r[0] for r in cur.fetchall()))
        conn.rollback()  # the UPDATE changes nothing it keeps
    conn.close()
    return "\n\n".join(parts) + "\n"


def _serve(name: str, url: str, folder: str) -> Server:
    os.makedirs(folder, exist_ok=True)
    return _cloudpypi(name, folder, database=url, storage={"backend": "local"}, cleanup=[], notes=[])


def main(
    *, scale: float = 1.0, seconds: int = 10, with_cli: bool = True, database: str | None = None, log=print
) -> int:
    shutil.rmtree(FOLDER, ignore_errors=True)
    os.makedirs(FOLDER)
    cleanup: list = []
    results: dict = {"scale": scale, "seconds": seconds}
    try:
        small_url = _postgres(cleanup)
        big_url = database or _postgres(cleanup)
        big = pypi_shape(scale)
        log(f"scale: building the 1,000-file data set ({SMALL.files} files)")
        results["build_small_s"] = round(build(small_url, SMALL, log), 1)
        log(
            f"scale: building pypi.org's shape x {scale}: {big.projects:,} projects, {big.files:,} files, "
            f"{big.journal:,} journal rows, one project with {LARGE_RELEASES * LARGE_PER_RELEASE:,} files"
        )
        if database:  # built by an earlier run (or by build()); measured as it is
            log(f"scale: reusing {database.rsplit('@', 1)[-1]}; not rebuilt")
            results["build_big_s"] = None
        else:
            results["build_big_s"] = round(build(big_url, big, log), 1)
            log(f"scale: built in {results['build_big_s']} s")
        results["shape"] = big.__dict__ | {"files": big.files}
        with open(os.path.join(FOLDER, "explain.txt"), "w") as f:
            f.write(explain(big_url))
        for label, url, large in (("small", small_url, SMALL_PROJECT), ("pypi", big_url, LARGE_PROJECT)):
            folder = os.path.join(FOLDER, label)
            log(f"scale: measuring the {label} data set")
            server = _serve(f"cloudpypi-{label}", url, folder)
            try:
                results[label] = measure(server, url, large, seconds, folder, log, with_cli=with_cli)
                if label == "pypi":
                    _, page = fetch(server.url + f"/simple/{large}/", HTML)
                    _, index = fetch(server.url + "/simple/", HTML)
                    _, api_gzip = fetch(server.url + f"/pypi/{large}/json", GZ)  # as sent: gzip bytes
            finally:
                server.stop()
        nginx = start_nginx(
            "nginx-scale",
            os.path.join(FOLDER, "nginx"),
            pages={"/simple/": index, f"/simple/{LARGE_PROJECT}/": page, f"/api/{LARGE_PROJECT}/": api_gzip},
            files=[],
        )
        try:
            results["nginx"] = {
                "simple_index_identity": wrk(nginx.url + "/simple/", seconds, HTML),
                "large_project_html_identity": wrk(nginx.url + f"/simple/{LARGE_PROJECT}/", seconds, HTML),
                # The bytes /pypi/<large>/json sends a client that accepts gzip, as a static file.
                "large_json_api_gzip_bytes": wrk(nginx.url + f"/api/{LARGE_PROJECT}/", seconds, {}),
            }
        finally:
            nginx.stop()
        results["sizes"] = {
            "simple_index_html": len(index),
            "simple_index_html_gzip": len(gzip.compress(index)),
            "large_project_html": len(page),
            "large_json_api_gzip": len(api_gzip),
        }
    finally:
        for fn in reversed(cleanup):
            try:
                fn()
            except Exception as exc:
                log(f"cleanup failed: {exc}")
    with open(os.path.join(FOLDER, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    log(report(results))
    return 0


def report(results: dict) -> str:
    small, big, nginx = results.get("small", {}), results.get("pypi", {}), results.get("nginx", {})
    lines = ["| figure | 1,000 files | pypi.org size |", "|---|---:|---:|"]

    def rps(key: str) -> str:
        return " | ".join(
            f"{d[key]['rps']:,.0f} (p99 {d[key]['p99_ms']:.0f} ms, {d[key]['MB_per_s']} MB/s)"
            if key in d
            else "-"
            for d in (small, big)
        )

    for key in (
        "simple_project_rps",
        "simple_index_rps",
        "simple_index_identity_rps",
        "simple_index_json_rps",
        "large_project_html_rps",
        "large_project_html_identity_rps",
        "large_project_json_rps",
        "large_json_api_rps",
        "home_rps",
        "search_rps",
    ):
        lines.append(f"| {key} req/s | {rps(key)} |")
    for key in ("list_packages_with_serial", "changelog_since_serial", "fsck", "migrate_storage_dry_run"):
        lines.append(f"| {key} | {small.get(key)} | {big.get(key)} |")
    for key in (
        "upload_existing_s",
        "upload_new_project_s",
        "simple_index_after_upload_s",
        "simple_index_html_unchanged_after_upload",
        "new_project_in_simple_after_s",
        "server_rss_mb",
        "worker_rss_mb",
    ):
        lines.append(f"| {key} | {small.get(key)} | {big.get(key)} |")
    for key, value in nginx.items():
        lines.append(f"| nginx static {key} req/s | | {value['rps']:,.0f} ({value['MB_per_s']} MB/s) |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m benchmarks.scale URL [--scale F]: build once, measure with --database
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale")
    parser.add_argument("url", help="a PostgreSQL database to fill (empty; created when missing)")
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    print(f"built in {build(args.url, pypi_shape(args.scale)):.0f} s")
