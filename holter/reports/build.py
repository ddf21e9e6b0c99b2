"""Build a :class:`~holter.reports.model.Report` from the store (the query API only).

One pass over the period's points gives every series' statistics
(:func:`holter.store.query.series_windows`); the operations table comes from the same
``span.duration`` series plus the self times of the newest stored traces; the slowest
traces get their critical paths (:mod:`holter.analysis.critical_path`); charts read
the few series they draw, cut into steps. Anomalies, patterns and alerts appear when
the store has them (:func:`optional_sections`).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from holter import _clock
from holter._version import __version__
from holter.analysis.critical_path import critical_path, self_times
from holter.core.registry import tag_value
from holter.errors import QueryError
from holter.model import WindowStats
from holter.reports.model import (
    Chart,
    ChartLine,
    ChartMark,
    MetricRow,
    Operation,
    PathStep,
    Report,
    Resource,
    Scope,
    SlowTrace,
    Summary,
)
from holter.store import query as q
from holter.store.sqlite import Store

NS = 1_000_000_000
DEFAULT_PERIOD = "24h"
"""The period of a report when neither a period, a time range nor a run is given."""
SPAN_DURATION = "span.duration"
MAX_TRACES = 2000
"""Self times and span error counts come from at most this many newest traces."""
SLOWEST = 10
"""Slowest traces shown, each with its critical path."""
CHART_POINTS = 240
"""Steps of a chart at most (fewer when the data is coarser)."""
LATENCY_CHARTS = 4
THROUGHPUT_LINES = 6
_TIME_UNITS = {"s", "ms", "us", "µs", "ns"}
_INTERNAL = ("holter.",)
_RUNTIME = ("process.", "system.", "python.", "asyncio.")

CPU_METRIC = "process.cpu.utilization"
SYSTEM_CPU_METRIC = "system.cpu.utilization"
RSS_METRICS = ("process.memory.rss", "process.rss")
"""Resident memory: the runtime source's name, and the one the demo records itself."""
GC_PAUSE = "python.gc.pause"
LOOP_LAG = "asyncio.loop.lag"


@dataclass(frozen=True, slots=True)
class _Ctx:
    """What every section reads: the store, the period and the run/app filter."""

    store: Store
    start: int
    end: int
    run: int | None
    app: str | None

    chart_start: int
    chart_end: int
    cache: dict[tuple[Any, ...], list[WindowStats]]

    def steps(self, ids: list[int], points: int = CHART_POINTS) -> list[WindowStats]:
        """The series merged, cut into steps over the part of the period that has data."""
        key = (tuple(sorted(ids)), points)
        if key not in self.cache:
            self.cache[key] = q.series_steps(self.store, ids, self.chart_start, self.chart_end,
                                             points=points, run=self.run, app=self.app)
        return self.cache[key]


def resolve_scope(
    store: Store,
    *,
    period: str | None = None,
    since: str | float | None = None,
    until: str | float | None = None,
    run: int | None = None,
    app: str | None = None,
    now_ns: int | None = None,
) -> tuple[Scope, list[str]]:
    """The time range of a report, and notes (an unknown run is a note, not an error).

    A run without a period covers that run's lifetime. ``since``/``until`` take ISO
    8601 times, epoch seconds, or durations meaning "that long ago" (``2h``).
    Raises QueryError for malformed periods and times.
    """
    now = _clock.time_ns() if now_ns is None else now_ns
    notes: list[str] = []
    if period is not None and (since is not None or until is not None):
        raise QueryError("give either a period or --since/--until, not both")
    end = _when(until, now) if until is not None else now
    if since is not None:
        start = _when(since, now)
        label = None
    elif period is not None:
        start = end - q.parse_window(period)
        label = period
    elif run is not None:
        try:
            info = q.get_run(store, run)
        except QueryError:
            notes.append(f"no run with id {run} in this store: nothing to report")
            start, label = end - q.parse_window(DEFAULT_PERIOD), DEFAULT_PERIOD
        else:
            start = info.started_ns - 1
            end = max(info.last_flush_ns, info.ended_ns or 0, info.started_ns)
            label = None
    else:
        start, label = end - q.parse_window(DEFAULT_PERIOD), DEFAULT_PERIOD
    if start >= end:
        raise QueryError("bad time range: the start must be before the end")
    if run is not None and not notes:
        try:
            q.get_run(store, run)
        except QueryError:
            notes.append(f"no run with id {run} in this store: nothing to report")
    return Scope(start_ns=start, end_ns=end, period=label, run=run, app=app,
                 store=str(store.path)), notes


