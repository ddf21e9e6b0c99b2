"""``holter query``, ``holter series`` and ``holter runs``: what the store holds."""

from __future__ import annotations

import click

from holter.cli._options import (
    db_option,
    emit_json,
    fmt_num,
    fmt_tags,
    fmt_time,
    holter_errors,
    json_option,
    open_store,
    parse_tags,
    table,
)
from holter.model import WindowStats
from holter.store import query as q


@click.command("query")
@click.argument("name")
@click.option("--window", "-w", default="5m", show_default=True,
              help="Time window: 30s, 5m, 1h, 24h, 7d, 1h30m ...")
@click.option("--tag", "-t", "tags", multiple=True, metavar="KEY=VALUE",
              help="Only series with this tag value (repeatable).")
@click.option("--by", "by", multiple=True, metavar="KEY", help="Group by this tag (repeatable).")
@click.option("--run", "run", type=int, default=None, help="Only this run id.")
@click.option("--app", "app", default=None, help="Only runs of this app.")
@db_option
@json_option
@holter_errors
def query_cmd(name: str, window: str, tags: tuple[str, ...], by: tuple[str, ...],
              run: int | None, app: str | None, db: str, as_json: bool) -> None:
    """Statistics of metric NAME over a window: count, rate, min, max, mean, stddev, p50..p99.9."""
    with open_store(db) as store:
        groups = q.grouped_stats(store, name, window, tags=parse_tags(tags), by=list(by) or None,
                                 run=run, app=app)
    if as_json:
        emit_json([g.as_dict() for g in groups] if by else groups[0].as_dict())
        return
    _print_stats(name, window, groups, bool(by))


def _print_stats(name: str, window: str, groups: list[WindowStats], grouped: bool) -> None:
    kind = groups[0].kind
    unit = groups[0].unit
    title = f"{name} ({kind}{', ' + unit if unit else ''}) over the last {window}"
    lead = ["group"] if grouped else []
    if kind == "counter":
        cols = [*lead, "count", "rate/s", "recorded"]
        rows = [[*([fmt_tags(g.group)] if grouped else []), fmt_num(g.count), fmt_num(g.rate),
                 f"{g.covered_s:.1f} s"] for g in groups]
    elif kind == "gauge":
        cols = [*lead, "last", "min", "mean", "max", "samples"]
        rows = [[*([fmt_tags(g.group)] if grouped else []), fmt_num(g.last, unit),
                 fmt_num(g.min, unit), fmt_num(g.mean, unit), fmt_num(g.max, unit),
                 fmt_num(g.count)] for g in groups]
    else:
        cols = [*lead, "count", "rate/s", "min", "mean", "p50", "p90", "p95", "p99", "p99.9",
                "max", "stddev"]
        rows = [[*([fmt_tags(g.group)] if grouped else []), fmt_num(g.count), fmt_num(g.rate),
                 fmt_num(g.min, unit), fmt_num(g.mean, unit), fmt_num(g.p50, unit),
                 fmt_num(g.p90, unit), fmt_num(g.p95, unit), fmt_num(g.p99, unit),
                 fmt_num(g.p99_9, unit), fmt_num(g.max, unit), fmt_num(g.stddev, unit)]
                for g in groups]
    table(title, cols, rows)


@click.command("series")
@click.option("--name", default=None, help="Only series of this metric.")
@click.option("--run", "run", type=int, default=None, help="Only series written by this run.")
@click.option("--app", "app", default=None, help="Only series written by runs of this app.")
@db_option
@json_option
@holter_errors
def series_cmd(name: str | None, run: int | None, app: str | None, db: str,
               as_json: bool) -> None:
    """Every recorded series: name, kind, unit, tags, points and when it was last seen."""
    with open_store(db) as store:
        found = q.series(store, name, run=run, app=app)
    if as_json:
        emit_json([s.as_dict() for s in found])
        return
    table(
        f"{len(found)} series in {db}",
        ["name", "kind", "unit", "tags", "points", "last seen"],
        [[s.name, s.kind, s.unit or "-", fmt_tags(s.tags), str(s.points), fmt_time(s.last_ns)]
         for s in found],
    )


@click.command("runs")
@click.option("--app", "app", default=None, help="Only runs of this app.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="Newest runs to show.")
@db_option
@json_option
@holter_errors
def runs_cmd(app: str | None, limit: int, db: str, as_json: bool) -> None:
    """Recorded runs: app, argv, pid, host, start, end and exit status."""
    with open_store(db) as store:
        found = q.runs(store, app=app, limit=limit)
    if as_json:
        emit_json([r.as_dict() for r in found])
        return
    rows = []
    for r in found:
        if r.ended_ns is None:
            status = "running?"
        elif r.exit_status is None:
            status = "?"
        else:
            status = str(r.exit_status)
        if r.exit_info:
            status += f" ({r.exit_info[:40]})"
        rows.append([str(r.id), r.app, " ".join(r.argv)[:60] or "-", str(r.pid), r.host,
                     fmt_time(r.started_ns), fmt_time(r.ended_ns), status])
    table(f"{len(found)} runs in {db}",
          ["id", "app", "argv", "pid", "host", "start", "end", "exit"], rows)
