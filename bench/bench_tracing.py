"""Tracing benchmarks: span cost against the OpenTelemetry SDK, and sustained throughput.

Part 1 (``spans``): per-span cost, interleaved in one process with the harness of
``bench_core.py``: a span with one tag, and a parent with one child. holter runs on a
monitor without a background thread and every sample ends with ``collector.collect()``
inside the timed region, so the deferred work (feeding ``span.duration``, sampling,
building the records) is counted. OpenTelemetry uses a ``TracerProvider`` with a
``BatchSpanProcessor`` and an exporter that does nothing.

Part 2 (``throughput``): a started monitor (real collector thread, real store file)
while a producer thread records traces of 5 spans at a paced rate (default 100,000
spans per second) for ``--seconds``. Reported: spans produced and stored, spans
dropped (``holter.dropped{reason="span_buffer_full"}``), peak RSS during the run and
its growth over the second half, and the collector's lag at the end.

JSON on stdout; progress and a summary on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_core as core

TARGET_RATIO = 0.1
TARGET_RATE = 100_000


def build_cases(stack: contextlib.ExitStack) -> list[core.Case]:
    """The span cases: holter and OpenTelemetry variants plus an empty loop."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    import holter.testing

    class NoopExporter(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            return None

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(NoopExporter()))
    stack.callback(provider.shutdown)
    tracer = provider.get_tracer("bench")
    mon = stack.enter_context(holter.testing.monitor(strict=False, span_buffer=1_000_000))

    def drained(batch: Any, ops: int) -> None:
        if len(batch.spans) != ops:
            raise AssertionError(f"collect saw {len(batch.spans)} spans, expected {ops}")

    def drained_pairs(batch: Any, ops: int) -> None:
        drained(batch, 2 * ops)

    loop = core.Variant("loop_only", "loop", "(empty loop body)", "pass", {})
    one = core.Case(
        "span_one_tag",
        "span start + end with one tag",
        [
            core.Variant("holter_span", "holter", 'with mon.span("op", k=1): pass',
                         'with mon.span("op", k=1): pass', {"mon": mon},
                         finish=mon.collector.collect, check=drained),
            core.Variant("otel_span", "otel",
                         'with tracer.start_as_current_span("op", attributes={"k": 1}): pass',
                         'with tracer.start_as_current_span("op", attributes=_attrs): pass',
                         {"tracer": tracer, "_attrs": {"k": 1}},
                         note="BatchSpanProcessor + an exporter that does nothing"),
            loop,
        ],
        [("holter_span", "otel_span")],
    )
    loop2 = core.Variant("loop_only", "loop", "(empty loop body)", "pass", {})
    pair = core.Case(
        "parent_with_child",
        "a parent span with one child",
        [
            core.Variant("holter_pair", "holter",
                         'with mon.span("parent"), mon.span("child"): pass',
                         'with mon.span("parent"), mon.span("child"): pass', {"mon": mon},
                         finish=mon.collector.collect, check=drained_pairs),
            core.Variant("otel_pair", "otel",
                         'with t.start_as_current_span("parent"), '
                         't.start_as_current_span("child"): pass',
                         'with tracer.start_as_current_span("parent"), '
                         'tracer.start_as_current_span("child"): pass', {"tracer": tracer},
                         note="BatchSpanProcessor + an exporter that does nothing"),
            loop2,
        ],
        [("holter_pair", "otel_pair")],
    )
    return [one, pair]


def run_spans(repeats: int, iterations: int, slices: int) -> dict[str, Any]:
    """Interleaved per-span cost, as bench_core runs its hot-path cases."""
    out: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        cases = build_cases(stack)
        for case in cases:
            for variant in case.variants:
                core.prepare(variant, iterations, slices, [])
                for i in range(slices):
                    core.run_slice(variant, i == slices - 1, slices)
        started = time.perf_counter()
        for r in range(repeats):
            gc.collect()
            for case in cases:
                k = r % len(case.variants)
                order = case.variants[k:] + case.variants[:k]
                totals = dict.fromkeys([v.key for v in order], 0.0)
                for i in range(slices):
                    for variant in order:
                        totals[variant.key] += core.run_slice(variant, i == slices - 1, slices)
                for variant in order:
                    variant.samples.append(totals[variant.key] / (variant.ops * slices) * 1e9)
            core.log(f"  repeat {r + 1}/{repeats} done ({time.perf_counter() - started:.1f} s)")
        for case in cases:
            out[case.key] = core.case_result(case, slices)
    return out