def _when(value: str | float, now_ns: int) -> int:
    if isinstance(value, str):
        try:
            return q.to_ns(float(value))  # epoch seconds
        except ValueError:
            pass
        try:
            return now_ns - q.parse_window(value)
        except QueryError:
            pass
    return q.to_ns(value)


def build_report(
    store: Store,
    *,
    period: str | None = None,
    since: str | float | None = None,
    until: str | float | None = None,
    run: int | None = None,
    app: str | None = None,
    title: str | None = None,
    charts: bool = True,
    sparklines: bool = False,
    slowest: int = SLOWEST,
    now_ns: int | None = None,
) -> Report:
    """Read the period's data and build the report model (never raises for no data).

    ``charts`` builds the time series the HTML draws; ``sparklines`` also gives every
    metric row a short trend (Markdown ``--charts``).
    """
    from holter.reports.recommend import recommendations

    scope, notes = resolve_scope(store, period=period, since=since, until=until, run=run,
                                 app=app, now_ns=now_ns)
    generated = _clock.time_ns() if now_ns is None else now_ns
    report = Report(
        title=title or _title(scope), generated_ns=generated, holter_version=__version__,
        scope=scope, empty=True, notes=notes, summary=Summary(), runs=[], metrics=[],
        operations=[], slowest_traces=[], resources=[], recommendations=[], charts=[],
    )
    if notes:  # unknown run
        return report
    q.refresh_summaries(store)  # long windows read 5-minute/1-hour merges, kept current
    start, end = scope.start_ns, scope.end_ns
    try:
        runs = [r for r in q.runs(store, app=app)
                if (run is None or r.id == run) and r.started_ns < end
                and max(r.last_flush_ns, r.ended_ns or 0) > start]
    except QueryError as exc:  # pragma: no cover - defensive
        report.notes.append(str(exc))
        return report
    report.runs = [{**r.as_dict(), "duration_s": _run_seconds(r)} for r in runs]
    windows = q.series_windows(store, start, end, run=run, app=app)
    report.metrics = [_metric_row(w) for w in windows]
    run_ids = q.run_ids(store, run, app)
    report.operations, report.operations_sampled_traces = _operations(
        store, windows, start, end, run_ids)
    first = min((w.series.first_ns for w in windows if w.series.first_ns is not None),
                default=start)
    last = max((w.series.last_ns for w in windows if w.series.last_ns is not None), default=end)
    ctx = _Ctx(store, start, end, run, app, max(start, first), min(end, max(last, first + 1)),
               {})
    report.slowest_traces = _slowest(ctx, slowest)
    traces = q.trace_counts(store, start, end, run_ids=run_ids)
    report.anomalies, report.patterns, report.alerts = optional_sections(
        store, start, end, run_ids)
    report.resources = _resources(ctx, windows)
    facts = _facts(ctx, windows)
    if charts:
        report.charts = _charts(ctx, windows, report)
    if sparklines:
        _add_sparklines(ctx, report.metrics, windows)
    report.summary = Summary(
        runs=len(runs),
        series=len(windows),
        observations=sum(w.stats.count for w in windows if w.series.kind == "histogram"
                         and not w.series.name.startswith(_INTERNAL)),
        traces=traces["traces"],
        traces_with_errors=traces["with_errors"],
        mean_trace_duration_ns=traces["mean_duration_ns"],
        operations=len(report.operations),
        span_errors=sum(o.errors for o in report.operations),
        anomalies=len(report.anomalies) if report.anomalies is not None else None,
        alerts=len(report.alerts) if report.alerts is not None else None,
        recorded_s=sum(min(max(r.last_flush_ns, r.ended_ns or 0), end) - max(r.started_ns, start)
                       for r in runs) / NS,
    )
    report.empty = not windows and not report.slowest_traces and not traces["traces"]
    if report.empty:
        report.notes.append(
            "no metrics or traces were recorded in this period"
            + (f" for run {run}" if run is not None else f" for app {app!r}" if app else "")
        )
    report.recommendations = recommendations(report, facts)
    report.summary.recommendations = len(report.recommendations)
    return report


