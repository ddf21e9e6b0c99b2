#!/usr/bin/env python
"""Hot-path benchmark: holter against prometheus_client and the OpenTelemetry SDK.

Usage::

    python bench/bench_core.py [--quick] [--repeats N] [--iterations N] [--out FILE]
                               [--slices N] [--import-runs N] [--memory-observations N]
                               [--skip hot|import|memory]

The JSON result goes to stdout (and to ``--out``); progress and a summary table go
to stderr. Every repeat runs the holter, prometheus_client and OpenTelemetry
variants of every case in turn, in one process, so the libraries see the same
machine state; the figures are medians over repeats. ``bench/README.md`` explains
the method, including how holter's deferred work (folding buffered histogram values
into a sketch) is counted: it is inside the timed region.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

UNROLL = 10
"""Statements per loop iteration: the loop's own cost is spread over ten operations."""

POOL_SIZE = 8191
"""Distinct latencies cycled through by the histogram cases (the same for every library)."""

SEED = 20240601
LATENCY_MEDIAN_S = 0.020
LATENCY_SIGMA = 1.0

OTEL_DIVISOR = 10
"""The OpenTelemetry SDK is ~10-50x slower per call; its loops run iterations / 10 ops."""

FULL = {"repeats": 11, "iterations": 200_000, "slices": 10, "memory_large": 10_000_000,
        "import_runs": 7}
QUICK = {"repeats": 5, "iterations": 40_000, "slices": 8, "memory_large": 1_000_000,
         "import_runs": 7}
MEMORY_SMALL = 10_000
MEMORY_TARGET_KIB = 64.0

HEAVY_MODULES = (
    "numpy",
    "psutil",
    "click",
    "rich",
    "textual",
    "jinja2",
    "httpx",
    "opentelemetry",
    "prometheus_client",
    "sqlite3",
    "_sqlite3",
    "asyncio",
    "concurrent.futures",
    "logging",
    "inspect",
    "socket",
    "ssl",
    "email",
    "http.client",
    "urllib.request",
    "decimal",
    "json",
    "tempfile",
    "subprocess",
    "threading",
    "dataclasses",
)
"""Modules whose presence after an import is reported (third-party and costly stdlib)."""


def log(message: str) -> None:
    """Progress on stderr (stdout carries only the JSON)."""
    print(message, file=sys.stderr, flush=True)


def latencies(count: int, seed: int = SEED) -> list[float]:
    """Lognormal latencies in seconds (median 20 ms), reproducible from ``seed``."""
    rng = random.Random(seed)
    mu = math.log(LATENCY_MEDIAN_S)
    return [rng.lognormvariate(mu, LATENCY_SIGMA) for _ in range(count)]


# -- timed loops ------------------------------------------------------------------------


@dataclass
class Variant:
    """One way of doing a case's operation with one library."""

    key: str
    library: str  # holter | prometheus | otel | loop
    code: str  # the operation as a user writes it (shown in the JSON)
    stmt: str  # the statement compiled into the loop; "{v}" stands for the value
    names: dict[str, Any]
    values: bool = False
    finish: Callable[[], Any] | None = None  # inside the timed region (holter: collect)
    check: Callable[[Any, int], None] | None = None  # after the timed region
    before: Callable[[], None] | None = None  # before the timed region (fold mode)
    note: str = ""
    ops: int = 0
    samples: list[float] = field(default_factory=list)  # ns/op, one per repeat
    loop: Callable[..., tuple[float, Any]] | None = None
    items: Any = None


def compile_loop(variant: Variant) -> Callable[..., tuple[float, Any]]:
    """Build ``_loop(_items, _perf, _finish, **names) -> (seconds, finish result)``.

    The statement is repeated :data:`UNROLL` times per iteration. With ``values``,
    ``_items`` is a list of tuples of :data:`UNROLL` values unpacked into ``_v0..``.
    ``_finish()`` runs inside the timed region: holter's ``collector.collect`` after the
    last slice of a sample, a no-op otherwise (and for the peers).
    """
    params = ["_items", "_perf", "_finish", *sorted(variant.names)]
    lines = [f"def _loop({', '.join(params)}):", "    _t0 = _perf()"]
    if variant.values:
        targets = ", ".join(f"_v{i}" for i in range(UNROLL))
        lines.append(f"    for {targets} in _items:")
        body = [variant.stmt.replace("{v}", f"_v{i}") for i in range(UNROLL)]
    else:
        lines.append("    for _ in _items:")
        body = [variant.stmt] * UNROLL
    lines += [f"        {stmt}" for stmt in body]
    lines.append("    _r = _finish()")
    lines.append("    return _perf() - _t0, _r")
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), f"<bench {variant.key}>", "exec"), namespace)
    return namespace["_loop"]


def _noop() -> None:
    return None


