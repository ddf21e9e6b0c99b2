"""Per-operation statistics: what `holter ops` shows.

Counts, rates and percentiles come from the ``span.duration{name=...}`` histogram,
which every span feeds whether or not it was sampled, so they are exact. Error
counts and self times come from the stored spans of the newest :data:`MAX_TRACES`
traces in the window (errored traces are always stored, whatever the sampling).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from holter.analysis.critical_path import self_times
from holter.core.registry import tag_value
from holter.errors import QueryError
from holter.store import query as q
from holter.store.sqlite import Store

SPAN_DURATION = "span.duration"
MAX_TRACES = 5000
"""Self times and error counts are computed over at most this many newest traces."""


def operations(
    store: Store,
    window: str | float | None = "1h",
    *,
    start: datetime | str | float | None = None,
    end: datetime | str | float | None = None,
    run: int | None = None,
    app: str | None = None,
) -> list[dict[str, Any]]:
    """One row per span name, busiest first: count, rate, errors, p50/p95/p99, self time."""
    start_ns, end_ns = q.time_range(window, start, end)
    try:
        groups = q.grouped_stats(store, SPAN_DURATION, start=start_ns / 1e9, end=end_ns / 1e9,
                                 by="name", run=run, app=app)
    except QueryError as exc:
        if "no metric named" in str(exc):
            return []
        raise
    spans = q.trace_spans(store, start_ns, end_ns, run_ids=q.run_ids(store, run, app),
                          max_traces=MAX_TRACES)
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        by_trace.setdefault(s["trace_id"], []).append(s)
    selfs: dict[str, list[int]] = {}
    errors: dict[str, int] = {}
    for members in by_trace.values():
        own = self_times(members)
        for s in members:
            name = tag_value(s["name"])  # as the span.duration tag stores it (cut)
            selfs.setdefault(name, []).append(own[s["span_id"]])
            if s["status"] == "error":
                errors[name] = errors.get(name, 0) + 1
    rows = []
    for g in groups:
        name = g.group.get("name", "")
        if g.count == 0:
            continue
        own = selfs.get(name, [])
        n_err = errors.get(name, 0)
        rows.append({
            "name": name,
            "count": g.count,
            "rate": g.rate,
            "errors": n_err,
            "error_rate": n_err / g.count if g.count else 0.0,
            "mean_s": g.mean,
            "p50_s": g.p50,
            "p95_s": g.p95,
            "p99_s": g.p99,
            "max_s": g.max,
            "stored_spans": len(own),
            "self_mean_s": (sum(own) / len(own) / 1e9) if own else None,
            "self_total_s": sum(own) / 1e9 if own else None,
        })
    rows.sort(key=lambda r: (-r["count"], r["name"]))
    return rows