def _title(scope: Scope) -> str:
    if scope.run is not None:
        return f"holter report: run {scope.run}"
    if scope.app:
        return f"holter report: {scope.app}"
    return "holter report"


def _run_seconds(run: Any) -> float:
    end = max(run.last_flush_ns, run.ended_ns or 0)
    return max(end - run.started_ns, 0) / NS


def _metric_row(w: q.SeriesWindow) -> MetricRow:
    s = w.stats
    return MetricRow(
        name=w.series.name, kind=w.series.kind, unit=w.series.unit, tags=dict(w.series.tags),
        points=w.points, count=s.count, rate=s.rate, sum=s.sum, min=s.min, max=s.max,
        mean=s.mean, stddev=s.stddev, last=s.last, p50=s.p50, p90=s.p90, p95=s.p95, p99=s.p99,
        p99_9=s.p99_9,
    )


# -- operations and traces ---------------------------------------------------------------


def _operations(
    store: Store, windows: Sequence[q.SeriesWindow], start: int, end: int,
    run_ids: list[int] | None,
) -> tuple[list[Operation], int]:
    groups: dict[str, list[WindowStats]] = {}
    for w in windows:
        if w.series.name == SPAN_DURATION and w.stats.count:
            groups.setdefault(w.series.tags.get("name", ""), []).append(w.stats)
    if not groups:
        return [], 0
    spans = q.trace_spans(store, start, end, run_ids=run_ids, max_traces=MAX_TRACES)
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        by_trace.setdefault(s["trace_id"], []).append(s)
    selfs: dict[str, list[int]] = {}
    errors: dict[str, int] = {}
    for members in by_trace.values():
        own = self_times(members)
        for s in members:
            name = tag_value(s["name"])
            selfs.setdefault(name, []).append(own[s["span_id"]])
            if s["status"] == "error":
                errors[name] = errors.get(name, 0) + 1
    rows = []
    for name, parts in groups.items():
        g = parts[0] if len(parts) == 1 else _merge_stats(parts)
        own = selfs.get(name, [])
        n_err = errors.get(name, 0)
        rows.append(Operation(
            name=name, count=g.count, rate=g.rate, errors=n_err,
            error_rate=n_err / len(own) if own else 0.0, mean_s=g.mean, p50_s=g.p50,
            p95_s=g.p95, p99_s=g.p99, max_s=g.max, stored_spans=len(own),
            self_mean_s=sum(own) / len(own) / NS if own else None,
            self_total_s=sum(own) / NS if own else None,
        ))
    rows.sort(key=lambda r: (-r.count, r.name))
    return rows, len(by_trace)


def _merge_stats(parts: Sequence[WindowStats]) -> WindowStats:
    """Several series of one span name (unit differences aside): the busiest one's shape."""
    best = max(parts, key=lambda p: p.count)
    count = sum(p.count for p in parts)
    rate = sum(p.rate or 0.0 for p in parts)
    return WindowStats(**{**best.as_dict(), "count": count, "rate": rate})


