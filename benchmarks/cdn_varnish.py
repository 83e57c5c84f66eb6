"""/simple/<name>/ through Varnish (the shipped VCL) against nginx serving the same page as a file.

    python -m benchmarks.cdn_varnish [--duration 10] [--purges 3]

Starts ``cloudpypi serve`` (SQLite, ``[cdn] purge = varnish``), uploads one
project, and runs ``wrk`` (2 threads, 16 connections) against: the page
through Varnish, the same bytes as a static file from nginx, and, for
scale, the application itself. During the Varnish run a new version is
uploaded ``--purges`` times (straight to the application, as a CI job
would); each upload purges the page, and Varnish's ``MAIN.backend_req``
counter shows how many requests reached the application (target: one per
purge). Figures are printed and written to benchmarks/results/cdn_varnish.json.
Debian's nginx, wrk, varnish and varnish-modules are installed if missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import requests

from tests.dists import make_wheel
from tests.services.live_server import cloudpypi, free_port, start_server, write_config
from tests.services.varnish import start_varnish

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "cdn_varnish.json")
NAME = "bench-cdn"
PASSWORD = "benchmark password"
APT = {"nginx": "nginx", "wrk": "wrk", "varnishd": "varnish", "varnishstat": "varnish"}


def ensure_tools() -> None:
    """apt-get install what is missing (nginx, wrk, varnish, varnish-modules)."""
    path = "/usr/sbin:/usr/bin:/sbin:/bin"
    missing = {pkg for tool, pkg in APT.items() if not shutil.which(tool, path=path)}
    if not os.path.exists("/usr/lib/x86_64-linux-gnu/varnish/vmods/libvmod_xkey.so") and not any(
        os.path.exists(os.path.join(d, "libvmod_xkey.so"))
        for d in ("/usr/lib/varnish/vmods", "/usr/lib/aarch64-linux-gnu/varnish/vmods")
    ):
        missing.add("varnish-modules")
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        print(f"installing {' '.join(sorted(missing))} ...", flush=True)
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
        subprocess.run(
            [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *sorted(missing)],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )


def wrk(url: str, duration: int) -> dict:
    """``wrk -t2 -c16 -dN`` on ``url``: requests per second, latency and error counts."""
    out = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{duration}s", "--latency", url], capture_output=True, text=True, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p50 = re.search(r"50%\s+([\d.]+\w+)", out)
    p99 = re.search(r"99%\s+([\d.]+\w+)", out)
    return {
        "requests_per_second": rps,
        "requests": total,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "latency_p50": p50.group(1) if p50 else None,
        "latency_p99": p99.group(1) if p99 else None,
    }


def start_nginx(folder: str, page: bytes) -> tuple[subprocess.Popen, int]:
    """nginx serving ``page`` at /simple/<NAME>/ (2 workers, no access log)."""
    site = os.path.join(folder, "site", "simple", NAME)
    os.makedirs(site)
    with open(os.path.join(site, "index.html"), "wb") as f:
        f.write(page)
    for d in (folder, os.path.join(folder, "site"), os.path.join(folder, "site", "simple"), site):
        os.chmod(d, 0o755)
    port = free_port()
    conf = os.path.join(folder, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
daemon off;
worker_processes 2;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    open_file_cache max=100 inactive=60s;
    keepalive_requests 100000;
    client_body_temp_path {folder}/tmp;
    proxy_temp_path {folder}/tmp;
    fastcgi_temp_path {folder}/tmp;
    uwsgi_temp_path {folder}/tmp;
    scgi_temp_path {folder}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {folder}/site;
        default_type text/html;
        index index.html;
    }}
}}
""")
    with open(os.path.join(folder, "nginx-error.log"), "ab") as log:
        proc = subprocess.Popen(["nginx", "-c", conf, "-p", folder], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/simple/{NAME}/", timeout=1) as r:
                assert r.read() == page
            return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log = open(os.path.join(folder, "nginx-error.log")).read()
                raise RuntimeError(f"nginx did not start: {log}") from None
            time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def upload(app_url: str, folder: str, version: str) -> None:
    """One upload of a fresh wheel straight to the application (the legacy API, as twine sends it)."""
    path = make_wheel(folder, NAME, version)
    data = open(path, "rb").read()
    fields = {
        ":action": "file_upload",
        "protocol_version": "1",
        "metadata_version": "2.1",
        "name": NAME,
        "version": version,
        "filetype": "bdist_wheel",
        "pyversion": "py3",
        "sha256_digest": hashlib.sha256(data).hexdigest(),
    }
    r = requests.post(
        f"{app_url}/legacy/",
        data=fields,
        auth=("bench", PASSWORD),
        timeout=60,
        files={"content": (os.path.basename(path), data, "application/octet-stream")},
    )
    r.raise_for_status()


def run(duration: int, purges: int) -> dict:
    ensure_tools()
    folder = tempfile.mkdtemp(prefix="cloudpypi-bench-cdn-")
    os.chmod(folder, 0o755)
    vport = free_port()
    config = write_config(
        os.path.join(folder, "config.ini"),
        {
            "server": {"data_dir": os.path.join(folder, "data"), "threads": "8"},
            "database": {"url": f"sqlite:///{folder}/cloudpypi.sqlite3"},
            "cdn": {
                "purge": "varnish",
                "varnish_urls": f"http://127.0.0.1:{vport}/",
                "files_url": f"http://127.0.0.1:{vport}/packages/",
            },
        },
    )
    cloudpypi("adduser", "bench", "--password", PASSWORD, config=config)
    app = start_server(config)
    varnish = nginx = None
    try:
        upload(app.url, folder, "1.0")
        page_url = f"/simple/{NAME}/"
        with urllib.request.urlopen(app.url + page_url) as r:
            page = r.read()
        varnish = start_varnish("127.0.0.1", int(app.url.rsplit(":", 1)[1]), port=vport)
        nginx, nport = start_nginx(os.path.join(folder, "nginx"), page)

        results: dict = {"page_bytes": len(page), "duration_s": duration, "wrk": "-t2 -c16"}
        results["nginx_static"] = wrk(f"http://127.0.0.1:{nport}{page_url}", duration)

        urllib.request.urlopen(varnish.url + page_url).read()  # warm
        before = varnish.backend_requests()
        done = []

        def uploads() -> None:
            for i in range(purges):
                time.sleep(duration / (purges + 1))
                upload(app.url, folder, f"1.{i + 1}")
                done.append(time.monotonic())

        uploader = threading.Thread(target=uploads)
        uploader.start()
        results["varnish"] = wrk(varnish.url + page_url, duration)
        uploader.join()
        results["varnish"]["uploads_during_run"] = len(done)
        results["varnish"]["requests_reaching_app"] = varnish.backend_requests() - before
        with urllib.request.urlopen(varnish.url + page_url) as r:
            results["varnish"]["fresh_after_run"] = f"1.{purges}".encode() in r.read()

        results["app_direct"] = wrk(app.url + page_url, duration)
        results["varnish_vs_nginx"] = round(
            results["varnish"]["requests_per_second"] / results["nginx_static"]["requests_per_second"], 3
        )
        return results
    finally:
        if nginx is not None:
            stop(nginx)
        if varnish is not None:
            varnish.remove()
        app.stop()
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--purges", type=int, default=3, help="uploads during the Varnish run (default 3)")
    args = parser.parse_args(argv)
    results = run(args.duration, args.purges)
    results["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results["cpus"] = os.cpu_count()
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(results, f, indent=2)
    v, n, a = results["varnish"], results["nginx_static"], results["app_direct"]
    print(f"/simple/{NAME}/ ({results['page_bytes']} bytes), wrk -t2 -c16 -d{args.duration}s")
    print(f"  nginx, static file     {n['requests_per_second']:>10.0f} req/s  p99 {n['latency_p99']}")
    print(
        f"  Varnish (shipped VCL)  {v['requests_per_second']:>10.0f} req/s  p99 {v['latency_p99']}"
        f"  = {results['varnish_vs_nginx']:.0%} of nginx"
    )
    print(f"  application, no cache  {a['requests_per_second']:>10.0f} req/s  p99 {a['latency_p99']}")
    print(
        f"  requests that reached the application during the Varnish run: {v['requests_reaching_app']}"
        f" for {v['uploads_during_run']} uploads (purges); fresh afterwards: {v['fresh_after_run']}"
    )
    print(f"results: {os.path.relpath(RESULTS, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