def _rss_kib() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def throughput(rate: int, seconds: float, flush_interval: float) -> dict[str, Any]:
    """Produce ``rate`` spans/s (traces of 5) into a started monitor; measure what lands."""
    import holter
    from holter.monitor import Monitor

    folder = tempfile.mkdtemp(prefix="holter-bench-")
    db = os.path.join(folder, "spans.db")
    mon = Monitor(app="bench-throughput", db=db, flush_interval=flush_interval, strict=False)
    produced = 0
    rss: list[int] = []
    burst = 500  # traces per paced step (2,500 spans)
    spans_per_trace = 5
    step_s = burst * spans_per_trace / rate
    stop_at = time.perf_counter() + seconds
    next_step = time.perf_counter()
    next_sample = time.perf_counter()
    behind = 0.0
    span = mon.span
    collector = next(t for t in threading.enumerate() if t.name == "holter-collector")
    collector_clock = time.pthread_getcpuclockid(collector.ident)  # type: ignore[arg-type]
    collector_cpu0 = time.clock_gettime(collector_clock)
    process_cpu0 = time.process_time()
    producer_cpu0 = time.thread_time()
    started = time.perf_counter()
    while True:
        now = time.perf_counter()
        if now >= stop_at:
            break
        if now >= next_sample:
            rss.append(_rss_kib())
            next_sample += 0.5
        for _ in range(burst):
            with span("request", route="/users/{id}"):
                with span("db.query", table="users"):
                    pass
                with span("cache.get"):
                    pass
                with span("render"), span("template"):
                    pass
        produced += burst * spans_per_trace
        next_step += step_s
        delay = next_step - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            behind = max(behind, -delay)
    elapsed = time.perf_counter() - started
    producer_cpu = time.thread_time() - producer_cpu0
    lag_start = time.perf_counter()
    pending_at_end = mon.tracer.pending()
    mon.flush()
    lag = time.perf_counter() - lag_start
    collector_cpu = time.clock_gettime(collector_clock) - collector_cpu0
    writer = next((t for t in threading.enumerate() if t.name == "holter-writer"), None)
    writer_cpu = (time.clock_gettime(time.pthread_getcpuclockid(writer.ident))  # type: ignore[arg-type]
                  if writer is not None and writer.is_alive() else 0.0)  # started during the run
    process_cpu = time.process_time() - process_cpu0
    conn = mon.store.conn
    stored = conn.execute("SELECT COALESCE(SUM(spans), 0) FROM span_chunks").fetchone()[0]
    dropped = 0
    with contextlib.suppress(holter.QueryError):
        dropped = mon.query("holter.dropped", "1h", tags={"reason": "span_buffer_full"},
                            flush=False).count
    mon.stop()
    half = rss[len(rss) // 2:] or rss
    return {
        "target_rate_spans_per_s": rate,
        "seconds": round(elapsed, 2),
        "spans_produced": produced,
        "achieved_rate_spans_per_s": round(produced / elapsed),
        "producer_max_behind_schedule_s": round(behind, 3),
        "spans_stored": stored,
        "spans_dropped_buffer_full": dropped,
        "spans_waiting_at_end": pending_at_end,
        "final_flush_s": round(lag, 3),
        "rss_kib_samples": rss,
        "rss_growth_second_half_kib": (max(half) - min(half)) if half else None,
        "rss_peak_kib": max(rss) if rss else None,
        "flush_interval_s": flush_interval,
        # CPU time per span produced (the final flush, on this thread, counts in process
        # only): what the rate costs, less sensitive than drops to a shared machine
        "cpu_ns_per_span": {
            "producer_thread": round(producer_cpu / produced * 1e9),
            "collector_thread": round(collector_cpu / produced * 1e9),
            "writer_thread": round(writer_cpu / produced * 1e9),
            "process": round(process_cpu / produced * 1e9),
        },
        "sustained": stored == produced and dropped == 0 and produced / elapsed >= 0.97 * rate,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the tracing benchmarks and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, a 4 s throughput run")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (default 9, quick 3)")
    parser.add_argument("--iterations", type=int,
                        help="spans per sample (default 20000, quick 5000; OTel / 10)")
    parser.add_argument("--rate", type=int, default=TARGET_RATE,
                        help="spans per second for the throughput run")
    parser.add_argument("--seconds", type=float, help="throughput run length (default 15)")
    parser.add_argument("--flush-interval", type=float, default=10.0,
                        help="the monitor's flush interval in the throughput run")
    parser.add_argument("--skip", action="append", default=[], choices=["spans", "throughput"])
    parser.add_argument("--out", type=Path, help="also write the JSON to this file")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 9)
    iterations = args.iterations or (5_000 if args.quick else 20_000)
    seconds = args.seconds or (4.0 if args.quick else 15.0)
    result: dict[str, Any] = {"benchmark": "holter bench_tracing",
                              "python": sys.version.split()[0],
                              "cpu_count": os.cpu_count(),
                              "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    if "spans" not in args.skip:
        core.log(f"spans: {repeats} repeats x {iterations} spans")
        spans = run_spans(repeats, iterations, 10)
        result["spans"] = spans
        result["targets"] = [
            {"target": f"{case['title']} vs OpenTelemetry SDK", "max_ratio": TARGET_RATIO,
             "ratio_net": r["ratio_net"], "ratio_raw": r["ratio_raw"],
             "pass": r["ratio_net"] <= TARGET_RATIO}
            for case in spans.values() for r in case["ratios"]
        ]
        for case in spans.values():
            core.log(f"\n{case['title']}")
            for key, v in case["variants"].items():
                core.log(f"  {key:14s} net {v['net_ns_median']:10.1f} ns")
        for t in result["targets"]:
            mark = "PASS" if t["pass"] else "FAIL"
            core.log(f"  [{mark}] {t['target']:50s} {t['ratio_net']:.3f} (<= {TARGET_RATIO})")
    if "throughput" not in args.skip:
        core.log(f"\nthroughput: {args.rate:,} spans/s for {seconds} s")
        result["throughput"] = throughput(args.rate, seconds, args.flush_interval)
        t = result["throughput"]
        core.log(f"  produced {t['spans_produced']:,} ({t['achieved_rate_spans_per_s']:,}/s), "
                 f"stored {t['spans_stored']:,}, dropped {t['spans_dropped_buffer_full']:,}, "
                 f"RSS growth over the second half {t['rss_growth_second_half_kib']} KiB, "
                 f"sustained: {t['sustained']}")
        cpu = t["cpu_ns_per_span"]
        core.log(f"  CPU per span: producer {cpu['producer_thread']:,} ns, collector "
                 f"{cpu['collector_thread']:,} ns, writer {cpu['writer_thread']:,} ns, "
                 f"whole process {cpu['process']:,} ns")
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