def _slowest(ctx: _Ctx, limit: int) -> list[SlowTrace]:
    if limit <= 0:
        return []
    store = ctx.store
    found = q.traces(store, start=ctx.start / NS, end=ctx.end / NS, slowest=True, run=ctx.run,
                     app=ctx.app, limit=limit)
    out = []
    for t in found:
        try:
            spans = q.trace(store, t["trace_id"])
        except QueryError:  # expired between the two reads
            continue
        path = critical_path(spans, t.get("root_span_id"))
        own = self_times(spans)
        duration = max(t["duration_ns"], 1)
        out.append(SlowTrace(
            trace_id=t["trace_id"], root_name=t["root_name"] or "?", start_ns=t["start_ns"],
            duration_ns=t["duration_ns"], spans=t["spans"], errors=t["errors"],
            critical_path=[PathStep(p.span_id, p.name, p.contribution_ns,
                                    p.contribution_ns / duration, own.get(p.span_id, 0))
                           for p in path],
        ))
    return out


# -- resources ---------------------------------------------------------------------------


def _find(windows: Iterable[q.SeriesWindow], name: str, **tags: str) -> list[q.SeriesWindow]:
    return [w for w in windows if w.series.name == name
            and all(w.series.tags.get(k) == v for k, v in tags.items())]


def _resources(ctx: _Ctx, windows: Sequence[q.SeriesWindow]) -> list[Resource]:
    out: list[Resource] = []

    def gauge(key: str, label: str, found: list[q.SeriesWindow]) -> None:
        if not found:
            return
        w = found[0]
        peak_ns = None
        steps = ctx.steps([x.series.id for x in found])
        best = max((s for s in steps if s.max is not None), key=lambda s: s.max, default=None)
        if best is not None:
            peak_ns = best.end_ns
        filled = [s for s in steps if s.last is not None]
        out.append(Resource(
            key=key, label=label, metric=w.series.name, unit=w.series.unit,
            mean=_mean([x.stats.mean for x in found]),
            peak=max((x.stats.max for x in found if x.stats.max is not None), default=None),
            peak_ns=peak_ns, first=filled[0].last if filled else None,
            last=filled[-1].last if filled else None,
        ))

    for mode in ("user", "system"):
        gauge(f"cpu.{mode}", f"process CPU ({mode})", _find(windows, CPU_METRIC, mode=mode))
    gauge("cpu.system_wide", "system CPU", _find(windows, SYSTEM_CPU_METRIC))
    for name in RSS_METRICS:
        if _find(windows, name):
            gauge("memory.rss", "resident memory (RSS)", _find(windows, name))
            break
    gauge("memory.uss", "unique memory (USS)", _find(windows, "process.memory.uss"))
    gauge("memory.system_used", "system memory used", _find(windows, "system.memory.used"))
    gauge("threads", "threads", _find(windows, "process.threads"))
    gauge("open_fds", "open file descriptors", _find(windows, "process.open_fds"))
    pauses = _find(windows, GC_PAUSE)
    if pauses:
        total = sum(w.stats.sum or 0.0 for w in pauses)
        covered = max((w.stats.covered_s for w in pauses), default=0.0)
        out.append(Resource(key="gc.pause", label="GC pause (share of recorded time)",
                            metric=GC_PAUSE, unit="%", mean=100 * total / covered if covered
                            else None, peak=max((w.stats.max or 0.0 for w in pauses),
                                                default=None)))
    lag = _find(windows, LOOP_LAG)
    if lag:
        out.append(Resource(key="loop.lag", label="event-loop lag (p99)", metric=LOOP_LAG,
                            unit=lag[0].series.unit, mean=_mean([w.stats.mean for w in lag]),
                            peak=max((w.stats.p99 or 0.0 for w in lag), default=None)))
    return out


