"""Issue 10: ``cloudpypi mirror`` against ``bandersnatch mirror`` on the same upstream.

``python -m benchmarks mirror [--projects 300] [--files 10] [--big 3] [--big-mb 60] [--jobs 8]``

The upstream is a CloudPyPI (XML-RPC serials, JSON API, PEP 691) on 127.0.0.1,
loaded through its upload API with ``projects x files`` small wheels plus
``big`` wheels of ``big-mb`` MB of random bytes. Both mirrors run with the
same concurrency into local storage; then 10 upstream changes and an
incremental run of each. Then proxy mode: the first ``pip install`` of a
package with 10 dependencies through the proxy against straight from
upstream, and a second one with upstream stopped (no request may reach it
within the TTL). Results: a table on stdout and ``.work/mirror/result.md``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

from benchmarks import ROOT, WORK

sys.path.insert(0, ROOT)

from tests.dists import make_wheel  # noqa: E402
from tests.services.live_server import cloudpypi, start_server, write_config  # noqa: E402

HERE = os.path.join(WORK, "mirror")
PASSWORD = "bench password"


def _meta(name: str, version: str, requires: list[str]) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", "Summary: bench"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    return "\n".join(lines) + "\n\n"


def build_dataset(
    folder: str, projects: int, files: int, big: int, big_mb: int
) -> list[tuple[str, str, str]]:
    """[(path, name, version)]: the wheels to load upstream (reused when present)."""
    os.makedirs(folder, exist_ok=True)
    out = []
    for p in range(projects):
        name = f"mirror-bench-{p:03d}"
        for v in range(files):
            version = f"1.{v}"
            path = os.path.join(folder, f"mirror_bench_{p:03d}-{version}-py3-none-any.whl")
            if not os.path.exists(path):
                make_wheel(folder, name, version)
            out.append((path, name, version))
    for b in range(big):
        name, version = f"mirror-big-{b}", "1.0"
        path = os.path.join(folder, f"mirror_big_{b}-{version}-py3-none-any.whl")
        if not os.path.exists(path):
            make_wheel(folder, name, version, extra_bytes=big_mb * 1024 * 1024)
        out.append((path, name, version))
    deps = [f"mirror-bench-{p:03d}" for p in range(min(10, projects))]
    app = make_wheel(folder, "mirror-app", "1.0", metadata=_meta("mirror-app", "1.0", deps))
    out.append((app, "mirror-app", "1.0"))
    return out


def upload(url: str, path: str, name: str, version: str) -> None:
    """One upload through the legacy API, as twine sends it."""
    boundary = uuid.uuid4().hex
    data = open(path, "rb").read()
    fields = {
        ":action": "file_upload",
        "protocol_version": "1",
        "name": name,
        "version": version,
        "filetype": "bdist_wheel",
        "pyversion": "py3",
        "metadata_version": "2.1",
        "sha256_digest": hashlib.sha256(data).hexdigest(),
    }
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="{os.path.basename(path)}"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    token = base64.b64encode(f"bench:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        url + "/legacy/",
        data=body,
        headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Authorization": f"Basic {token}",
        },
    )
    with urllib.request.urlopen(request, timeout=300) as r:
        r.read()


def index(folder: str, *, workers: str = "1", **upstream: str) -> str:
    """An index's config.ini; ``workers``: its server's processes (``auto``: one per core)."""
    os.makedirs(folder, exist_ok=True)
    return write_config(
        os.path.join(folder, "config.ini"),
        {
            "server": {"data_dir": os.path.join(folder, "data"), "workers": workers, "threads": "16"},
            "database": {"url": f"sqlite:///{folder}/index.sqlite3"},
            "storage": {"backend": "local"},
            **({"upstream": upstream} if upstream else {}),
        },
    )


def bandersnatch_bin() -> str:
    venv = os.path.join(WORK, "venvs", "bandersnatch")
    exe = os.path.join(venv, "bin", "bandersnatch")
    if not os.path.exists(exe):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "bandersnatch"], check=True)
    return exe


def read_upstream(url: str, jobs: int) -> tuple[float, int, int]:
    """Everything a full sync reads, without storing anything: every project's PEP 691 page
    and JSON API answer, then every file, ``jobs`` keep-alive connections at once.
    (seconds, pages, files). Run once to warm the upstream's caches for both tools (the first
    tool to run must not pay for a cold upstream), then again for the upstream's own floor."""
    import urllib3

    pool = urllib3.PoolManager(maxsize=jobs)

    def get(u: str, accept: str = "application/vnd.pypi.simple.v1+json") -> bytes:
        r = pool.request("GET", u, headers={"Accept": accept}, preload_content=False)
        data = b"".join(r.stream(1 << 20))
        r.release_conn()
        return data

    started = time.monotonic()
    names = [p["name"] for p in json.loads(get(url + "/simple/"))["projects"]]
    with ThreadPoolExecutor(jobs) as pool_:
        pages = list(pool_.map(lambda n: json.loads(get(f"{url}/simple/{n}/")), names))
        list(pool_.map(lambda n: get(f"{url}/pypi/{n}/json", "application/json"), names))
        files = [f["url"] for page in pages for f in page["files"]]
        files = [u if u.startswith("http") else url + u for u in files]
        list(pool_.map(get, files))
    return time.monotonic() - started, len(names), len(files)


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def run_bandersnatch(exe: str, upstream: str, folder: str, jobs: int) -> float:
    conf = os.path.join(folder, "bandersnatch.conf")
    os.makedirs(folder, exist_ok=True)
    with open(conf, "w") as f:
        f.write(
            textwrap.dedent(f"""\
            [mirror]
            directory = {folder}/mirror
            master = {upstream}
            allow-non-https = true
            json = true
            release-files = true
            hash-index = false
            simple-format = ALL
            workers = {min(jobs, 10)}
            verifiers = {min(jobs, 10)}
            timeout = 30
            global-timeout = 3600
            stop-on-error = true
            storage-backend = filesystem
            compare-method = hash
            """)
        )
    started = time.monotonic()
    subprocess.run([exe, "--config", conf, "mirror"], check=True, capture_output=True, timeout=7200)
    return time.monotonic() - started