def prepare(variant: Variant, iterations: int, slices: int,
            chunks: list[tuple[float, ...]]) -> None:
    """Compile the loop and fix the items one slice iterates (built before any timing)."""
    n = iterations // OTEL_DIVISOR if variant.library == "otel" else iterations
    rounds = max(n // (UNROLL * slices), 1)
    variant.ops = rounds * UNROLL  # per slice
    variant.loop = compile_loop(variant)
    if variant.values:
        if rounds > len(chunks):
            raise ValueError(f"{variant.key}: needs {rounds} value chunks, have {len(chunks)}")
        variant.items = chunks[:rounds]
    else:
        variant.items = range(rounds)


def run_slice(variant: Variant, last: bool, slices: int) -> float:
    """Run one timed slice; the last slice of a sample ends with holter's collect.

    Returns seconds. After the last slice, the holter check verifies that the collect
    saw every operation of the sample's ``slices`` slices.
    """
    if variant.before is not None:
        variant.before()
    assert variant.loop is not None
    finish = variant.finish if last and variant.finish is not None else _noop
    seconds, result = variant.loop(variant.items, time.perf_counter, finish, **variant.names)
    if last and variant.check is not None:
        variant.check(result, variant.ops * slices)
    return seconds


@dataclass
class Case:
    """One operation compared across libraries, with its loop-only baseline."""

    key: str
    title: str
    variants: list[Variant]
    comparisons: list[tuple[str, str]]  # (holter variant, peer variant)


def holter_check(name: str, field_name: str) -> Callable[[Any, int], None]:
    """Verify that the collect inside the timed region saw every operation of the loop."""

    def check(batch: Any, ops: int) -> None:
        got = sum(getattr(p, field_name) for p in batch.points if p.key.name == name)
        if got != ops:
            raise AssertionError(f"holter {name}: collect saw {field_name}={got}, expected {ops}")

    return check


def fold_mode(numpy: bool) -> Callable[[], None]:
    """Select holter's fold implementation before a loop (outside the timed region)."""
    from holter.core import _cells

    def before() -> None:
        _cells.use_numpy(numpy)
        if numpy and not _cells.load_numpy():
            raise RuntimeError("numpy fold requested but numpy is not importable")

    return before


def build_cases(stack: contextlib.ExitStack) -> list[Case]:
    """Create every instrument (holter, prometheus_client, OpenTelemetry) and the cases."""
    import prometheus_client as prom
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    import holter.testing

    def monitor() -> Any:
        # strict=False is the production default (strict adds a finiteness check to
        # observe); start=False: no thread, the loop's finish step collects instead.
        return stack.enter_context(holter.testing.monitor(strict=False))

    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    stack.callback(provider.shutdown)
    meter = provider.get_meter("bench")
    buckets = [b for b in prom.Histogram.DEFAULT_BUCKETS if b != math.inf]
    perf = time.perf_counter
    no_numpy = fold_mode(False)
    with_numpy = fold_mode(True)

    def loop(values: bool = False) -> Variant:
        return Variant("loop_only", "loop", "(empty loop body)", "pass", {}, values=values)

    # 1. counter inc on a bound series
    m1 = monitor()
    r1 = prom.CollectorRegistry()
    c1 = m1.counter("c").bind(a="x")
    p1 = prom.Counter("c", "bench", ["a"], registry=r1).labels("x")
    o1 = meter.create_counter("c1")
    case1 = Case(
        "counter_inc_bound",
        "counter inc on a bound series",
        [
            Variant("holter_bound", "holter", 'c = mon.counter("c").bind(a="x"); c.inc()',
                    "c.inc()", {"c": c1}, finish=m1.collector.collect,
                    check=holter_check("c", "total"), before=with_numpy),
            Variant("prometheus_bound", "prometheus",
                    "c = Counter('c', '', ['a']).labels('x'); c.inc()", "c.inc()", {"c": p1}),
            Variant("otel_add_attrs", "otel", 'c.add(1, attrs)  # attrs = {"a": "x"} built once',
                    "c.add(1, attrs)", {"c": o1, "attrs": {"a": "x"}},
                    note="OpenTelemetry has no bound instrument; reference only"),
            loop(),
        ],
        [("holter_bound", "prometheus_bound"), ("holter_bound", "otel_add_attrs")],
    )

    # 2. counter inc with two tags
    m2a = monitor()
    m2b = monitor()
    r2 = prom.CollectorRegistry()
    c2 = m2a.counter("http.requests")
    p2 = prom.Counter("http_requests", "bench", ["method", "status"], registry=r2)
    o2 = meter.create_counter("http.requests")
    case2 = Case(
        "counter_inc_2_tags",
        "counter inc with 2 tags",
        [
            Variant("holter_held", "holter", 'c.inc(method="GET", status=200)',
                    'c.inc(method="GET", status=200)', {"c": c2},
                    finish=m2a.collector.collect, check=holter_check("http.requests", "total"),
                    before=with_numpy),
            Variant("holter_by_name", "holter",
                    'mon.counter("http.requests").inc(method="GET", status=200)',
                    'mon.counter("http.requests").inc(method="GET", status=200)', {"mon": m2b},
                    finish=m2b.collector.collect, check=holter_check("http.requests", "total"),
                    before=with_numpy, note="includes the monitor's lookup of the name"),
            Variant("prometheus_labels", "prometheus", 'c.labels("GET", "200").inc()',
                    'c.labels("GET", "200").inc()', {"c": p2}),
            Variant("otel_add", "otel", 'c.add(1, {"method": "GET", "status": 200})',
                    'c.add(1, {"method": "GET", "status": 200})', {"c": o2}),
            loop(),
        ],
        [
            ("holter_held", "prometheus_labels"),
            ("holter_held", "otel_add"),
            ("holter_by_name", "prometheus_labels"),
            ("holter_by_name", "otel_add"),
        ],
    )

    # 3. bound histogram observe, the same lognormal latencies for every library
    m3n = monitor()
    m3p = monitor()
    r3 = prom.CollectorRegistry()
    h3n = m3n.histogram("lat", unit="s").bind(route="/u")
    h3p = m3p.histogram("lat", unit="s").bind(route="/u")
    p3 = prom.Histogram("lat_seconds", "bench", ["route"], registry=r3).labels("/u")
    o3 = meter.create_histogram("lat", unit="s", explicit_bucket_boundaries_advisory=buckets)
    case3 = Case(
        "histogram_observe_bound",
        "bound histogram observe (lognormal latencies, median 20 ms)",
        [
            Variant("holter_bound_numpy_fold", "holter",
                    'h = mon.histogram("lat").bind(route="/u"); h.observe(v)', "h.observe({v})",
                    {"h": h3n}, values=True, finish=m3n.collector.collect,
                    check=holter_check("lat", "count"), before=with_numpy,
                    note="buffered values folded with numpy (the default when installed)"),
            Variant("holter_bound_python_fold", "holter",
                    'h = mon.histogram("lat").bind(route="/u"); h.observe(v)', "h.observe({v})",
                    {"h": h3p}, values=True, finish=m3p.collector.collect,
                    check=holter_check("lat", "count"), before=no_numpy,
                    note="buffered values folded in pure Python (use_numpy(False))"),
            Variant("prometheus_bound", "prometheus",
                    "h = Histogram('lat', '', ['route']).labels('/u'); h.observe(v)",
                    "h.observe({v})", {"h": p3}, values=True,
                    note="default buckets (0.005 s .. 10 s, 15 buckets)"),
            Variant("otel_record", "otel", 'h.record(v, attrs)  # attrs = {"route": "/u"}',
                    "h.record({v}, attrs)", {"h": o3, "attrs": {"route": "/u"}}, values=True,
                    note="explicit buckets = prometheus default buckets"),
            loop(values=True),
        ],
        [
            ("holter_bound_numpy_fold", "prometheus_bound"),
            ("holter_bound_python_fold", "prometheus_bound"),
            ("holter_bound_numpy_fold", "otel_record"),
            ("holter_bound_python_fold", "otel_record"),
        ],
    )

    # 4. timer context manager around an empty body
    m4a = monitor()
    m4b = monitor()
    m4c = monitor()
    r4 = prom.CollectorRegistry()
    h4 = m4b.histogram("db.query", unit="s")
    p4 = prom.Histogram("db_query_seconds", "bench", registry=r4)
    o4 = meter.create_histogram("db.query", unit="s", explicit_bucket_boundaries_advisory=buckets)
    case4 = Case(
        "timer_context_manager",
        "timer context manager (empty body)",
        [
            Variant("holter_timer", "holter", 'with mon.timer("db.query"): pass',
                    'with mon.timer("db.query"): pass', {"mon": m4a},
                    finish=m4a.collector.collect, check=holter_check("db.query", "count"),
                    before=with_numpy, note="includes the monitor's lookup of the name"),
            Variant("holter_held_time", "holter",
                    'h = mon.histogram("db.query", unit="s"); with h.time(): pass',
                    "with h.time(): pass", {"h": h4}, finish=m4b.collector.collect,
                    check=holter_check("db.query", "count"), before=with_numpy,
                    note="held Histogram; a bound series (HistogramCell) has no .time()"),
            Variant("holter_timer_tagged", "holter",
                    'with mon.timer("db.query", table="users"): pass',
                    'with mon.timer("db.query", table="users"): pass', {"mon": m4c},
                    finish=m4c.collector.collect, check=holter_check("db.query", "count"),
                    before=with_numpy, note="DESIGN.md's example: one tag, name lookup"),
            Variant("prometheus_time", "prometheus", "with h.time(): pass",
                    "with h.time(): pass", {"h": p4}),
            Variant("otel_emulated", "otel",
                    "t0 = perf_counter(); h.record(perf_counter() - t0)  # no timer in OTel",
                    "_t = perf(); h.record(perf() - _t)", {"h": o4, "perf": perf},
                    note="emulated: OpenTelemetry has no timer"),
            loop(),
        ],
        [
            ("holter_timer", "prometheus_time"),
            ("holter_held_time", "prometheus_time"),
            ("holter_timer_tagged", "prometheus_time"),
            ("holter_timer", "otel_emulated"),
        ],
    )
    return [case1, case2, case3, case4]


def summarise(samples: list[float]) -> dict[str, float]:
    """Median, spread and quartiles of one variant's ns/op samples."""
    ordered = sorted(samples)
    quart = statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else ordered * 3
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "q1": quart[0],
        "q3": quart[2],
    }


