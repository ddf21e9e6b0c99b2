"""Report speed: a 24-hour report over 500 series at 10-s resolution and 1 million spans.

Builds (once, cached) a store as a service recorded for 24 h would leave it: 500 series
(233 histograms, 139 gauges, 128 counters: runtime metrics, HTTP server and client, DB,
span durations, queues, caches, jobs) flushed every 10 s = 8,640 points each, 4.3
million points, and 1,000,000 spans in traces of five, written through the store's own
write path (``Store.write_batch``). Then times, in this process, building the report
model and rendering it as JSON, Markdown and HTML, and `holter report` end to end.

    python bench/bench_report.py [--db PATH] [--rebuild] [--json OUT]

The report reads 5-minute/1-hour summaries of the points (holter.store.summaries),
kept current incrementally; ``summaries_catch_up_s`` is the one-time cost of building
them for a whole day that was never summarised (the first report after a day of
recording with no report in between). The target (issue 8) is under 3 s for the
report. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from holter.core.sketch import Sketch
from holter.model import Batch, Point, SeriesKey
from holter.store.sqlite import Store

HERE = Path(__file__).resolve().parent
DEFAULT_DB = HERE / "results" / "report-bench.db"
STEP_S = 10
HOURS = 24
SPANS = 1_000_000
NS = 1_000_000_000
REPEAT = 5


def series_keys() -> list[tuple[SeriesKey, str]]:
    """500 series and a value profile for each."""
    out: list[tuple[SeriesKey, str]] = []

    def add(metric: str, kind_: str, unit: str, profile: str, /, **tags: str) -> None:
        out.append((SeriesKey(metric, kind_, unit, tuple(sorted(tags.items()))), profile))

    for mode in ("user", "system"):
        add("process.cpu.utilization", "gauge", "%", "cpu", mode=mode)
    for name, unit, profile in (("process.memory.rss", "By", "rss"),
                                ("process.memory.uss", "By", "rss"),
                                ("process.open_fds", "1", "small"),
                                ("process.threads", "1", "small"),
                                ("process.uptime", "s", "uptime"),
                                ("system.cpu.utilization", "%", "cpu"),
                                ("system.memory.used", "%", "cpu"),
                                ("system.memory.available", "By", "rss")):
        add(name, "gauge", unit, profile)
    for switch in ("voluntary", "involuntary"):
        add("process.context_switches", "counter", "1", "count", kind=switch)
    for direction in ("read", "write"):
        add("process.io.bytes", "counter", "By", "count", direction=direction)
    for g in ("0", "1", "2"):
        add("python.gc.collections", "counter", "1", "count", generation=g)
        add("python.gc.pause", "histogram", "s", "gc", generation=g)
    routes = [f"/api/v1/resource{i}/{{id}}" for i in range(50)]
    for route in routes:
        for status in ("200", "500"):
            add("http.server.duration", "histogram", "s", "http", method="GET", route=route,
                status=status)
            add("http.server.requests", "counter", "1", "count", method="GET", route=route,
                status=status)
    for i in range(60):
        add("db.client.duration", "histogram", "s", "db", system="sqlite",
            operation=("SELECT", "INSERT", "UPDATE")[i % 3], table=f"table{i}")
    for i in range(40):
        add("span.duration", "histogram", "s", "http", name=f"operation.{i}")
    for i in range(30):
        add("http.client.duration", "histogram", "s", "http", method="GET",
            host=f"svc{i % 6}.internal", route=f"/v2/thing{i}")
        add("http.client.requests", "counter", "1", "count", method="GET",
            host=f"svc{i % 6}.internal", route=f"/v2/thing{i}", status="200")
    for i in range(40):
        add("queue.depth", "gauge", "1", "small", queue=f"q{i}")
    for i in range(20):
        add("cache.size", "gauge", "By", "rss", cache=f"c{i}")
    for i in range(60):
        add("jobs.processed", "counter", "1", "count", job=f"job{i}")
    assert len(out) == len(set(key for key, _ in out)) == 500, len(out)
    return out


def sketch_pool(profile: str, rng: random.Random, n: int = 48) -> list[tuple[Any, ...]]:
    """Pre-made histogram points: (count, total, min, max, m2, sketch bytes)."""
    scale = {"http": 0.03, "db": 0.002, "gc": 0.004}[profile]
    pool = []
    for _ in range(n):
        values = [rng.lognormvariate(math.log(scale), 0.6) for _ in range(rng.randint(20, 120))]
        sketch = Sketch()
        for v in values:
            sketch.add(v)
        mean = sum(values) / len(values)
        pool.append((float(len(values)), sum(values), min(values), max(values),
                     sum((v - mean) ** 2 for v in values), sketch.to_bytes()))
    return pool


def build(db: Path) -> None:
    """Write the 24-hour store through Store.write_batch."""
    if db.exists():
        db.unlink()
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    db.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    keys = series_keys()
    pools = {p: sketch_pool(p, rng) for p in ("http", "db", "gc")}
    end_ns = (time.time_ns() // NS) * NS
    start_ns = end_ns - HOURS * 3600 * NS
    store = Store.open(db)
    run_id = store.create_run(app="bench-service", version="1.0", argv=["service"], pid=1,
                              host="bench", python="3.11", started_ns=start_ns)
    steps = HOURS * 3600 // STEP_S
    spans_per_step = SPANS // steps
    span_left = SPANS - spans_per_step * steps
    trace_seq = 0
    t0 = time.perf_counter()
    for step in range(steps):
        t_start = start_ns + step * STEP_S * NS
        t_end = t_start + STEP_S * NS
        points = []
        for key, profile in keys:
            if key.kind == "histogram":
                n, total, lo, hi, m2, blob = rng.choice(pools[profile])
                points.append(Point(key, t_start, t_end, count=n, total=total, min=lo, max=hi,
                                    m2=m2, sketch=blob))
            elif key.kind == "counter":
                errors = ("status", "500") in key.tags
                points.append(Point(key, t_start, t_end,
                                    total=float(rng.randint(0, 3 if errors else 500))))
            else:
                base = {"cpu": 30.0, "rss": 2e8 + step * 1e4, "small": 20.0,
                        "uptime": step * STEP_S}[profile]
                value = base * rng.uniform(0.9, 1.1)
                points.append(Point(key, t_start, t_end, count=1.0, total=value, min=value,
                                    max=value, last=value))
        spans = []
        want = spans_per_step + (1 if step < span_left else 0)
        while len(spans) < want:
            trace_seq += 1
            trace_id = ((t_start // NS) << 96) | rng.getrandbits(96)
            root = rng.getrandbits(63) | 1
            begin = t_start + rng.randint(0, STEP_S * NS - 10**8)
            total = int(rng.lognormvariate(math.log(0.05), 0.7) * NS)
            spans.append((trace_id, root, None, f"operation.{trace_seq % 40}", begin, total,
                          "error" if rng.random() < 0.01 else "ok", None, None,
                          {"route": f"/api/v1/resource{trace_seq % 50}/{{id}}"}, None, False))
            at = begin
            for child in range(min(4, want - len(spans))):
                length = total // 5
                spans.append((trace_id, rng.getrandbits(63) | 1, root,
                              ("db.query", "cache.get", "http.client", "render")[child], at,
                              length, "ok", None, None, {"n": child}, None, False))
                at += length
        store.write_batch(run_id, Batch(t_start, t_end, points, spans))
        if step % 1000 == 0:
            print(f"  built {step}/{steps} steps in {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr)
    store.end_run(run_id, end_ns, 0, None)
    with store.atomic() as conn:
        conn.execute("INSERT OR REPLACE INTO holter_meta(key, value) VALUES "
                     "('bench_end_ns', ?)", (str(end_ns),))
    store.close()


def bench(db: Path) -> dict[str, Any]:
    """Time the report over the store's 24 hours."""
    from holter.reports import render
    from holter.reports.build import build_report

    store = Store.open(db, create=False)
    with store.reading() as conn:
        end_ns = int(conn.execute(
            "SELECT value FROM holter_meta WHERE key = 'bench_end_ns'").fetchone()[0])
        n_points = conn.execute("SELECT COUNT(*) FROM points").fetchone()[0]
        n_spans = conn.execute("SELECT SUM(spans) FROM span_chunks").fetchone()[0]
    result: dict[str, Any] = {"points": n_points, "spans": n_spans, "series": 500}
    from holter.store import query as q

    t = time.perf_counter()
    merged = q.refresh_summaries(store)
    result["summaries_catch_up_s"] = round(time.perf_counter() - t, 3)
    result["summaries_catch_up_points"] = merged
    runs = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        report = build_report(store, period="24h", now_ns=end_ns + 1, charts=True)
        runs.append(time.perf_counter() - t)
    result["build_s_runs"] = [round(x, 3) for x in runs]
    result["build_s_median"] = round(statistics.median(runs), 3)
    for fmt in ("json", "md", "html"):
        t = time.perf_counter()
        text = render(report, fmt)
        result[f"render_{fmt}_s"] = round(time.perf_counter() - t, 3)
        result[f"size_{fmt}_bytes"] = len(text.encode())
    store.close()
    out = db.parent / "report-bench.html"
    cli = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "holter", "report", "--db", str(db), "--since",
             str((end_ns - 24 * 3600 * NS) / NS), "--until", str((end_ns + 1) / NS), "-o",
             str(out)],
            capture_output=True, text=True, check=False)
        cli.append(time.perf_counter() - t)
        result["cli_rc"] = proc.returncode
    result["cli_html_end_to_end_s_runs"] = [round(x, 3) for x in cli]
    result["cli_html_end_to_end_s_median"] = round(statistics.median(cli), 3)
    result["load_average_1m"] = os.getloadavg()[0]
    result["target_s"] = 3.0
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", type=Path, default=DEFAULT_DB)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.rebuild or not args.db.exists():
        t = time.perf_counter()
        build(args.db)
        print(f"built {args.db} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    result = bench(args.db)
    result["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
