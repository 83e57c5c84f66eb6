"""One table: every figure as median (min–max), with CloudPyPI / best peer and CloudPyPI / limit.

Written as JSON (raw samples, table, targets) and Markdown to ``benchmarks/results/``
(a timestamped pair and ``latest.json`` / ``latest.md``).
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass

from benchmarks import RESULTS


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    #: True when a larger value is better.
    higher: bool
    #: Where the limit column comes from: "nginx", "floor" or "".
    limit: str = ""
    digits: int = 0


METRICS = [
    Metric("simple_project_rps", "GET /simple/<project>/ (20 files) req/s", "req/s", True, "nginx"),
    Metric("simple_project_p50_ms", "  median latency", "ms", False, "nginx", 2),
    Metric("simple_project_p99_ms", "  p99 latency", "ms", False, "nginx", 2),
    Metric("simple_index_rps", "GET /simple/ (51 projects) req/s", "req/s", True, "nginx"),
    Metric("simple_index_p50_ms", "  median latency", "ms", False, "nginx", 2),
    Metric("simple_index_p99_ms", "  p99 latency", "ms", False, "nginx", 2),
    Metric("fresh_of_20", "just-uploaded file listed (of 20 GETs)", "", True),
    Metric("upload_200mb_s", "twine upload 200 MB wheel, wall", "s", False, "floor", 2),
    Metric("upload_200mb_added_s", "  added over twine's floor", "s", False, "", 2),
    Metric("upload_200mb_over_s3_floor_s", "  added over the S3-on-moto floor", "s", False, "", 2),
    Metric("upload_200mb_rss_mb", "  server peak RSS", "MB", False),
    Metric("upload_200mb_client_cpu_s", "  twine's CPU time (s)", "s", False, "floor", 2),
    Metric("upload_200mb_server_cpu_s", "  server's CPU time (s)", "s", False, "floor", 2),
    Metric("upload_200mb_services_cpu_s", "  moto's CPU time (s; the store, same cores)", "s", False, "", 2),
    Metric("upload_1gib_s", "twine upload 1 GiB wheel, wall", "s", False, "floor", 2),
    Metric("upload_1gib_added_s", "  added over twine's floor", "s", False, "", 2),
    Metric("upload_1gib_rss_mb", "  server peak RSS", "MB", False),
    Metric("download_200mb_mbps", "download 200 MB file", "MB/s", True, "nginx"),
    Metric("load_small_s", "load 1,000 small wheels (4 uploaders at once)", "s", False, "", 1),
]
BY_KEY = {m.key: m for m in METRICS}
#: (label, key) of the CPU times an upload records: twine, the server (or floor), its services.
CPU_SIDES = (("twine", "client"), ("the relay", "server"), ("moto", "services"))
#: The limit record of twine against an endpoint that streams the raw body into moto (benchmarks.floor).
S3_FLOOR = "s3-floor"
#: (metric, lower-level test, threshold, description)
TARGETS = [
    ("simple_project_rps", "ratio_peer>=", 3.0, "/simple/<project>/ ≥ 3× the best peer's req/s"),
    ("simple_project_p99_ms", "<", 20.0, "/simple/<project>/ p99 < 20 ms at 16 connections"),
    ("upload_200mb_added_s", "<=", 1.0, "200 MB upload: ≤ 1.0 s over twine's floor"),
    ("upload_1gib_rss_mb", "<", 100.0, "1 GiB upload: server peak RSS < 100 MB"),
    ("download_200mb_mbps", "ratio_limit>=", 0.8, "download ≥ 80 % of nginx's throughput"),
    ("fresh_of_20", ">=", 20, "a just-uploaded file is listed by 20 of 20 GETs"),
]


def stats(samples: list[float]) -> dict | None:
    if not samples:
        return None
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples)}


def derive(results: dict) -> None:
    """Add the 'added over the floor' figures from the uploads and the floors' medians.

    Every server's uploads are compared with twine's floor; those of a server that
    stores in S3 (``-s3`` in its name) with the S3-on-moto floor too.
    """
    floor = results["servers"].get("twine-floor", {}).get("metrics", {})
    s3_floor = results["servers"].get(S3_FLOOR, {}).get("metrics", {})
    for size in ("200mb", "1gib"):
        base = floor.get(f"upload_{size}_s")
        s3_base = s3_floor.get(f"upload_{size}_s")
        for name, server in results["servers"].items():
            if name == "twine-floor":
                continue
            samples = server.get("metrics", {}).get(f"upload_{size}_s")
            if samples and base:
                base_median = statistics.median(base)
                server["metrics"][f"upload_{size}_added_s"] = [s - base_median for s in samples]
            if samples and s3_base and name.endswith("-s3"):
                s3_median = statistics.median(s3_base)
                server["metrics"][f"upload_{size}_over_s3_floor_s"] = [s - s3_median for s in samples]


def build_table(results: dict) -> dict:
    """Rows of the table: per metric, each server's stats, the best peer, the limit and the ratios."""
    derive(results)
    servers = results["servers"]
    ours = [n for n, s in servers.items() if s.get("kind") == "cloudpypi"]
    peers = [n for n, s in servers.items() if s.get("kind") == "peer"]
    rows = []
    for m in METRICS:
        cells = {n: stats(servers[n].get("metrics", {}).get(m.key, [])) for n in [*ours, *peers]}
        limit_name = {"nginx": "nginx", "floor": "twine-floor"}.get(m.limit)
        limit = stats(servers.get(limit_name, {}).get("metrics", {}).get(m.key, [])) if limit_name else None
        present = [(n, cells[n]) for n in peers if cells[n]]
        best = None
        if present:
            pick = max if m.higher else min
            name, st = pick(present, key=lambda item: item[1]["median"])
            best = {"server": name, **st}
        ratios_peer = {n: _ratio(cells[n], best) for n in ours}
        ratios_limit = {n: _ratio(cells[n], limit) for n in ours}
        if not any(cells.values()) and not limit:
            continue
        rows.append(
            {
                "metric": m.key,
                "label": m.label,
                "unit": m.unit,
                "higher_is_better": m.higher,
                "servers": cells,
                "limit": limit,
                "limit_source": limit_name,
                "best_peer": best,
                "ratio_best_peer": ratios_peer,
                "ratio_limit": ratios_limit,
            }
        )
    return {"cloudpypi": ours, "peers": peers, "rows": rows}