def run_hot_path(repeats: int, iterations: int, slices: int) -> dict[str, Any]:
    """Run every case's variants interleaved ``repeats`` times; medians and ratios.

    One sample of a variant is ``slices`` timed slices; within a case the slices of
    all variants alternate (A1 B1 C1 A2 B2 C2 ...), so a burst of machine noise is
    shared rather than landing on one library. The order rotates per repeat.
    """
    from holter.core import _cells

    pool = latencies(POOL_SIZE)
    rounds = max(iterations // (UNROLL * slices), 1)
    cyc = (pool[i % POOL_SIZE] for i in range(rounds * UNROLL))
    chunks = list(zip(*[cyc] * UNROLL, strict=True))
    out: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        cases = build_cases(stack)
        for case in cases:
            for variant in case.variants:
                prepare(variant, iterations, slices, chunks)
                for i in range(slices):  # warm-up: series, aliases, caches
                    run_slice(variant, i == slices - 1, slices)
        started = time.perf_counter()
        for r in range(repeats):
            gc.collect()
            for case in cases:
                k = r % len(case.variants)  # rotate the order: no library always goes first
                order = case.variants[k:] + case.variants[:k]
                totals = dict.fromkeys([v.key for v in order], 0.0)
                for i in range(slices):
                    for variant in order:
                        totals[variant.key] += run_slice(variant, i == slices - 1, slices)
                for variant in order:
                    variant.samples.append(totals[variant.key] / (variant.ops * slices) * 1e9)
            log(f"  repeat {r + 1}/{repeats} done ({time.perf_counter() - started:.1f} s)")
        _cells.use_numpy(True)
        _cells.load_numpy()
        for case in cases:
            out[case.key] = case_result(case, slices)
    return out


def case_result(case: Case, slices: int) -> dict[str, Any]:
    """The JSON of one case: per-variant raw and net ns/op, then holter/peer ratios."""
    by_key = {v.key: v for v in case.variants}
    loop_ns = summarise(by_key["loop_only"].samples)["median"]
    variants: dict[str, Any] = {}
    for v in case.variants:
        s = summarise(v.samples)
        entry: dict[str, Any] = {
            "library": v.library,
            "code": v.code,
            "ops_per_sample": v.ops * slices,
            "slices_per_sample": slices,
            "raw_ns_median": round(s["median"], 2),
            "net_ns_median": round(s["median"] - loop_ns, 2),
            "raw_ns_min": round(s["min"], 2),
            "raw_ns_max": round(s["max"], 2),
            "raw_ns_iqr": [round(s["q1"], 2), round(s["q3"], 2)],
            "samples_raw_ns": [round(x, 2) for x in v.samples],
        }
        if v.finish is not None:
            entry["deferred_work"] = ("collector.collect() at the end of each sample, inside "
                                      "the timed region")
        if v.note:
            entry["note"] = v.note
        variants[v.key] = entry
    loop_samples = by_key["loop_only"].samples
    ratios = []
    for mine, peer in case.comparisons:
        a, b = variants[mine], variants[peer]
        per_repeat = [
            (x - z) / (y - z)
            for x, y, z in zip(by_key[mine].samples, by_key[peer].samples, loop_samples,
                               strict=True)
        ]
        ratios.append({
            "holter": mine,
            "peer": peer,
            "ratio_raw": round(a["raw_ns_median"] / b["raw_ns_median"], 4),
            "ratio_net": round(a["net_ns_median"] / b["net_ns_median"], 4),
            "ratio_net_per_repeat": [round(x, 4) for x in per_repeat],
        })
    return {"title": case.title, "loop_only_ns": round(loop_ns, 2), "variants": variants,
            "ratios": ratios}


def fold_costs(repeats: int) -> dict[str, Any]:
    """The deferred work in isolation: fold cost per value, and one collect's fixed cost."""
    import holter.testing
    from holter.core import _cells

    chunk = array("d", (latencies(POOL_SIZE) * 2)[: _cells.BUFFER_CAP])
    out: dict[str, Any] = {"values_per_fold": len(chunk)}
    for label, numpy in (("numpy", True), ("python", False)):
        fold_mode(numpy)()
        samples = []
        for _ in range(max(repeats, 5)):
            stats = _cells.HistogramStats()
            t0 = time.perf_counter()
            _cells.fold_into(stats, chunk)
            samples.append((time.perf_counter() - t0) / len(chunk) * 1e9)
        per_value = statistics.median(samples)
        out[f"fold_{label}_ns_per_value_median"] = round(per_value, 2)
        # The thread whose observe() fills the buffer folds it inline: one call in
        # BUFFER_CAP pauses this long.
        out[f"inline_fold_pause_{label}_ms"] = round(per_value * _cells.BUFFER_CAP / 1e6, 3)
    fold_mode(True)()
    # A collect of one histogram whose buffer is already folded: serialising the sketch
    # and building the point, paid once per series per flush interval.
    samples = []
    buckets = 0
    with holter.testing.monitor(strict=False) as mon:
        cell = mon.histogram("lat", unit="s").bind(route="/u")
        for _ in range(max(repeats, 5)):
            for v in chunk:
                cell.observe(v)
            cell.fold()
            buckets = len(cell._stats.sketch)
            t0 = time.perf_counter()
            mon.collector.collect()
            samples.append((time.perf_counter() - t0) * 1e6)
    out["collect_one_folded_histogram_us_median"] = round(statistics.median(samples), 1)
    out["collect_sketch_buckets"] = buckets
    out["buffer_cap"] = _cells.BUFFER_CAP
    out["note"] = ("isolated figures for context; the hot-path histogram lines already include "
                   "this work inside their timed region. inline_fold_pause_* = fold cost per "
                   "value x BUFFER_CAP: the pause of the one observe() call in BUFFER_CAP that "
                   "folds a full buffer on the recording thread")
    return out


# -- import time ------------------------------------------------------------------------

IMPORT_CHILD = """\
import sys, time
_before = set(sys.modules)
_t0 = time.perf_counter()
{stmt}
_t1 = time.perf_counter()
_new = sorted(set(sys.modules) - _before)
import json
print(json.dumps({{"seconds": _t1 - _t0, "new": _new}}))
"""

IMPORTS = {
    "bare_interpreter": "pass",
    "holter": "import holter",
    "prometheus_client": "import prometheus_client",
    "opentelemetry.sdk.metrics": "import opentelemetry.sdk.metrics",
    "holter.monitor": "import holter.monitor",
}


def _import_once(stmt: str) -> tuple[float, float, list[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_CHILD.format(stmt=stmt)],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    wall = time.perf_counter() - t0
    data = json.loads(proc.stdout)
    return data["seconds"], wall, data["new"]


def import_times(runs: int) -> dict[str, Any]:
    """Median import time of each module in fresh interpreters, interleaved, plus baseline."""
    for stmt in IMPORTS.values():  # warm-up: .pyc files and the OS file cache
        _import_once(stmt)
    import_s: dict[str, list[float]] = {k: [] for k in IMPORTS}
    wall_s: dict[str, list[float]] = {k: [] for k in IMPORTS}
    new_modules: dict[str, list[str]] = {}
    for r in range(runs):
        keys = list(IMPORTS)
        keys = keys[r % len(keys):] + keys[: r % len(keys)]
        for key in keys:
            sec, wall, new = _import_once(IMPORTS[key])
            import_s[key].append(sec)
            wall_s[key].append(wall)
            new_modules[key] = new
    bare_wall = statistics.median(wall_s["bare_interpreter"])
    result: dict[str, Any] = {"runs": runs, "modules": {}}
    for key in IMPORTS:
        new = new_modules[key]
        heavy = [m for m in HEAVY_MODULES if m in new]
        result["modules"][key] = {
            "statement": IMPORTS[key],
            "import_ms_median": round(statistics.median(import_s[key]) * 1e3, 3),
            "import_ms_samples": [round(x * 1e3, 3) for x in import_s[key]],
            "process_wall_ms_median": round(statistics.median(wall_s[key]) * 1e3, 2),
            "process_wall_minus_bare_ms": round((statistics.median(wall_s[key]) - bare_wall)
                                                * 1e3, 2),
            "modules_added": len(new),
            "top_level_packages_added": sorted({m.split(".")[0] for m in new}),
            "watched_modules_present": heavy,
        }
    mods = result["modules"]
    prom_ms = mods["prometheus_client"]["import_ms_median"]
    result["ratio_holter_to_prometheus"] = round(mods["holter"]["import_ms_median"] / prom_ms, 4)
    result["ratio_holter_monitor_to_prometheus"] = round(
        mods["holter.monitor"]["import_ms_median"] / prom_ms, 4)
    result["ratio_holter_to_otel_sdk_metrics"] = round(
        mods["holter"]["import_ms_median"] / mods["opentelemetry.sdk.metrics"]["import_ms_median"],
        4)
    result["method"] = (
        "each statement timed with perf_counter inside a fresh `python -c` process (the "
        "interpreter's own start-up is not included); medians of `runs` rounds, the five "
        "statements interleaved in each round after one discarded warm-up round. "
        "process_wall_* is the whole subprocess, measured by the parent. 'holter.monitor' is "
        "what holter.start() imports on first use; it is context, not a target."
    )
    return result


# -- memory -----------------------------------------------------------------------------


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux
        import psutil

        return int(psutil.Process().memory_info().rss)


MEMORY_POOL_MAX = 1_000_000
"""Distinct values the memory run cycles through (generated before the 'empty' checkpoint)."""


def latency_pool(count: int, seed: int = SEED) -> list[float]:
    """``count`` fresh lognormal latencies as Python floats (numpy's RNG when installed)."""
    mu = math.log(LATENCY_MEDIAN_S)
    try:
        import numpy
    except ImportError:
        return latencies(count, seed)
    return numpy.random.default_rng(seed).lognormal(mu, LATENCY_SIGMA, count).tolist()


def memory_child(large: int, use_tracemalloc: bool) -> dict[str, Any]:
    """Observe ``large`` values into one bound histogram and measure memory at checkpoints."""
    import tracemalloc

    import holter.testing
    from holter.core import _cells

    numpy = _cells.load_numpy()
    # Up to a million distinct values, made before measuring and cycled: the sketch meets
    # the tails a long stream reaches, and feeding allocates nothing (tracemalloc stays fast).
    pool = latency_pool(min(large, MEMORY_POOL_MAX))
    with holter.testing.monitor(strict=False) as mon:
        cell = mon.histogram("lat", unit="s").bind(route="/u")
        # Warm the fold path once on throwaway statistics (numpy's first-call set-up is
        # not the histogram's memory); the measured histogram starts empty.
        _cells.fold_into(_cells.HistogramStats(), array("d", pool[:_cells.BUFFER_CAP]))
        observe = cell.observe
        position = 0

        def feed(n: int) -> None:
            nonlocal position
            while n > 0:
                stop = min(position + n, len(pool))
                for v in itertools.islice(pool, position, stop):
                    observe(v)
                n -= stop - position
                position = stop % len(pool)

        def measure() -> dict[str, Any]:
            gc.collect()
            point = {
                "rss_bytes": _rss_bytes(),
                "buffered_values": cell.pending(),
                "sketch_buckets": len(cell._stats.sketch),
                "count_in_interval": cell._stats.count,
            }
            if use_tracemalloc:
                point["traced_bytes"] = tracemalloc.get_traced_memory()[0]
            return point

        gc.collect()
        if use_tracemalloc:
            tracemalloc.start()
        points: dict[str, Any] = {"empty": measure()}
        t0 = time.perf_counter()
        feed(MEMORY_SMALL)
        points["after_small"] = measure()
        cell.fold()
        points["after_small_folded"] = measure()
        feed(large - MEMORY_SMALL)
        points["after_large"] = measure()
        cell.fold()
        points["after_large_folded"] = measure()
        elapsed = time.perf_counter() - t0
        batch = mon.collector.collect()
        counted = sum(p.count for p in batch.points if p.key.name == "lat")
        del batch
        points["after_collect"] = measure()
        if use_tracemalloc:
            tracemalloc.stop()
    return {"points": points, "numpy_fold": numpy, "observed": counted,
            "feed_seconds": round(elapsed, 2)}


def memory(large: int) -> dict[str, Any]:
    """Histogram memory growth, measured in two subprocesses (tracemalloc, then RSS only)."""
    from holter.core import _cells

    runs = {}
    for label, traced in (("tracemalloc", True), ("rss_only", False)):
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(large),
             *(["--tracemalloc"] if traced else [])],
            capture_output=True, text=True, check=True, cwd=REPO, timeout=600,
        )
        runs[label] = json.loads(proc.stdout)
    traced = runs["tracemalloc"]["points"]
    rss = runs["rss_only"]["points"]

    def kib(points: dict[str, Any], key: str, at: str, base: str = "empty") -> float:
        return round((points[at][key] - points[base][key]) / 1024, 1)

    growth = {}
    for at in ("after_small", "after_small_folded", "after_large", "after_large_folded",
               "after_collect"):
        growth[at] = {
            "tracemalloc_kib": kib(traced, "traced_bytes", at),
            "rss_kib": kib(rss, "rss_bytes", at),
            "buffered_values": traced[at]["buffered_values"],
            "sketch_buckets": traced[at]["sketch_buckets"],
        }
    small_to_large = {
        "buffer_as_is_tracemalloc_kib": kib(traced, "traced_bytes", "after_large",
                                            "after_small"),
        "buffer_folded_tracemalloc_kib": kib(traced, "traced_bytes", "after_large_folded",
                                             "after_small_folded"),
        "buffer_as_is_rss_kib": kib(rss, "rss_bytes", "after_large", "after_small"),
        "buffer_folded_rss_kib": kib(rss, "rss_bytes", "after_large_folded",
                                     "after_small_folded"),
    }
    judged = small_to_large["buffer_folded_tracemalloc_kib"]
    from_empty = max(growth["after_large"]["tracemalloc_kib"],
                     growth["after_large_folded"]["tracemalloc_kib"])
    return {
        "observations_small": MEMORY_SMALL,
        "observations_large": large,
        "values": f"{min(large, MEMORY_POOL_MAX):,} distinct lognormal latencies (median 20 ms, "
                  f"sigma {LATENCY_SIGMA}), made before the 'empty' checkpoint, cycled",
        "growth_small_to_large": small_to_large,
        "growth_from_empty": growth,
        "buffer_cap_values": _cells.BUFFER_CAP,
        "buffer_cap_kib": _cells.BUFFER_CAP * 8 / 1024,
        "target_kib": MEMORY_TARGET_KIB,
        "target_measure": (
            "tracemalloc growth from 10 thousand to the large count of observations, buffer "
            "folded at both checkpoints: what grows with the number of observations (the "
            "sketch). The unfolded buffer is not counted there because its fill level at a "
            "checkpoint is a phase of the BUFFER_CAP cycle, not growth: it adds 0 up to "
            "buffer_cap_kib at any moment (see the 'buffer_as_is' figures and "
            "worst_growth_from_empty_kib)"),
        "growth_small_to_large_kib": judged,
        "worst_growth_from_empty_kib": from_empty,
        "pass": judged <= MEMORY_TARGET_KIB,
        "pass_from_empty": from_empty <= MEMORY_TARGET_KIB,
        "observed_by_collector": runs["tracemalloc"]["observed"],
        "numpy_fold": runs["tracemalloc"]["numpy_fold"],
        "feed_seconds": {k: v["feed_seconds"] for k, v in runs.items()},
        "method": (
            "one bound histogram in a fresh subprocess (holter.testing.monitor, strict=False, "
            "no collector thread, so the whole run is one interval: the worst case for the "
            "sketch). Checkpoints after gc.collect(): 'after_N' with the buffer as it is (up "
            "to BUFFER_CAP values not yet folded), 'after_N_folded' after cell.fold(), "
            "'after_collect' after the collector took the interval. tracemalloc (Python heap, "
            "incl. numpy buffers) in one run; RSS in a second run without tracemalloc (RSS is "
            "page-granular and includes allocator slack). The fold path is warmed once on "
            "throwaway statistics before the 'empty' checkpoint. The target is judged on "
            "growth from 10 thousand to the large count (buffer folded at both); growth from "
            "empty, with the buffer as it is, is reported too."
        ),
    }


