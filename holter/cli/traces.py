"""`holter traces`, `holter trace` and `holter ops`: trace analytics from the store."""

from __future__ import annotations

from typing import Any

import click

from holter.analysis.operations import operations
from holter.analysis.waterfall import fmt_ns, timeline_bar, trace_tree
from holter.cli._options import (
    console,
    db_option,
    emit_json,
    fmt_num,
    fmt_time,
    holter_errors,
    json_option,
    open_store,
    table,
)
from holter.store import query as q

BAR_WIDTH = 40


@click.command("traces")
@click.option("--slowest", type=click.IntRange(min=1), default=None, metavar="N",
              help="The N slowest traces instead of the newest.")
@click.option("--errors", is_flag=True, help="Only traces with an error.")
@click.option("--name", "name", default=None, metavar="PATTERN",
              help="Root span name: a glob (db.*) or a part of the name.")
@click.option("--since", default="1h", show_default=True, help="Window: 30s, 5m, 1h, 24h, 7d.")
@click.option("--run", "run", type=int, default=None, help="Only traces with spans of this run.")
@click.option("--app", "app", default=None, help="Only traces with spans of runs of this app.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="Traces to list (when --slowest is not given).")
@db_option
@json_option
@holter_errors
def traces_cmd(slowest: int | None, errors: bool, name: str | None, since: str, run: int | None,
               app: str | None, limit: int, db: str, as_json: bool) -> None:
    """Recorded traces: root span, start, duration, spans and errors."""
    with open_store(db) as store:
        found = q.traces(store, since, slowest=slowest is not None, errors=errors, name=name,
                         run=run, app=app, limit=slowest or limit)
        summary = q.trace_summary(store, since, run=run, app=app)
    if as_json:
        emit_json({"summary": summary, "traces": found})
        return
    mean = fmt_ns(summary["mean_duration_ns"])
    spans = summary["mean_spans"]
    scope = f" of run {run}" if run is not None else f" of app {app}" if app else ""
    console().print(
        f"{summary['traces']} traces{scope} in the last {since}: {summary['completed']} completed, "
        f"{summary['active']} without their root yet, {summary['with_errors']} with errors; "
        f"mean duration {mean}, mean {spans or 0:.1f} spans"
    )
    table(
        None,
        ["trace id", "root", "start", "duration", "spans", "errors"],
        [[t["trace_id"], (t["root_name"] or "?") + ("" if t["has_root"] else " (no root yet)"),
          fmt_time(t["start_ns"]), fmt_ns(t["duration_ns"]), str(t["spans"]),
          str(t["errors"]) if t["errors"] else "-"] for t in found],
    )


def _bar(span: dict[str, Any], start: int, duration: int, segments: list[list[int]]) -> str:
    return timeline_bar(span, start, duration, segments, BAR_WIDTH)


@click.command("trace")
@click.argument("trace_id")
@db_option
@json_option
@holter_errors
def trace_cmd(trace_id: str, db: str, as_json: bool) -> None:
    """One trace as a waterfall, its critical path marked (█ on the bar, ● before the name)."""
    with open_store(db) as store:
        spans = q.trace(store, trace_id)
    tree = trace_tree(spans)
    if as_json:
        emit_json(tree)
        return
    segments = {step["span_id"]: step["segments"] for step in tree["critical_path"]}
    start = tree["start_ns"]
    duration = tree["duration_ns"]
    console().print(
        f"trace {tree['trace_id']}  {fmt_time(start)}  {fmt_ns(duration)}  "
        f"{len(spans)} spans  (█ critical path, ░ off the path)"
    )
    rows = []
    for s in tree["spans"]:
        mark = "●" if s["critical_ns"] else " "
        status = "" if s["status"] == "ok" else f" [{s['status']}"
        if s["error_type"]:
            status += f": {s['error_type']}"
        status += "]" if status else ""
        rows.append([
            f"{mark} {'  ' * s['depth']}{s['name']}{status}",
            _bar(s, start, duration, segments.get(s["span_id"], [])),
            fmt_ns(s["duration_ns"]),
            fmt_ns(s["self_ns"]),
            fmt_ns(s["critical_ns"]) if s["critical_ns"] else "-",
        ])
    table(None, ["span", "timeline", "duration", "self", "on path"], rows)
    if tree["critical_path"]:
        chain = " → ".join(f"{p['name']} ({fmt_ns(p['contribution_ns'])})"
                           for p in tree["critical_path"])
        console().print(f"critical path: {chain}")


@click.command("ops")
@click.option("--window", "-w", default="1h", show_default=True,
              help="Time window: 30s, 5m, 1h, 24h, 7d.")
@click.option("--run", "run", type=int, default=None, help="Only spans of this run.")
@click.option("--app", "app", default=None, help="Only spans of runs of this app.")
@db_option
@json_option
@holter_errors
def ops_cmd(window: str, run: int | None, app: str | None, db: str, as_json: bool) -> None:
    """Per span name: count, rate, error rate, p50, p95, p99 and self time."""
    with open_store(db) as store:
        rows = operations(store, window, run=run, app=app)
    if as_json:
        emit_json(rows)
        return
    table(
        f"operations over the last {window}",
        ["operation", "count", "rate/s", "errors", "p50", "p95", "p99", "self (mean)"],
        [[r["name"], fmt_num(r["count"]), fmt_num(r["rate"]),
          f"{r['errors']} ({r['error_rate']:.1%})" if r["errors"] else "-",
          fmt_ns(r["p50_s"] * 1e9), fmt_ns(r["p95_s"] * 1e9), fmt_ns(r["p99_s"] * 1e9),
          fmt_ns(r["self_mean_s"] * 1e9 if r["self_mean_s"] is not None else None)]
         for r in rows],
    )
