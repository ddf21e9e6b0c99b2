"""Recommendations: specific findings, each with the figure that triggered it.

Every rule names the series or operation it is about, the measured figure, the
threshold it crossed, and what to look at. A rule that has no data stays silent:
there is no generic advice. The thresholds are module constants, documented here:

========================= =====================================================================
rule                      fires when
========================= =====================================================================
``critical_path``         one operation's own time is ≥ 40 % of the critical path of the slowest
                          traces (summed over them)
``gc_pause``              garbage-collection pauses take ≥ 2 % of the recorded time
``memory_growth``         resident memory grows linearly (R² ≥ 0.8 over ≥ 6 steps) by ≥ 10 %
                          of its starting value over the period; the rate per hour is given
``long_tail``             a latency series with ≥ 50 observations has p99 / p50 ≥ 10
``http_errors``           an HTTP host (or route, when requests carry no host) answers ≥ 5 %
                          of ≥ 20 requests with a 5xx status or an exception
``operation_errors``      an operation's stored spans have an error rate ≥ 5 % (≥ 20 spans)
``cpu_bound``             the process uses ≥ 80 % of one core on average
``loop_lag``              the asyncio event loop's p99 lag is ≥ 100 ms
``anomaly``               the anomaly detector found a high or critical anomaly in the period
``alert``                 an alert is still firing at the end of the period
========================= =====================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from holter.reports.model import Evidence, Recommendation, Report

CRITICAL_PATH_SHARE = 0.40
GC_SHARE = 0.02
MEMORY_GROWTH = 0.10
MEMORY_R2 = 0.8
MEMORY_MIN_STEPS = 6
TAIL_RATIO = 10.0
TAIL_MIN_COUNT = 50
ERROR_RATE = 0.05
ERROR_MIN_REQUESTS = 20
CPU_BUSY = 80.0
LOOP_LAG_S = 0.1
MAX_PER_RULE = 3
"""At most this many findings of one rule (the strongest first)."""
_TIME_TO_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def recommendations(report: Report, facts: dict[str, Any] | None = None) -> list[Recommendation]:
    """Every finding of every rule, the most severe first."""
    facts = facts or {}
    found: list[Recommendation] = []
    for rule in (_critical_path, _gc_pause, _memory_growth, _long_tail, _http_errors,
                 _operation_errors, _cpu_bound, _loop_lag, _anomalies, _alerts):
        found.extend(rule(report, facts)[:MAX_PER_RULE])
    found.sort(key=lambda r: _SEVERITY_ORDER.get(r.severity, 3))
    return found


def _fmt_s(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def _tags(tags: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(tags.items())) + "}" if tags else ""


def _critical_path(report: Report, facts: dict[str, Any]) -> list[Recommendation]:
    traces = report.slowest_traces
    total = sum(t.duration_ns for t in traces)
    if not traces or total <= 0:
        return []
    own: dict[str, int] = {}
    seen_in: dict[str, int] = {}
    for t in traces:
        names = set()
        for step in t.critical_path:
            own[step.name] = own.get(step.name, 0) + step.contribution_ns
            names.add(step.name)
        for name in names:
            seen_in[name] = seen_in.get(name, 0) + 1
    out = []
    for name, ns in sorted(own.items(), key=lambda kv: -kv[1]):
        share = ns / total
        if share < CRITICAL_PATH_SHARE:
            break
        out.append(Recommendation(
            rule="critical_path", severity="warning", subject=f"operation {name}",
            title=f"{name} is {share:.0%} of the critical path of the {len(traces)} slowest "
                  "traces",
            evidence=Evidence(metric="span.duration", figure="share of critical path",
                              value=share, threshold=CRITICAL_PATH_SHARE, unit="ratio",
                              tags={"name": name}),
            look_at=f"what {name} does itself, outside its child spans: {_fmt_s(ns / 1e9)} of "
                    f"{_fmt_s(total / 1e9)} on the critical path, in {seen_in[name]} of "
                    f"{len(traces)} traces. Speeding up other spans will not shorten these "
                    "traces; add child spans inside it to see where the time goes.",
        ))
    return out


def _gc_pause(report: Report, facts: dict[str, Any]) -> list[Recommendation]:
    for r in report.resources:
        if r.key == "gc.pause" and r.mean is not None and r.mean / 100 >= GC_SHARE:
            return [Recommendation(
                rule="gc_pause", severity="warning" if r.mean < 10 else "critical",
                subject="python.gc.pause",
                title=f"garbage collection takes {r.mean:.1f}% of the recorded time",
                evidence=Evidence(metric="python.gc.pause", figure="share of recorded time",
                                  value=r.mean / 100, threshold=GC_SHARE, unit="ratio"),
                look_at="python.gc.pause by generation (holter query python.gc.pause --by "
                        "generation): frequent gen-2 collections mean many long-lived "
                        "objects; gc.freeze() after start-up, fewer temporary objects in hot "
                        "loops, or a higher gc threshold cut the pauses. "
                        f"Longest pause {_fmt_s(r.peak or 0.0)}.",
            )]
    return []


def linear_trend(points: Sequence[tuple[int, float]]) -> tuple[float, float] | None:
    """Least-squares slope (per second) and R² of ``(time_ns, value)`` points."""
    if len(points) < 2:
        return None
    xs = [t / 1e9 for t, _ in points]
    ys = [v for _, v in points]
    mx = sum(xs) / len(xs)
    my = sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx <= 0:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    r2 = (sxy * sxy) / (sxx * syy) if syy > 0 else 0.0
    return slope, r2


def _fmt_bytes(value: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.0f} B"


def _memory_growth(report: Report, facts: dict[str, Any]) -> list[Recommendation]:
    rss = facts.get("rss")
    if not rss or len(rss["points"]) < MEMORY_MIN_STEPS:
        return []
    points = rss["points"]
    trend = linear_trend(points)
    if trend is None:
        return []
    slope, r2 = trend
    first = points[0][1]
    span_s = (points[-1][0] - points[0][0]) / 1e9
    growth = slope * span_s
    if first <= 0 or slope <= 0 or r2 < MEMORY_R2 or growth / first < MEMORY_GROWTH:
        return []
    per_hour = slope * 3600
    fmt = _fmt_bytes if rss["unit"] == "By" else (lambda v: f"{v:.3g} {rss['unit']}")
    return [Recommendation(
        rule="memory_growth", severity="warning", subject=rss["metric"],
        title=f"memory grows steadily: {fmt(per_hour)} per hour (R² {r2:.2f})",
        evidence=Evidence(metric=rss["metric"], figure="linear growth per hour",
                          value=per_hour, threshold=MEMORY_GROWTH * first / max(span_s, 1e-9)
                          * 3600, unit=f"{rss['unit']}/h"),
        look_at=f"{rss['metric']} went from {fmt(first)} to {fmt(points[-1][1])} "
                f"(+{growth / first:.0%}) along a straight line: a cache or list that "
                "never shrinks, or objects kept alive by references. Compare "
                "tracemalloc snapshots (holter.start(tracemalloc=True) records "
                "python.heap.bytes) taken some minutes apart.",
    )]


def _long_tail(report: Report, facts: dict[str, Any]) -> list[Recommendation]:
    out = []
    for m in report.metrics:
        if (m.kind != "histogram" or m.unit not in _TIME_TO_S or m.count < TAIL_MIN_COUNT
                or not m.p50 or not m.p99 or m.p50 <= 0
                or m.name.startswith(("holter.", "python.", "process.", "system."))):
            continue
        ratio = m.p99 / m.p50
        if ratio >= TAIL_RATIO:
            scale = _TIME_TO_S[m.unit]
            out.append((ratio, Recommendation(
                rule="long_tail", severity="info", subject=f"{m.name}{_tags(m.tags)}",
                title=f"{m.name}{_tags(m.tags)} has a long tail: p99 is {ratio:.0f}× p50",
                evidence=Evidence(metric=m.name, figure="p99 / p50", value=ratio,
                                  threshold=TAIL_RATIO, unit="×", tags=m.tags),
                look_at=f"p50 {_fmt_s(m.p50 * scale)}, p99 {_fmt_s(m.p99 * scale)}, max "
                        f"{_fmt_s((m.max or 0) * scale)} over {m.count:.0f} observations: "
                        "one request in a hundred waits on something the others do not "
                        "(a lock, a cold cache, a retry, a GC pause). The slowest traces "
                        "of this operation show which span it is.",
            )))
    out.sort(key=lambda x: -x[0])
    return [r for _, r in out]


def _http_errors(report: Report, facts: dict[str, Any]) -> list[Recommendation]:
    totals: dict[tuple[str, str], list[float]] = {}
    for m in report.metrics:
        if m.name not in ("http.client.requests", "http.client.errors",
                          "http.server.requests"):
            continue
        side = "server" if m.name.startswith("http.server") else "client"
        key_name = "host" if "host" in m.tags else "route"
        where = m.tags.get(key_name) or m.tags.get("route") or "?"
        acc = totals.setdefault((side, f"{key_name} {where}"), [0.0, 0.0])
        if m.name == "http.client.errors":
            acc[0] += m.count
            acc[1] += m.count
            continue
        acc[1] += m.count
        status = m.tags.get("status", "")
        if status.isdigit() and int(status) >= 500:
            acc[0] += m.count
    out = []
    for (side, where), (bad, total) in totals.items():
        if total < ERROR_MIN_REQUESTS or not bad:
            continue
        rate = bad / total
        if rate >= ERROR_RATE:
            out.append((rate, Recommendation(
                rule="http_errors", severity="critical" if rate >= 0.25 else "warning",
                subject=f"HTTP {side} {where}",
                title=f"{rate:.1%} of HTTP {side} requests to {where} failed",
                evidence=Evidence(metric=f"http.{side}.requests", figure="error rate",
                                  value=rate, threshold=ERROR_RATE, unit="ratio",
                                  tags={where.split(" ", 1)[0]: where.split(" ", 1)[1]}),
                look_at=f"{bad:.0f} of {total:.0f} requests ended with a 5xx status or an "
                        "exception: the failing traces (holter traces --errors) show the "
                        "status and the error message of each.",
            )))
    out.sort(key=lambda x: -x[0])
    return [r for _, r in out]


def _operation_errors(report: Report, facts: dict[str, Any]) -> list[Recommendation]:
    out = []
    for op in report.operations:
        if op.stored_spans >= ERROR_MIN_REQUESTS and op.error_rate >= ERROR_RATE:
            out.append((op.error_rate, Recommendation(
                rule="operation_errors", severity="warning", subject=f"operation {op.name}",
                title=f"{op.error_rate:.1%} of {op.name} spans ended in an error",
                evidence=Evidence(metric="span.duration", figure="error rate",
                                  value=op.error_rate, threshold=ERROR_RATE, unit="ratio",
                                  tags={"name": op.name}),
                look_at=f"{op.errors} errors among {op.stored_spans} stored spans: holter "
                        f"traces --errors --name '{op.name}' lists them with their messages.",
            )))
    out.sort(key=lambda x: -x[0])
    return [r for _, r in out]


def _cpu_bound(report: Report, facts: dict[str, Any]) -> list[Recommendation]:
    parts = [r for r in report.resources if r.key in ("cpu.user", "cpu.system")]
    mean = sum(r.mean or 0.0 for r in parts)
    if not parts or mean < CPU_BUSY:
        return []
    peak = max((r.peak or 0.0) for r in parts)
    return [Recommendation(
        rule="cpu_bound", severity="warning", subject="process.cpu.utilization",
        title=f"the process is CPU-bound: {mean:.0f}% of one core on average",
        evidence=Evidence(metric="process.cpu.utilization", figure="mean CPU (user+system)",
                          value=mean, threshold=CPU_BUSY, unit="%"),
        look_at=f"peak {peak:.0f}%: pure-Python code holds the GIL, so more threads will not "
                "help; the operations with the most self time are where a profiler "
                "(py-spy, pyinstrument) should look first.",
    )]


def _loop_lag(report: Report, facts: dict[str, Any]) -> list[Recommendation]:
    for r in report.resources:
        if r.key == "loop.lag" and r.peak is not None:
            scale = _TIME_TO_S.get(r.unit, 1.0)
            if r.peak * scale >= LOOP_LAG_S:
                return [Recommendation(
                    rule="loop_lag", severity="warning", subject="asyncio.loop.lag",
                    title=f"the event loop stalls: p99 lag {_fmt_s(r.peak * scale)}",
                    evidence=Evidence(metric="asyncio.loop.lag", figure="p99 lag",
                                      value=r.peak * scale, threshold=LOOP_LAG_S, unit="s"),
                    look_at="blocking calls on the loop thread: holter traces --name "
                            "asyncio.loop.blocked shows the line that blocked each stall.",
                )]
    return []


def _anomalies(report: Report, facts: dict[str, Any]) -> list[Recommendation]:
    out = []
    for a in report.anomalies or []:
        if a.get("severity") not in ("high", "critical"):
            continue
        value = float(a.get("value") or 0.0)
        expected = a.get("expected")
        tags = dict(a.get("tags") or {})
        band = a.get("high") if expected is None or value >= expected else a.get("low")
        shown = "?" if expected is None else f"{expected:.4g}"
        out.append((float(a.get("score") or 0.0), Recommendation(
            rule="anomaly", severity="critical" if a["severity"] == "critical" else "warning",
            subject=f"{a.get('metric')}{_tags(tags)}",
            title=f"{a.get('kind', 'anomaly')} in {a.get('stat')} of {a.get('metric')}"
                  f"{_tags(tags)}: {value:.4g} where {shown} was expected",
            evidence=Evidence(metric=str(a.get("metric")), figure=str(a.get("stat")),
                              value=value, threshold=float(band) if band is not None else 0.0,
                              unit=str(a.get("unit") or ""), tags=tags),
            look_at=f"what changed at that time (severity {a['severity']}, score "
                    f"{float(a.get('score') or 0.0):.2f}): the operations and traces of the "
                    "same minutes, and the correlated patterns of this report.",
        )))
    out.sort(key=lambda x: -x[0])
    return [r for _, r in out]


def _alerts(report: Report, facts: dict[str, Any]) -> list[Recommendation]:
    out = []
    for a in report.alerts or []:
        if a.get("state") != "firing":
            continue
        value = a.get("value")
        summary = (a.get("annotations") or {}).get("summary", "")
        out.append(Recommendation(
            rule="alert", severity="critical", subject=f"alert {a.get('rule')}",
            title=f"alert {a.get('rule')} is still firing" + (f": {summary}" if summary else ""),
            evidence=Evidence(metric=str(a.get("rule")), figure="last value",
                              value=float(value) if isinstance(value, int | float) else 0.0,
                              threshold=0.0, tags=dict(a.get("labels") or {})),
            look_at="holter alerts shows its history; the charts mark when it fired.",
        ))
    return out


__all__ = ["linear_trend", "recommendations"]