# -- report -----------------------------------------------------------------------------


TARGETS = [
    # (label, case, holter variant, peer variant, max ratio)
    ("bound counter inc vs prometheus bound inc", "counter_inc_bound", "holter_bound",
     "prometheus_bound", 0.5),
    ("counter inc 2 tags vs prometheus .labels().inc()", "counter_inc_2_tags", "holter_held",
     "prometheus_labels", 0.4),
    ("counter inc 2 tags vs OTel add(1, attrs)", "counter_inc_2_tags", "holter_held",
     "otel_add", 0.1),
    ("bound histogram observe (numpy fold) vs prometheus", "histogram_observe_bound",
     "holter_bound_numpy_fold", "prometheus_bound", 0.3),
    ("bound histogram observe (python fold) vs prometheus", "histogram_observe_bound",
     "holter_bound_python_fold", "prometheus_bound", 0.3),
    ("timer mon.timer() vs prometheus h.time()", "timer_context_manager", "holter_timer",
     "prometheus_time", 0.5),
    ("timer held h.time() vs prometheus h.time()", "timer_context_manager", "holter_held_time",
     "prometheus_time", 0.5),
]


def targets(hot: dict[str, Any] | None, imports: dict[str, Any] | None,
            mem: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every target with its measured ratio and pass/fail (net ratio decides; raw shown)."""
    out = []
    if hot:
        for label, case, mine, peer, limit in TARGETS:
            ratio = next(r for r in hot[case]["ratios"] if r["holter"] == mine
                         and r["peer"] == peer)
            out.append({
                "target": label, "max_ratio": limit,
                "ratio_net": ratio["ratio_net"], "ratio_raw": ratio["ratio_raw"],
                "pass": ratio["ratio_net"] <= limit, "pass_raw": ratio["ratio_raw"] <= limit,
            })
    if imports:
        ratio = imports["ratio_holter_to_prometheus"]
        out.append({"target": "import holter vs import prometheus_client", "max_ratio": 0.5,
                    "ratio": ratio, "pass": ratio <= 0.5})
    if mem:
        out.append({"target": f"histogram memory growth {MEMORY_SMALL:,} -> "
                              f"{mem['observations_large']:,} observations",
                    "max_kib": MEMORY_TARGET_KIB, "kib": mem["growth_small_to_large_kib"],
                    "pass": mem["pass"]})
        out.append({"target": f"(context) histogram memory, empty -> "
                              f"{mem['observations_large']:,}, buffer as is",
                    "max_kib": MEMORY_TARGET_KIB, "kib": mem["worst_growth_from_empty_kib"],
                    "pass": mem["pass_from_empty"], "context_only": True})
    return out


def environment(args: argparse.Namespace, settings: dict[str, int]) -> dict[str, Any]:
    """Interpreter, platform, library versions, settings and the checkout measured."""
    versions = {}
    for dist in ("holter", "prometheus_client", "opentelemetry-sdk", "opentelemetry-api",
                 "numpy", "psutil"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    commit = None
    with contextlib.suppress(Exception):
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "holter"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        commit = head + ("+uncommitted-changes-in-holter/" if dirty else "")
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
        "holter_commit": commit,
        "mode": "quick" if args.quick else "full",
        "repeats": settings["repeats"],
        "iterations": settings["iterations"],
        "iterations_otel": settings["iterations"] // OTEL_DIVISOR,
        "slices": settings["slices"],
        "unroll": UNROLL,
        "import_runs": settings["import_runs"],
    }


METHOD = {
    "interleaving": "every repeat runs each case's variants (holter, prometheus_client, "
                    "OpenTelemetry, empty loop) in turn in one process: a sample is `slices` "
                    "timed slices of iterations/slices operations, and the slices of the "
                    "variants alternate (A1 B1 C1 A2 B2 C2 ...); the order rotates per repeat. "
                    "Figures are medians over repeats",
    "loop": f"each timed loop repeats the statement {UNROLL} times per iteration; raw_ns "
            "includes the loop, net_ns = raw_ns minus the median of the empty loop of the same "
            "shape (loop_only_ns, measured interleaved). Targets are judged on net; raw ratios "
            "are reported beside them",
    "deferred_work": "holter histogram/timer observe appends to a buffer; the recording thread "
                     "folds it when it reaches BUFFER_CAP values and the collector folds the rest. "
                     "Each holter sample's last slice ends with mon.collector.collect() INSIDE "
                     "the timed region (checked afterwards: the collect saw every operation of "
                     "the sample), so every value is folded into the sketch and serialised "
                     "within the measured time; one collect per `iterations` operations. "
                     "Counters get the same collect (a cheap read). Peers aggregate at record "
                     "time; their scrape/export cost is not included. fold_cost shows the "
                     "deferred work in isolation",
    "holter_monitor": "holter.testing.monitor(strict=False): production (non-strict) recording, "
                      "a temporary store, no background thread; one monitor per holter variant",
    "gc": "left enabled, as in a real program",
    "values": f"histogram cases cycle the same {POOL_SIZE} lognormal latencies (seconds, median "
              f"20 ms, sigma {LATENCY_SIGMA}) for every library",
    "otel": f"MeterProvider with an InMemoryMetricReader; loops run iterations/{OTEL_DIVISOR} "
            "operations because each call costs microseconds",
}


def print_table(result: dict[str, Any]) -> None:
    """Human-readable summary of ns/op and targets, on stderr."""
    for key, case in result.get("hot_path", {}).items():
        log(f"\n{key}: {case['title']} (loop only {case['loop_only_ns']} ns)")
        for vkey, v in case["variants"].items():
            log(f"  {vkey:28s} raw {v['raw_ns_median']:9.1f} ns  net {v['net_ns_median']:9.1f} ns")
    log("\ntargets:")
    for t in result.get("targets", []):
        mark = "PASS" if t["pass"] else "FAIL"
        if "ratio_net" in t:
            log(f"  [{mark}] {t['target']:55s} net {t['ratio_net']:.3f}  raw {t['ratio_raw']:.3f}"
                f"  (<= {t['max_ratio']})")
        elif "ratio" in t:
            log(f"  [{mark}] {t['target']:55s} {t['ratio']:.3f}  (<= {t['max_ratio']})")
        else:
            log(f"  [{mark}] {t['target']:55s} {t['kib']} KiB  (<= {t['max_kib']})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats/iterations and 1M (not 10M) memory observations")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (default 11, quick 5)")
    parser.add_argument("--iterations", type=int,
                        help="operations per sample (default 200000, quick 40000; OTel / 10)")
    parser.add_argument("--slices", type=int,
                        help="interleaved slices per sample (default 10, quick 8)")
    parser.add_argument("--import-runs", type=int, help="fresh interpreters per import (7)")
    parser.add_argument("--memory-observations", type=int,
                        help="large memory run (default 10000000, quick 1000000)")
    parser.add_argument("--skip", action="append", default=[],
                        choices=["hot", "import", "memory"], help="skip a part (repeatable)")
    parser.add_argument("--out", type=Path, help="also write the JSON to this file")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tracemalloc", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its JSON."""
    args = parse_args(argv)
    if args.memory_child is not None:
        print(json.dumps(memory_child(args.memory_child, args.tracemalloc)))
        return 0
    settings = dict(QUICK if args.quick else FULL)
    for name, value in (("repeats", args.repeats), ("iterations", args.iterations),
                        ("slices", args.slices),
                        ("import_runs", args.import_runs),
                        ("memory_large", args.memory_observations)):
        if value is not None:
            settings[name] = value
    if settings["memory_large"] < MEMORY_SMALL:
        raise SystemExit(f"--memory-observations must be at least {MEMORY_SMALL}")
    started = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "holter bench_core",
                              "environment": environment(args, settings), "method": METHOD}
    hot = imports = mem = None
    if "hot" not in args.skip:
        log(f"hot path: {settings['repeats']} repeats x {settings['iterations']} ops")
        hot = run_hot_path(settings["repeats"], settings["iterations"], settings["slices"])
        result["hot_path"] = hot
        result["fold_cost"] = fold_costs(settings["repeats"])
    if "import" not in args.skip:
        log(f"import time: {settings['import_runs']} fresh interpreters per statement")
        imports = import_times(settings["import_runs"])
        result["import_time"] = imports
    if "memory" not in args.skip:
        log(f"memory: {MEMORY_SMALL:,} and {settings['memory_large']:,} observations")
        mem = memory(settings["memory_large"])
        result["memory"] = mem
    result["targets"] = targets(hot, imports, mem)
    result["environment"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["environment"]["seconds"] = round(time.perf_counter() - started, 1)
    print_table(result)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