def run_cloudpypi(config: str, jobs: int) -> tuple[float, str]:
    started = time.monotonic()
    done = cloudpypi("mirror", "--jobs", str(jobs), "--quiet", config=config)
    return time.monotonic() - started, done.stdout.strip().splitlines()[0]


def pip_install(folder: str, index_url: str) -> float:
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", folder], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    started = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            os.path.join(folder, "bin", "python"),
            "install",
            "-q",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--index-url",
            index_url,
            "mirror-app",
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=600,
    )
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks mirror", description=__doc__)
    parser.add_argument("--projects", type=int, default=300)
    parser.add_argument("--files", type=int, default=10, help="wheels per project")
    parser.add_argument("--big", type=int, default=3, help="how many big wheels")
    parser.add_argument("--big-mb", type=int, default=60)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--no-bandersnatch", action="store_true")
    args = parser.parse_args(argv)

    run_dir = os.path.join(HERE, "run")
    shutil.rmtree(run_dir, ignore_errors=True)
    data = build_dataset(os.path.join(HERE, "dists"), args.projects, args.files, args.big, args.big_mb)
    # The upstream runs what an operator gets (one worker process per core), for both tools:
    # one process would make the shared upstream a one-core bottleneck that pypi.org's CDN is not.
    up_cfg = index(os.path.join(run_dir, "upstream"), workers="auto")
    cloudpypi("adduser", "bench", "--password-stdin", config=up_cfg, stdin=PASSWORD + "\n")
    upstream = start_server(up_cfg)
    rows: list[tuple[str, str]] = []
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda d: upload(upstream.url, *d), data))
        total_mb = sum(os.path.getsize(d[0]) for d in data) / 1e6
        print(
            f"upstream loaded: {len(data)} files, {total_mb:.0f} MB in {time.monotonic() - started:.0f} s",
            file=sys.stderr,
        )
        rows.append(
            ("data set", f"{args.projects + args.big + 1} projects, {len(data)} files, {total_mb:.0f} MB")
        )

        read_upstream(upstream.url, args.jobs)  # warm: both tools meet the same warm upstream
        floor, pages, files = read_upstream(upstream.url, args.jobs)
        rows.append(
            (
                f"upstream alone: every page, JSON answer and file ({args.jobs} connections, nothing stored)",
                f"{floor:.1f} s ({pages} projects, {files} files; {load()})",
            )
        )
        ours = index(os.path.join(run_dir, "cloudpypi"), url=upstream.url + "/simple/", mode="mirror")
        before = load()
        full, line = run_cloudpypi(ours, args.jobs)
        rows.append((f"cloudpypi mirror, full (--jobs {args.jobs})", f"{full:.1f} s ({line}; {before})"))
        band_full = None
        if not args.no_bandersnatch:
            exe = bandersnatch_bin()
            before = load()
            band_full = run_bandersnatch(exe, upstream.url, os.path.join(run_dir, "bandersnatch"), args.jobs)
            rows.append(
                (f"bandersnatch mirror, full (workers {min(args.jobs, 10)})", f"{band_full:.1f} s ({before})")
            )
            rows.append(("speed-up (target >= 2x)", f"{band_full / full:.2f}x"))

        # 10 upstream changes: new versions of 10 projects.
        extra = os.path.join(run_dir, "extra")
        os.makedirs(extra)
        for p in range(10):
            name = f"mirror-bench-{p:03d}"
            upload(upstream.url, make_wheel(extra, name, "9.0"), name, "9.0")
        before = load()
        inc, line = run_cloudpypi(ours, args.jobs)
        rows.append(
            (
                "cloudpypi mirror, incremental after 10 changes (target < 2 s)",
                f"{inc:.2f} s ({line}; {before})",
            )
        )
        if band_full is not None:
            band_inc = run_bandersnatch(exe, upstream.url, os.path.join(run_dir, "bandersnatch"), args.jobs)
            rows.append(("bandersnatch mirror, incremental after 10 changes", f"{band_inc:.2f} s ({load()})"))

        # Proxy: pip install mirror-app (10 dependencies).
        pip_load = load()
        direct = pip_install(os.path.join(run_dir, "venv-direct"), upstream.url + "/simple/")
        proxy_cfg = index(
            os.path.join(run_dir, "proxy"), url=upstream.url + "/simple/", mode="proxy", page_ttl="600"
        )
        proxy = start_server(proxy_cfg)
        try:
            first = pip_install(os.path.join(run_dir, "venv-proxy1"), proxy.url + "/simple/")
            upstream.stop()
            second = pip_install(os.path.join(run_dir, "venv-proxy2"), proxy.url + "/simple/")
        finally:
            proxy.stop()
        rows.append(
            ("pip install mirror-app (10 deps) straight from upstream", f"{direct:.2f} s ({pip_load})")
        )
        rows.append(
            ("... first through the proxy (target <= 1.5x)", f"{first:.2f} s ({first / direct:.2f}x)")
        )
        rows.append(
            ("... second through the proxy, upstream stopped (no request reaches it)", f"{second:.2f} s")
        )
    finally:
        upstream.stop()
    table = "| measure | result |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)
    command = "python -m benchmarks mirror " + " ".join(argv if argv is not None else sys.argv[2:])
    text = f"`{command}`\n\n{table}\n"
    with open(os.path.join(HERE, "result.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