def _mean(values: Iterable[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return sum(got) / len(got) if got else None


def _facts(ctx: _Ctx, windows: Sequence[q.SeriesWindow]) -> dict[str, Any]:
    """Extra figures the recommendations need: the memory trend."""
    facts: dict[str, Any] = {"windows": windows}
    for name in RSS_METRICS:
        found = _find(windows, name)
        if found:
            steps = ctx.steps([w.series.id for w in found])
            facts["rss"] = {"metric": name, "unit": found[0].series.unit,
                            "points": [(s.end_ns, s.last) for s in steps if s.last is not None]}
            break
    return facts


# -- anomalies, patterns, alerts ---------------------------------------------------------


def optional_sections(
    store: Store, start: int, end: int, run_ids: list[int] | None
) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None, list[dict[str, Any]] | None]:
    """Anomalies, patterns and alerts of the period; None for what this store never had.

    Anomalies come from ``holter.store.query.anomalies`` (issue 5's detector writes
    them) and patterns from ``holter.analysis.patterns.find_patterns`` over them; alerts
    from ``holter.store.query.alerts`` or ``holter.store.alerts`` (issue 6). A store
    without those tables, or a holter without those modules, leaves the section out.
    """
    anomalies: list[dict[str, Any]] | None = None
    patterns: list[dict[str, Any]] | None = None
    alerts: list[dict[str, Any]] | None = None
    read = getattr(q, "anomalies", None)
    states = getattr(q, "detector_states", None)
    if read is not None:
        found = [a for a in read(store, start, end)
                 if run_ids is None or a.run_id is None or a.run_id in run_ids]
        if found or (states is not None and states(store)):
            anomalies = [a.as_dict() for a in found]
            finder = _optional("holter.analysis.patterns", "find_patterns")
            if finder is not None:
                patterns = [p.as_dict() for p in finder(found, start, end)]
    alert_mod = _module("holter.store.alerts")
    read_alerts = getattr(q, "alerts", None) or getattr(alert_mod, "alerts", None)
    history = getattr(q, "alert_events", None) or getattr(alert_mod, "alert_events", None)
    if read_alerts is not None:
        got = read_alerts(store, state=("firing", "resolved"), since_ns=start)
        # the tables exist in every recent store: the section appears once alerting ran
        if got or (history is not None and history(store, limit=1)):
            alerts = [a.as_dict() for a in got
                      if a.fired_ns is not None and a.fired_ns <= end
                      and (run_ids is None or a.run_id is None or a.run_id in run_ids)]
    return anomalies, patterns, alerts


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _optional(module: str, name: str) -> Any:
    return getattr(_module(module), name, None)


# -- charts ------------------------------------------------------------------------------


def _is_latency(w: q.SeriesWindow) -> bool:
    name = w.series.name
    return (w.series.kind == "histogram" and w.series.unit in _TIME_UNITS
            and not name.startswith(_INTERNAL + _RUNTIME))


def _label(w: q.SeriesWindow) -> str:
    tags = " ".join(f"{k}={v}" for k, v in sorted(w.series.tags.items()))
    return f"{w.series.name} {tags}".strip()


def _charts(ctx: _Ctx, windows: Sequence[q.SeriesWindow], report: Report) -> list[Chart]:
    charts: list[Chart] = []
    steps = ctx.steps

    latency = sorted((w for w in windows if _is_latency(w) and w.stats.count),
                     key=lambda w: (w.series.name == SPAN_DURATION, -w.stats.count))
    for i, w in enumerate(latency[:LATENCY_CHARTS]):
        cut = steps([w.series.id])
        charts.append(Chart(
            key=f"latency-{i}", title=f"latency: {_label(w)}", unit=w.series.unit,
            times_ns=[s.end_ns for s in cut],
            lines=[ChartLine(p, [getattr(s, p) for s in cut]) for p in ("p50", "p95", "p99")],
            marks=_marks(report, [w.series.name]),
        ))
    by_name: dict[str, list[q.SeriesWindow]] = {}
    for w in windows:
        if (w.series.kind in ("counter", "histogram") and w.stats.count
                and not w.series.name.startswith(_INTERNAL + _RUNTIME)
                and w.series.name != SPAN_DURATION):
            by_name.setdefault(w.series.name, []).append(w)
    busiest = sorted(by_name.items(), key=lambda kv: -sum(w.stats.count for w in kv[1]))
    counters = [kv for kv in busiest if kv[1][0].series.kind == "counter"]
    chosen = (counters or busiest)[:THROUGHPUT_LINES]
    if chosen:
        cuts = [(name, steps([w.series.id for w in ws])) for name, ws in chosen]
        charts.append(Chart(
            key="throughput", title="throughput (per second)", unit="/s",
            times_ns=[s.end_ns for s in cuts[0][1]],
            lines=[ChartLine(name, [s.rate if s.count else 0.0 for s in cut])
                   for name, cut in _aligned(cuts)],
            marks=_marks(report, [name for name, _ in chosen]),
        ))
    cpu_lines = []
    for label, found in (
        ("process CPU user", _find(windows, CPU_METRIC, mode="user")),
        ("process CPU system", _find(windows, CPU_METRIC, mode="system")),
        ("system CPU", _find(windows, SYSTEM_CPU_METRIC)),
    ):
        if found:
            cpu_lines.append((label, steps([w.series.id for w in found])))
    if cpu_lines:
        cpu_lines = _aligned(cpu_lines)
        charts.append(Chart(
            key="cpu", title="CPU (% of one core; system: % of all)", unit="%",
            times_ns=[s.end_ns for s in cpu_lines[0][1]],
            lines=[ChartLine(label, [s.mean for s in cut]) for label, cut in cpu_lines],
            marks=_marks(report, [CPU_METRIC, SYSTEM_CPU_METRIC]),
        ))
    for name in RSS_METRICS:
        found = _find(windows, name)
        if found:
            cut = steps([w.series.id for w in found])
            charts.append(Chart(
                key="memory", title=f"memory: {name}", unit=found[0].series.unit,
                times_ns=[s.end_ns for s in cut],
                lines=[ChartLine("max", [s.max for s in cut]),
                       ChartLine("last", [s.last for s in cut])],
                marks=_marks(report, [name]),
            ))
            break
    return charts


def _aligned(cuts: list[tuple[str, list[WindowStats]]]) -> list[tuple[str, list[WindowStats]]]:
    """Lines of one chart on the first line's steps (steps may differ per series)."""
    if not cuts:
        return cuts
    base = cuts[0][1]
    out = [cuts[0]]
    for label, cut in cuts[1:]:
        if [s.end_ns for s in cut] == [s.end_ns for s in base]:
            out.append((label, cut))
            continue
        resampled = []
        j = 0
        for s in base:
            while j < len(cut) and cut[j].end_ns < s.end_ns:
                j += 1
            resampled.append(cut[j] if j < len(cut) and cut[j].start_ns < s.end_ns
                             else WindowStats(**{**s.as_dict(), "count": 0, "rate": None,
                                                 "mean": None, "max": None, "last": None}))
        out.append((label, resampled))
    return out


def _marks(report: Report, metrics: Sequence[str]) -> list[ChartMark]:
    marks = []
    for a in report.anomalies or []:
        if a.get("metric") in metrics:
            marks.append(ChartMark(
                kind="anomaly", label=f"{a.get('kind', 'anomaly')} of {a.get('stat', '')}",
                start_ns=int(a.get("time_ns") or 0),
                end_ns=int(a.get("end_ns") or a.get("time_ns") or 0),
                severity=str(a.get("severity", ""))))
    for a in report.alerts or []:
        begin = a.get("fired_ns") or a.get("active_ns")
        if begin is None:
            continue
        marks.append(ChartMark(
            kind="alert", label=f"alert {a.get('rule', '')}", start_ns=int(begin),
            end_ns=int(a.get("resolved_ns") or report.scope.end_ns),
            severity=str((a.get("labels") or {}).get("severity", ""))))
    return marks


def _add_sparklines(ctx: _Ctx, rows: list[MetricRow], windows: Sequence[q.SeriesWindow],
                    points: int = 24) -> None:
    for row, w in zip(rows, windows, strict=True):
        cut = ctx.steps([w.series.id], points)
        if w.series.kind == "counter":
            row.sparkline = [s.count if s.count else 0.0 for s in cut]
        elif w.series.kind == "gauge":
            row.sparkline = [s.mean for s in cut]
        else:
            row.sparkline = [s.p95 for s in cut]


__all__ = ["DEFAULT_PERIOD", "build_report", "optional_sections", "resolve_scope"]