def _ratio(a: dict | None, b: dict | None) -> float | None:
    if not a or not b or not b["median"]:
        return None
    return a["median"] / b["median"]


def evaluate_targets(table: dict) -> list[dict]:
    rows = {r["metric"]: r for r in table["rows"]}
    out = []
    for key, test, threshold, text in TARGETS:
        row = rows.get(key)
        per = {}
        for name in table["cloudpypi"]:
            if row is None:
                per[name] = {"value": None, "met": None}
                continue
            if test == "ratio_peer>=":
                value = row["ratio_best_peer"].get(name)
                met = None if value is None else value >= threshold
            elif test == "ratio_limit>=":
                value = row["ratio_limit"].get(name)
                met = None if value is None else value >= threshold
            else:
                cell = row["servers"].get(name)
                value = cell["median"] if cell else None
                if value is None:
                    met = None
                elif test == "<":
                    met = value < threshold
                elif test == "<=":
                    met = value <= threshold
                else:
                    met = value >= threshold
            per[name] = {"value": value, "met": met}
        out.append({"metric": key, "target": text, "results": per})
    return out


# -- formatting ------------------------------------------------------------------
def _num(value: float, digits: int) -> str:
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _cell(st: dict | None, m: Metric) -> str:
    if not st:
        return "—"
    med = _num(st["median"], m.digits)
    if st["n"] < 2:
        return med
    return f"{med} ({_num(st['min'], m.digits)}–{_num(st['max'], m.digits)})"


def _ratios(values: dict[str, float | None]) -> str:
    shown = [("—" if v is None else f"{v:.2f}×") for v in values.values()]
    return " · ".join(shown) if shown else "—"


def markdown(results: dict, table: dict, targets: list[dict]) -> str:
    meta = results["meta"]
    ours, peers = table["cloudpypi"], table["peers"]
    reps = meta.get("repetitions")
    mode = "quick (1 repetition, 5 s wrk, no 1 GiB)" if meta.get("quick") else f"{reps} repetitions"
    lines = [
        "# CloudPyPI benchmark",
        "",
        f"- run: {meta.get('started', '?')}, {meta.get('elapsed_s', 0) / 60:.1f} min, {mode}"
        f", wrk {meta.get('wrk_threads')} threads / {meta.get('wrk_connections')} connections / "
        f"{meta.get('wrk_seconds')} s",
        f"- machine: {meta.get('machine', '?')}",
        f"- peers: {', '.join(f'{k} {v}' for k, v in meta.get('versions', {}).items())}",
        "- each cell: median (min–max) of the repetitions; ratios are CloudPyPI's median over the other's, "
        "one per CloudPyPI configuration in column order "
        f"({' · '.join(ours)}); for req/s and MB/s higher is better, for ms, s and MB lower is better.",
        "- limit: nginx serving the same page / file as a static file; for uploads, twine against an "
        "endpoint that discards the body (twine's own time).",
        *_s3_floor_lines(results),
        "",
    ]
    head = ["", *ours, *peers, "limit", "best peer", "CloudPyPI / best peer", "CloudPyPI / limit"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    for row in table["rows"]:
        m = BY_KEY[row["metric"]]
        label = m.label.strip()
        if m.label.startswith("  "):
            label = "↳ " + label
        unit = f" ({m.unit})" if m.unit and m.unit not in m.label else ""
        best = row["best_peer"]
        best_text = f"{_cell(best, m)} {best['server']}" if best else "—"
        cells = [
            f"{label}{unit}",
            *(_cell(row["servers"].get(n), m) for n in ours),
            *(_cell(row["servers"].get(n), m) for n in peers),
            _cell(row["limit"], m),
            best_text,
            _ratios(row["ratio_best_peer"]),
            _ratios(row["ratio_limit"]) if row["limit"] else "—",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Targets (issue 5)",
        "",
        "| target | " + " | ".join(ours) + " |",
        "|---|" + "---|" * len(ours),
    ]
    for t in targets:
        cells = []
        for name in ours:
            r = t["results"][name]
            if r["met"] is None:
                cells.append("not measured")
                continue
            value = r["value"]
            shown = f"{value:.2f}" if isinstance(value, float) else str(value)
            cells.append(f"{'met' if r['met'] else '**missed**'} ({shown})")
        lines.append(f"| {t['target']} | " + " | ".join(cells) + " |")
    lines += ["", "## Notes", ""]
    for name, server in results["servers"].items():
        for note in server.get("notes", []):
            lines.append(f"- {name}: {note}")
        for what, error in server.get("errors", {}).items():
            lines.append(f"- {name}: **{what} failed**: {error.splitlines()[0] if error else ''}")
        busy = server.get("busy") or []
        if busy:
            lines.append(f"- {name}: other processes were busy during {len(busy)} samples, e.g. {busy[0]}")
    return "\n".join(lines) + "\n"


def _s3_floor_lines(results: dict) -> list[str]:
    """What the S3-on-moto floor costs over twine's: moto's share of an S3 upload, on the same cores."""
    servers = results["servers"]
    metrics = servers.get(S3_FLOOR, {}).get("metrics", {})
    s3 = metrics.get("upload_200mb_s")
    twine = servers.get("twine-floor", {}).get("metrics", {}).get("upload_200mb_s")
    if not s3:
        return []
    line = (
        f"- S3-on-moto floor: twine against an endpoint that streams the raw body (not parsed, hashed "
        f"or spooled) into moto as a multipart upload: 200 MB in {statistics.median(s3):.2f} s"
    )
    if twine:
        line += (
            f", {statistics.median(s3) - statistics.median(twine):.2f} s over twine's floor: moto's own "
            "share (it runs on the same cores; a real S3 spends none of this machine's CPU). A server on "
            "S3 is compared with it in the row 'added over the S3-on-moto floor'."
        )
    cpu = [(what, metrics.get(f"upload_200mb_{key}_cpu_s")) for what, key in CPU_SIDES]
    shown = [f"{what} {statistics.median(v):.2f} s" for what, v in cpu if v]
    if shown:
        line += f" CPU time in it: {', '.join(shown)}."
    return [line]


def write(results: dict, stamp: str) -> tuple[str, str, str]:
    """Write the JSON and Markdown; return (json path, markdown path, markdown text)."""
    table = build_table(results)
    targets = evaluate_targets(table)
    text = markdown(results, table, targets)
    os.makedirs(RESULTS, exist_ok=True)
    payload = {**results, "table": table, "targets": targets}
    paths = []
    for base in (f"benchmark-{stamp}", "latest"):
        jp = os.path.join(RESULTS, base + ".json")
        mp = os.path.join(RESULTS, base + ".md")
        with open(jp, "w") as f:
            json.dump(payload, f, indent=1, default=str)
        with open(mp, "w") as f:
            f.write(text)
        paths.append((jp, mp))
    return paths[0][0], paths[0][1], text
