"""THE read API: every dashboard, report, alert and CLI command reads the store here.

Windows: ``"30s"``, ``"5m"``, ``"1h"``, ``"24h"``, ``"7d"``, combinations such as
``"1h30m"``, or an explicit ``start``/``end``. A point belongs to a window when its
interval *ends* inside it (``start < t_end <= end``).

Rates are per second of **recorded time**: the part of the window during which
the runs that wrote the metric were being recorded (from each run's start to its
last flush). A CLI tool that ran for 3 s inside a 5-minute window and counted 30
requests has a rate of 10/s, not 0.1/s; a service recorded for the whole window
gets count / window length.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NamedTuple

from holter import _clock
from holter.core.registry import tag_value
from holter.core.sketch import _HEADER as _SKETCH_HEADER
from holter.core.sketch import BUCKETS_PER_DOUBLING as SKETCH_PER_DOUBLING
from holter.core.sketch import GAMMA as SKETCH_GAMMA
from holter.core.sketch import MAX_BINS as SKETCH_MAX_BINS
from holter.core.sketch import SCALE as SKETCH_SCALE
from holter.core.sketch import Sketch, collapse, merge_bytes
from holter.errors import QueryError
from holter.model import QUANTILES, RunInfo, SeriesInfo, WindowStats
from holter.store import summaries
from holter.store.schema import POINT_TABLES
from holter.store.spans import SLOW_PER_CHUNK, decode_chunk, key_of_hex
from holter.store.sqlite import Store, first_rowid_at

NS = 1_000_000_000
_WINDOW_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_NS = {"ms": NS // 1000, "s": NS, "m": 60 * NS, "h": 3600 * NS, "d": 86400 * NS,
            "w": 7 * 86400 * NS}
_CHUNK = 500
_QS = [q for _, q in QUANTILES]


def parse_window(window: str | float | int) -> int:
    """Return a window's length in nanoseconds: ``"5m"``, ``"1h30m"``, ``"90s"``, or seconds."""
    if isinstance(window, bool):
        raise QueryError(f"bad window {window!r}: use a duration such as 30s, 5m, 1h, 24h or 7d")
    if isinstance(window, int | float):
        if not window > 0 or math.isinf(window):
            raise QueryError(f"bad window {window!r}: the length must be positive")
        return int(window * NS)
    text = str(window).strip().lower().replace(" ", "")
    parts = _WINDOW_PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise QueryError(
            f"bad window {window!r}: use a duration such as 30s, 5m, 1h, 24h, 7d or 1h30m"
        )
    total = sum(int(float(n) * _UNIT_NS[u]) for n, u in parts)
    if total <= 0:
        raise QueryError(f"bad window {window!r}: the length must be positive")
    return total


def to_ns(when: datetime | str | float | int) -> int:
    """Turn a datetime, an ISO 8601 string or epoch seconds into epoch nanoseconds."""
    if isinstance(when, datetime):
        return int(when.timestamp() * NS)
    if isinstance(when, int | float) and not isinstance(when, bool):
        return int(when * NS)
    try:
        return int(datetime.fromisoformat(str(when)).timestamp() * NS)
    except ValueError:
        raise QueryError(
            f"bad time {when!r}: use ISO 8601 (2026-11-28T12:00:00) or epoch seconds"
        ) from None


def time_range(
    window: str | float | None = None,
    start: datetime | str | float | None = None,
    end: datetime | str | float | None = None,
) -> tuple[int, int]:
    """Resolve a window and/or explicit bounds into ``(start_ns, end_ns)``."""
    end_ns = to_ns(end) if end is not None else _clock.time_ns()
    if start is not None:
        start_ns = to_ns(start)
    else:
        start_ns = end_ns - parse_window(window if window is not None else "5m")
    if start_ns >= end_ns:
        raise QueryError("bad time range: start must be before end")
    return start_ns, end_ns


# -- runs and series ---------------------------------------------------------------------


def runs(store: Store, *, app: str | None = None, limit: int | None = None) -> list[RunInfo]:
    """Runs, newest first."""
    sql = (
        "SELECT id, app, version, argv, pid, host, python, started_ns, last_flush_ns, "
        "ended_ns, exit_status, exit_info, parent_id FROM runs"
    )
    args: list[Any] = []
    if app is not None:
        sql += " WHERE app = ?"
        args.append(app)
    sql += " ORDER BY started_ns DESC, id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(int(limit))
    with store.reading() as conn:
        rows = conn.execute(sql, args).fetchall()
    return [
        RunInfo(
            id=r[0], app=r[1], version=r[2], argv=json.loads(r[3]), pid=r[4], host=r[5],
            python=r[6], started_ns=r[7], last_flush_ns=r[8], ended_ns=r[9],
            exit_status=r[10], exit_info=r[11], parent_id=r[12],
        )
        for r in rows
    ]


def get_run(store: Store, run_id: int) -> RunInfo:
    """One run by id; QueryError if there is none."""
    for run in runs(store):
        if run.id == run_id:
            return run
    raise QueryError(f"no run with id {run_id} in {store.path!r}; `holter runs` lists them")


def series(
    store: Store,
    name: str | None = None,
    *,
    run: int | None = None,
    app: str | None = None,
) -> list[SeriesInfo]:
    """Stored series (optionally of one metric, run or app) with point counts and times."""
    with store.reading() as conn:
        rows = conn.execute(
            "SELECT id, name, kind, unit, tags FROM series"
            + (" WHERE name = ?" if name else "")
            + " ORDER BY name, kind, tags",
            (name,) if name else (),
        ).fetchall()
        run_ids = _run_filter(conn, run, app)
        stats: dict[int, list[Any]] = {}
        for table in POINT_TABLES:
            sql = (
                f"SELECT series_id, COUNT(*), MIN(t_start_ns), MAX(t_end_ns) FROM {table}"
            )
            args: list[Any] = []
            if run_ids is not None:
                sql += f" WHERE run_id IN ({','.join('?' * len(run_ids))})"
                args.extend(run_ids)
            sql += " GROUP BY series_id"
            for sid, n, first, last in conn.execute(sql, args):
                acc = stats.setdefault(sid, [0, None, None])
                acc[0] += n
                acc[1] = first if acc[1] is None else min(acc[1], first)
                acc[2] = last if acc[2] is None else max(acc[2], last)
    out = []
    for sid, sname, kind, unit, tags in rows:
        acc = stats.get(sid)
        if run_ids is not None and acc is None:
            continue
        n, first, last = acc or (0, None, None)
        out.append(SeriesInfo(sid, sname, kind, unit, json.loads(tags), n, first, last))
    return out


def metric_names(store: Store) -> list[str]:
    """Names of every stored metric, sorted."""
    with store.reading() as conn:
        return [r[0] for r in conn.execute("SELECT DISTINCT name FROM series ORDER BY name")]


# -- window statistics -------------------------------------------------------------------


def stats(
    store: Store,
    name: str,
    window: str | float | None = "5m",
    *,
    start: datetime | str | float | None = None,
    end: datetime | str | float | None = None,
    tags: Mapping[str, object] | None = None,
    run: int | None = None,
    app: str | None = None,
    kind: str | None = None,
) -> WindowStats:
    """Aggregates of metric ``name`` over a window, all matching series merged."""
    groups = grouped_stats(
        store, name, window, start=start, end=end, tags=tags, run=run, app=app, kind=kind
    )
    return groups[0]


def grouped_stats(
    store: Store,
    name: str,
    window: str | float | None = "5m",
    *,
    start: datetime | str | float | None = None,
    end: datetime | str | float | None = None,
    tags: Mapping[str, object] | None = None,
    by: str | Sequence[str] | None = None,
    run: int | None = None,
    app: str | None = None,
    kind: str | None = None,
) -> list[WindowStats]:
    """Aggregates of ``name`` over a window, one per value of the ``by`` tag(s).

    Without ``by`` the list has one element. Groups are sorted by count, largest first.
    """
    start_ns, end_ns = time_range(window, start, end)
    by_keys = [by] if isinstance(by, str) else list(by or [])
    with store.reading() as conn:
        chosen, unit, the_kind = _match_series(conn, name, tags, kind)
        run_ids = _run_filter(conn, run, app)
        groups: dict[tuple[str, ...], list[int]] = {}
        for sid, stags in chosen:
            groups.setdefault(tuple(stags.get(k, "") for k in by_keys), []).append(sid)
        if not groups:
            groups[tuple("" for _ in by_keys)] = []
        results = []
        for group_key, ids in groups.items():
            rows = _points(conn, ids, start_ns, end_ns, run_ids)
            covered = _covered_s(conn, ids, start_ns, end_ns, run_ids)
            results.append(
                aggregate(
                    rows, name=name, kind=the_kind, unit=unit,
                    group=dict(zip(by_keys, group_key, strict=True)), start_ns=start_ns,
                    end_ns=end_ns, covered_s=covered, n_series=len(ids),
                )
            )
    results.sort(key=lambda s: (-s.count, sorted(s.group.items())))
    return results


def buckets(
    store: Store,
    name: str,
    window: str | float | None = "1h",
    *,
    step: str | float | None = None,
    points: int = 60,
    start: datetime | str | float | None = None,
    end: datetime | str | float | None = None,
    tags: Mapping[str, object] | None = None,
    run: int | None = None,
    app: str | None = None,
    kind: str | None = None,
) -> list[WindowStats]:
    """The window cut into equal steps (``step``, or ``points`` of them), one stats each.

    For charts: each element covers ``(start_ns, end_ns]`` of its step; empty steps
    have count 0 and no percentiles.
    """
    start_ns, end_ns = time_range(window, start, end)
    if step is not None:
        step_ns = parse_window(step)
    else:
        step_ns = max((end_ns - start_ns) // max(points, 1), 1)
    n_steps = max(1, math.ceil((end_ns - start_ns) / step_ns))
    start_ns = end_ns - n_steps * step_ns
    with store.reading() as conn:
        chosen, unit, the_kind = _match_series(conn, name, tags, kind)
        ids = [sid for sid, _ in chosen]
        run_ids = _run_filter(conn, run, app)
        rows = _points(conn, ids, start_ns, end_ns, run_ids)
        spans = _run_spans(conn, ids, start_ns, end_ns, run_ids)
    per_step: list[list[tuple[Any, ...]]] = [[] for _ in range(n_steps)]
    for row in rows:
        index = min(max((row[3] - start_ns - 1) // step_ns, 0), n_steps - 1)
        per_step[index].append(row)
    out = []
    for i, step_rows in enumerate(per_step):
        s = start_ns + i * step_ns
        e = s + step_ns
        out.append(
            aggregate(
                step_rows, name=name, kind=the_kind, unit=unit, group={}, start_ns=s, end_ns=e,
                covered_s=_union_s(spans, s, e), n_series=len(ids),
            )
        )
    return out


def aggregate(
    rows: Sequence[Sequence[Any]],
    *,
    name: str,
    kind: str | None,
    unit: str,
    group: dict[str, str],
    start_ns: int,
    end_ns: int,
    covered_s: float,
    n_series: int,
) -> WindowStats:
    """Merge point rows into one :class:`WindowStats`.

    Rows are ``(series_id, run_id, t_start, t_end, count, total, min, max, last, m2,
    sketch)`` as the point tables store them.
    """
    base = {
        "name": name, "kind": kind, "unit": unit, "group": group, "start_ns": start_ns,
        "end_ns": end_ns, "covered_s": covered_s, "series": n_series,
    }
    if not rows:
        return WindowStats(**base, count=0, rate=0.0 if kind in ("counter", "histogram") else None)
    if kind == "counter":
        total = math.fsum(r[5] or 0.0 for r in rows)
        total = int(total) if float(total).is_integer() else total
        return WindowStats(**base, count=total, sum=total, rate=_rate(total, covered_s))
    if kind == "gauge":
        latest = max(rows, key=lambda r: r[3])
        sets = sum(r[4] or 0 for r in rows)
        mean = (
            math.fsum(r[5] or 0.0 for r in rows) / sets
            if sets
            else math.fsum(r[8] for r in rows) / len(rows)
        )
        return WindowStats(
            **base, count=len(rows), last=latest[8], mean=mean,
            min=min(r[6] for r in rows), max=max(r[7] for r in rows),
        )
    count = 0.0
    total = 0.0
    m2 = 0.0
    lo = math.inf
    hi = -math.inf
    sketch = Sketch()
    for r in rows:
        n = r[4] or 0
        if not n:
            continue
        s = r[5] or 0.0
        if count:
            delta = s / n - total / count
            m2 += (r[9] or 0.0) + delta * delta * count * n / (count + n)
        else:
            m2 = r[9] or 0.0
        count += n
        total += s
        lo = min(lo, r[6])
        hi = max(hi, r[7])
        if r[10]:
            sketch.merge(Sketch.from_bytes(r[10]))
    if not count:
        return WindowStats(**base, count=0, rate=0.0)
    qs = sketch.quantiles(_QS, lo, hi)
    count_out = int(count)
    return WindowStats(
        **base,
        count=count_out,
        sum=total,
        rate=_rate(count_out, covered_s),
        min=lo,
        max=hi,
        mean=total / count,
        stddev=math.sqrt(max(m2, 0.0) / count),
        **{field: q for (field, _), q in zip(QUANTILES, qs, strict=True)},
    )


# -- helpers -----------------------------------------------------------------------------


def _rate(count: float, covered_s: float) -> float | None:
    return count / covered_s if covered_s > 0 else None


def _match_series(
    conn: Any, name: str, tags: Mapping[str, object] | None, kind: str | None
) -> tuple[list[tuple[int, dict[str, str]]], str, str | None]:
    rows = conn.execute(
        "SELECT id, kind, unit, tags FROM series WHERE name = ?", (name,)
    ).fetchall()
    if not rows:
        raise QueryError(
            f"no metric named {name!r} in the store; `holter series` lists the recorded ones"
        )
    kinds = sorted({r[1] for r in rows})
    if kind is not None:
        rows = [r for r in rows if r[1] == kind]
    elif len(kinds) > 1:
        raise QueryError(
            f"metric {name!r} was recorded as several kinds ({', '.join(kinds)}); "
            "pass kind= to choose one"
        )
    wanted = {str(k): tag_value(v) for k, v in (tags or {}).items()}
    chosen = []
    unit = ""
    for sid, _k, sunit, stags in rows:
        parsed = json.loads(stags)
        if all(parsed.get(k) == v for k, v in wanted.items()):
            chosen.append((sid, parsed))
            unit = unit or sunit
    return chosen, unit, (rows[0][1] if rows else kind)


def _run_filter(conn: Any, run: int | None, app: str | None) -> list[int] | None:
    if run is None and app is None:
        return None
    sql = "SELECT id FROM runs WHERE 1=1"
    args: list[Any] = []
    if run is not None:
        sql += " AND id = ?"
        args.append(int(run))
    if app is not None:
        sql += " AND app = ?"
        args.append(app)
    ids = [r[0] for r in conn.execute(sql, args)]
    if run is not None and not ids:
        raise QueryError(f"no run with id {run} (app {app!r})" if app else f"no run with id {run}")
    return ids


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


def _points(
    conn: Any, ids: Sequence[int], start_ns: int, end_ns: int, run_ids: list[int] | None
) -> list[tuple[Any, ...]]:
    if not ids or (run_ids is not None and not run_ids):
        return []
    out: list[tuple[Any, ...]] = []
    run_sql = f" AND run_id IN ({','.join('?' * len(run_ids))})" if run_ids else ""
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        for table in POINT_TABLES:
            out.extend(
                conn.execute(
                    f"SELECT series_id, run_id, t_start_ns, t_end_ns, count, total, min, max, "
                    f"last, m2, sketch FROM {table} WHERE series_id IN ({marks}) "
                    f"AND t_end_ns > ? AND t_end_ns <= ?{run_sql}",
                    (*chunk, start_ns, end_ns, *(run_ids or ())),
                ).fetchall()
            )
    return out


def _run_spans(
    conn: Any, ids: Sequence[int], start_ns: int, end_ns: int, run_ids: list[int] | None
) -> list[tuple[int, int]]:
    if not ids or (run_ids is not None and not run_ids):
        return []
    spans: dict[int, tuple[int, int]] = {}
    run_sql = f" AND r.id IN ({','.join('?' * len(run_ids))})" if run_ids else ""
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        for rid, s, e in conn.execute(
            f"SELECT DISTINCT r.id, r.started_ns, MAX(r.last_flush_ns, COALESCE(r.ended_ns, 0)) "
            f"FROM runs r JOIN run_series rs ON rs.run_id = r.id "
            f"WHERE rs.series_id IN ({marks}) AND r.started_ns < ? "
            f"AND MAX(r.last_flush_ns, COALESCE(r.ended_ns, 0)) > ?{run_sql}",
            (*chunk, end_ns, start_ns, *(run_ids or ())),
        ):
            spans[rid] = (s, e)
    return list(spans.values())


def _union_s(spans: Iterable[tuple[int, int]], start_ns: int, end_ns: int) -> float:
    clipped = sorted(
        (max(s, start_ns), min(e, end_ns)) for s, e in spans if e > start_ns and s < end_ns
    )
    total = 0
    cur_s = cur_e = None
    for s, e in clipped:
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s  # type: ignore[operator]
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s  # type: ignore[operator]
    return total / NS


def _covered_s(
    conn: Any, ids: Sequence[int], start_ns: int, end_ns: int, run_ids: list[int] | None
) -> float:
    return _union_s(_run_spans(conn, ids, start_ns, end_ns, run_ids), start_ns, end_ns)


# -- traces ------------------------------------------------------------------------------

_GLOB_CHARS = set("*?[")


def traces(
    store: Store,
    window: str | float | None = "1h",
    *,
    start: datetime | str | float | None = None,
    end: datetime | str | float | None = None,
    slowest: bool = False,
    errors: bool = False,
    name: str | None = None,
    run: int | None = None,
    app: str | None = None,
    limit: int = 20,
) -> list[dict[str, Any]]:
    """Traces whose local root span started in the window, newest first (or slowest).

    ``name`` matches the root span's name: a glob (``db.*``) or, without wildcards, any
    name containing it. Each trace: id, root name and span id, whether its true root
    (not a span continuing a remote caller) was seen, start, end, duration (first start
    to last end over all its spans), span count, errors and unfinished spans.
    """
    start_ns, end_ns = time_range(window, start, end)
    where = "root_kind > 0 AND start_ns > ? AND start_ns <= ?"
    args: list[Any] = [start_ns, end_ns]
    if name:
        glob = bool(_GLOB_CHARS & set(name))
        where += " AND root_name GLOB ?" if glob else " AND instr(root_name, ?) > 0"
        args.append(name)
    with store.reading() as conn:
        run_ids = _run_filter(conn, run, app)
        if run_ids is not None:
            if not run_ids:
                return []
            where += f" AND run_id IN ({','.join('?' * len(run_ids))})"
            args.extend(run_ids)
        if errors:
            where += (
                " AND trace_id IN (SELECT trace_id FROM trace_parts WHERE errors > 0 "
                "AND start_ns > ? AND start_ns <= ?)"
            )
            args.extend([start_ns - 86400 * NS, end_ns + 86400 * NS])
        if slowest and not name and not errors and int(limit) <= SLOW_PER_CHUNK:
            # each chunk's slowest roots are in slow_traces: the window's N slowest too
            slow_sql = (
                "SELECT trace_id FROM slow_traces WHERE start_ns > ? AND start_ns <= ?"
                + (f" AND run_id IN ({','.join('?' * len(run_ids))})" if run_ids else "")
                + " GROUP BY trace_id ORDER BY MAX(root_duration_ns) DESC LIMIT ?"
            )
            ids = [r[0] for r in conn.execute(
                slow_sql, [start_ns, end_ns, *(run_ids or ()), int(limit)]
            )]
        else:
            # one row per trace (a trace continued by a remote caller has several roots)
            order = "MAX(root_duration_ns)" if slowest else "MAX(start_ns)"
            ids = [r[0] for r in conn.execute(
                f"SELECT trace_id FROM trace_parts WHERE {where} GROUP BY trace_id "
                f"ORDER BY {order} DESC LIMIT ?",
                [*args, int(limit)],
            )]
        best: dict[str, tuple[Any, ...]] = {}
        for row in _parts_of(conn, ids, "trace_id, root_span_id, root_name, start_ns, "
                             "root_duration_ns, root_kind", "root_kind > 0"):
            seen = best.get(row[0])
            if seen is None or (row[5], row[4]) > (seen[5], seen[4]):
                best[row[0]] = row
        totals = _trace_totals(conn, list(best))
    out = []
    for trace_id, root in best.items():
        first, last, n, n_err, n_unf = totals[trace_id]
        out.append({
            "trace_id": trace_id, "root_name": root[2], "root_span_id": root[1],
            "has_root": root[5] == 2, "start_ns": first, "end_ns": last,
            "duration_ns": last - first, "spans": n, "errors": n_err, "unfinished": n_unf,
        })
    out.sort(key=(lambda t: -t["duration_ns"]) if slowest else (lambda t: -t["start_ns"]))
    return out[: int(limit)]


def _parts_of(conn: Any, ids: Sequence[str], columns: str, where: str = "1") -> list[Any]:
    """trace_parts rows of the given trace ids (found through the integer trace_key)."""
    wanted = set(ids)
    keys = sorted({key_of_hex(t) for t in wanted})
    rows = []
    for chunk in _chunks(keys):
        rows.extend(
            r for r in conn.execute(
                f"SELECT {columns} FROM trace_parts WHERE {where} AND trace_key IN "
                f"({','.join('?' * len(chunk))})",
                list(chunk),
            )
            if r[0] in wanted
        )
    return rows


def _trace_totals(conn: Any, ids: Sequence[str]) -> dict[str, tuple[int, int, int, int, int]]:
    totals: dict[str, list[int]] = {}
    for trace_id, first, last, n, n_err, n_unf in _parts_of(
        conn, ids, "trace_id, start_ns, end_ns, spans, errors, unfinished"
    ):
        acc = totals.get(trace_id)
        if acc is None:
            totals[trace_id] = [first, last, n, n_err, n_unf]
        else:
            acc[0] = min(acc[0], first)
            acc[1] = max(acc[1], last)
            acc[2] += n
            acc[3] += n_err
            acc[4] += n_unf
    return {k: tuple(v) for k, v in totals.items()}  # type: ignore[misc]


RECENT_PARTS = 100_000
"""How many of the newest trace parts :func:`trace_summary` inspects for active traces."""


def trace_summary(
    store: Store,
    window: str | float | None = "1h",
    *,
    start: datetime | str | float | None = None,
    end: datetime | str | float | None = None,
    run: int | None = None,
    app: str | None = None,
) -> dict[str, Any]:
    """Counts over the traces whose root started in the window (spans of a run/app only).

    ``completed``: traces whose local root span ended and was stored; ``active``:
    traces among the newest :data:`RECENT_PARTS` stored parts whose root is not stored
    yet (still running, or their root lives in a process that has not flushed).
    """
    start_ns, end_ns = time_range(window, start, end)
    empty = {"start_ns": start_ns, "end_ns": end_ns, "traces": 0, "completed": 0, "active": 0,
             "mean_duration_ns": None, "mean_spans": None, "with_errors": 0}
    with store.reading() as conn:
        run_ids = _run_filter(conn, run, app)
        if run_ids is not None and not run_ids:
            return empty
        only = f" AND run_id IN ({','.join('?' * len(run_ids))})" if run_ids else ""
        extra = list(run_ids or ())
        window_args = [start_ns, end_ns, *extra]
        completed, mean_duration = conn.execute(
            "SELECT COUNT(DISTINCT trace_id), AVG(CASE WHEN root_kind = 2 "
            "THEN root_duration_ns END) FROM trace_parts "
            f"WHERE root_kind > 0 AND start_ns > ? AND start_ns <= ?{only}",
            window_args,
        ).fetchone()
        total_spans = conn.execute(
            "SELECT SUM(p.spans) FROM trace_parts p JOIN (SELECT DISTINCT trace_key, trace_id "
            f"FROM trace_parts WHERE root_kind > 0 AND start_ns > ? AND start_ns <= ?{only}) r "
            "ON p.trace_key = r.trace_key AND p.trace_id = r.trace_id"
            + (f" WHERE p.run_id IN ({','.join('?' * len(extra))})" if extra else ""),
            [*window_args, *extra],
        ).fetchone()[0]
        with_errors = conn.execute(
            "SELECT COUNT(DISTINCT trace_id) FROM trace_parts WHERE errors > 0 "
            f"AND start_ns > ? AND start_ns <= ?{only}",
            window_args,
        ).fetchone()[0]
        newest = conn.execute("SELECT MAX(rowid) FROM trace_parts").fetchone()[0] or 0
        active = conn.execute(
            "SELECT COUNT(DISTINCT r.trace_id) FROM trace_parts r WHERE r.rowid > ? "
            "AND r.start_ns > ? AND r.start_ns <= ? "
            + (f"AND r.run_id IN ({','.join('?' * len(extra))}) " if extra else "")
            + "AND NOT EXISTS (SELECT 1 FROM trace_parts s WHERE s.trace_key = r.trace_key "
            "AND s.trace_id = r.trace_id AND s.root_kind > 0)",
            (newest - RECENT_PARTS, start_ns, end_ns, *extra),
        ).fetchone()[0]
    return {
        **empty,
        "traces": (completed or 0) + (active or 0),
        "completed": completed or 0,
        "active": active or 0,
        "mean_duration_ns": mean_duration,
        "mean_spans": (total_spans / completed) if completed and total_spans else None,
        "with_errors": with_errors or 0,
    }


def trace(store: Store, trace_id: str) -> list[dict[str, Any]]:
    """Every stored span of a trace (an id, or a unique prefix of 8+ hex digits), by start.

    Raises QueryError when no trace matches, or the prefix is ambiguous.
    """
    wanted = str(trace_id).strip().lower()
    if not wanted or not set(wanted) <= set("0123456789abcdef") or len(wanted) > 32:
        raise QueryError(
            f"bad trace id {trace_id!r}: a trace id is 32 hex digits (or a prefix of 8 or more)"
        )
    with store.reading() as conn:
        if len(wanted) < 32:
            if len(wanted) < 8:
                raise QueryError(f"trace id prefix {trace_id!r} is too short: give 8+ digits")
            lo = key_of_hex(wanted.ljust(32, "0"))
            hi = key_of_hex(wanted.ljust(32, "f"))
            ids = [r[0] for r in conn.execute(
                "SELECT DISTINCT trace_id FROM trace_parts WHERE trace_key BETWEEN ? AND ? "
                "AND trace_id >= ? AND trace_id < ? LIMIT 2",
                (lo, hi, wanted, wanted + "g"),
            )]
            if len(ids) > 1:
                raise QueryError(f"trace id prefix {trace_id!r} matches several traces")
            wanted = ids[0] if ids else wanted
        spans = _spans_of(conn, [wanted]).get(wanted, [])
    if not spans:
        raise QueryError(
            f"no trace {trace_id!r} in {store.path!r}; `holter traces` lists recorded traces"
        )
    spans.sort(key=lambda s: (s["start_ns"], s["span_id"]))
    return spans


def _spans_of(conn: Any, ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Spans of the given traces, decoded from their chunks (each chunk once)."""
    wanted = set(ids)
    chunk_runs: dict[int, int] = {
        chunk_id: run_id
        for _t, chunk_id, run_id in _parts_of(conn, list(ids), "trace_id, chunk_id, run_id")
    }
    out: dict[str, list[dict[str, Any]]] = {}
    for chunk_id, run_id in sorted(chunk_runs.items()):
        row = conn.execute("SELECT data FROM span_chunks WHERE id = ?", (chunk_id,)).fetchone()
        if row is None:  # expired by retention between the two reads
            continue
        for span in decode_chunk(row[0]):
            if span["trace_id"] in wanted:
                span["run_id"] = run_id
                out.setdefault(span["trace_id"], []).append(span)
    return out


def trace_spans(
    store: Store,
    start_ns: int,
    end_ns: int,
    *,
    run_ids: Sequence[int] | None = None,
    max_traces: int = 5000,
) -> list[dict[str, Any]]:
    """Spans of the traces whose local root started in ``(start_ns, end_ns]``.

    At most the ``max_traces`` newest traces are read (a bound on the work; callers
    computing statistics over them say so).
    """
    sql = (
        "SELECT trace_id, MAX(start_ns) AS s FROM trace_parts WHERE root_kind > 0 "
        "AND start_ns > ? AND start_ns <= ?"
    )
    args: list[Any] = [start_ns, end_ns]
    if run_ids is not None:
        if not run_ids:
            return []
        sql += f" AND run_id IN ({','.join('?' * len(run_ids))})"
        args.extend(run_ids)
    sql += " GROUP BY trace_id ORDER BY s DESC LIMIT ?"
    args.append(max_traces)
    with store.reading() as conn:
        ids = [r[0] for r in conn.execute(sql, args)]
        by_trace = _spans_of(conn, ids)
    return [span for spans in by_trace.values() for span in spans]


def run_ids(store: Store, run: int | None = None, app: str | None = None) -> list[int] | None:
    """Ids of the runs matching ``run``/``app`` (None when neither filter is given)."""
    with store.reading() as conn:
        return _run_filter(conn, run, app)


# -- export reads (holter.export: exposition, remote write, OTLP) ------------------------


class ExportPoint(NamedTuple):
    """One stored interval point with what an exporter needs to send it.

    ``rowid`` is its row in the ``points`` table (the order points were written in,
    which export cursors follow); ``app`` is the app of the run that wrote it.
    """

    rowid: int
    series_id: int
    name: str
    kind: str
    unit: str
    tags: dict[str, str]
    run_id: int
    app: str
    t_start_ns: int
    t_end_ns: int
    count: float | None
    total: float | None
    min: float | None
    max: float | None
    last: float | None
    m2: float | None
    sketch: bytes | None


@dataclass(slots=True)
class PointTotals:
    """Everything recorded by one series for one group (an app or a run), merged.

    ``count``/``total``: sums of the points' fields (a counter's increase is ``total``;
    a histogram's observations ``count`` and their sum ``total``). ``last`` is the value
    of the newest gauge point (``last_t_end_ns``). ``sketch`` is filled only on request.
    """

    count: float = 0.0
    total: float = 0.0
    min: float | None = None
    max: float | None = None
    last: float | None = None
    last_t_end_ns: int | None = None
    sketch: Sketch | None = None


_EXPORT_COLUMNS = (
    "p.rowid, p.series_id, s.name, s.kind, s.unit, s.tags, p.run_id, COALESCE(r.app, ''), "
    "p.t_start_ns, p.t_end_ns, p.count, p.total, p.min, p.max, p.last, p.m2, p.sketch"
)


def points_after(
    store: Store, after_rowid: int, *, limit: int = 5000
) -> tuple[list[ExportPoint], int]:
    """Interval points written after row ``after_rowid``, in write order, at most ``limit``.

    Returns the points and the newest row id of the ``points`` table (0 when empty). A
    newest row id below ``after_rowid`` means the table was emptied by retention and its
    row ids started again: the caller's cursor is stale and must go back to 0.
    """
    with store.reading() as conn:
        newest = conn.execute("SELECT MAX(rowid) FROM points").fetchone()[0] or 0
        rows = conn.execute(
            f"SELECT {_EXPORT_COLUMNS} FROM points p JOIN series s ON s.id = p.series_id "
            "LEFT JOIN runs r ON r.id = p.run_id WHERE p.rowid > ? ORDER BY p.rowid LIMIT ?",
            (int(after_rowid), int(limit)),
        ).fetchall()
    return _export_points(rows), newest


def points_since(
    store: Store, since_ns: int, *, upto_rowid: int | None = None, kind: str | None = None
) -> list[ExportPoint]:
    """Interval points whose interval ended after ``since_ns`` (and at most row ``upto_rowid``).

    In write order; ``kind`` keeps one kind of series (``"histogram"``...).
    """
    sql = (
        f"SELECT {_EXPORT_COLUMNS} FROM points p JOIN series s ON s.id = p.series_id "
        "LEFT JOIN runs r ON r.id = p.run_id WHERE p.t_end_ns > ?"
    )
    args: list[Any] = [int(since_ns)]
    if upto_rowid is not None:
        sql += " AND p.rowid <= ?"
        args.append(int(upto_rowid))
    if kind is not None:
        sql += " AND s.kind = ?"
        args.append(kind)
    with store.reading() as conn:
        rows = conn.execute(sql + " ORDER BY p.rowid", args).fetchall()
    return _export_points(rows)


def first_point_rowid_after(store: Store, t_ns: int) -> int:
    """About the first ``points`` row whose interval ended at or after ``t_ns`` (0 if none).

    Points are appended in roughly time order, so a binary search over row ids finds it
    in log(n) reads; a point written late (after a store outage) may sit before it.
    """
    with store.reading() as conn:
        first = first_rowid_at(conn, "points", "t_end_ns", int(t_ns))
        if first is None:
            return 0
        newest = conn.execute("SELECT MAX(rowid) FROM points").fetchone()[0] or 0
        row = conn.execute(
            "SELECT t_end_ns FROM points WHERE rowid >= ? ORDER BY rowid LIMIT 1", (first,)
        ).fetchone()
    if row is None or row[0] < t_ns:
        return newest + 1
    return first


def newest_point_rowid(store: Store) -> int:
    """The newest row id of the ``points`` table (0 when it is empty)."""
    with store.reading() as conn:
        return conn.execute("SELECT MAX(rowid) FROM points").fetchone()[0] or 0


def point_totals(
    store: Store,
    *,
    by: str = "app",
    upto_rowid: int | None = None,
    pairs: Iterable[tuple[int, Any]] | None = None,
    sketches: bool = False,
) -> dict[tuple[int, Any], PointTotals]:
    """Totals per (series id, group) over every stored point: rollups and interval points.

    ``by`` groups by ``"app"`` (the runs' app name) or ``"run"`` (run id). Interval points
    count up to row ``upto_rowid`` (all when None); rollups always count (they hold only
    points older than the raw retention). ``pairs`` limits the answer to those
    (series id, group) pairs. ``sketches`` also merges the histograms' sketches.
    """
    if by not in ("app", "run"):
        raise QueryError(f"bad grouping {by!r}: use 'app' or 'run'")
    wanted = set(pairs) if pairs is not None else None
    if wanted is not None and not wanted:
        return {}
    group = "COALESCE(r.app, '')" if by == "app" else "p.run_id"
    out: dict[tuple[int, Any], PointTotals] = {}
    sids = sorted({sid for sid, _ in wanted}) if wanted is not None else None
    with store.reading() as conn:
        for table in POINT_TABLES:
            where = "1"
            args: list[Any] = []
            if table == "points" and upto_rowid is not None:
                where += " AND p.rowid <= ?"
                args.append(int(upto_rowid))
            for chunk in (_chunks(sids) if sids is not None else [None]):
                chunk_where = where
                chunk_args = list(args)
                if chunk is not None:
                    chunk_where += f" AND p.series_id IN ({','.join('?' * len(chunk))})"
                    chunk_args.extend(chunk)
                base = (
                    f"FROM {table} p JOIN series s ON s.id = p.series_id "
                    f"LEFT JOIN runs r ON r.id = p.run_id WHERE {chunk_where}"
                )
                for sid, key, n, total, lo, hi in conn.execute(
                    f"SELECT p.series_id, {group}, SUM(p.count), SUM(p.total), MIN(p.min), "
                    f"MAX(p.max) {base} GROUP BY p.series_id, {group}",
                    chunk_args,
                ):
                    if wanted is not None and (sid, key) not in wanted:
                        continue
                    acc = out.get((sid, key))
                    if acc is None:
                        acc = out[(sid, key)] = PointTotals()
                    acc.count += n or 0.0
                    acc.total += total or 0.0
                    if lo is not None:
                        acc.min = lo if acc.min is None else min(acc.min, lo)
                    if hi is not None:
                        acc.max = hi if acc.max is None else max(acc.max, hi)
                # the newest gauge value (one max() aggregate: `last` comes from its row)
                for sid, key, t_end, last in conn.execute(
                    f"SELECT p.series_id, {group}, MAX(p.t_end_ns), p.last {base} "
                    f"AND s.kind = 'gauge' GROUP BY p.series_id, {group}",
                    chunk_args,
                ):
                    acc = out.get((sid, key))
                    if acc is None or (acc.last_t_end_ns is not None and acc.last_t_end_ns > t_end):
                        continue
                    acc.last = last
                    acc.last_t_end_ns = t_end
                if sketches:
                    for sid, key, blob in conn.execute(
                        f"SELECT p.series_id, {group}, p.sketch {base} "
                        "AND s.kind = 'histogram' AND p.sketch IS NOT NULL",
                        chunk_args,
                    ):
                        acc = out.get((sid, key))
                        if acc is None:
                            continue
                        if acc.sketch is None:
                            acc.sketch = Sketch()
                        acc.sketch.merge(Sketch.from_bytes(blob))
    return out


def series_by_id(store: Store, ids: Iterable[int] | None = None) -> dict[int, SeriesInfo]:
    """Series (name, kind, unit, tags) by id, without point counts; all when ``ids`` is None."""
    with store.reading() as conn:
        if ids is None:
            rows = conn.execute("SELECT id, name, kind, unit, tags FROM series").fetchall()
        else:
            rows = []
            for chunk in _chunks(sorted(set(ids))):
                rows.extend(conn.execute(
                    "SELECT id, name, kind, unit, tags FROM series WHERE id IN "
                    f"({','.join('?' * len(chunk))})",
                    list(chunk),
                ).fetchall())
    return {
        r[0]: SeriesInfo(r[0], r[1], r[2], r[3], json.loads(r[4]), 0, None, None) for r in rows
    }


def span_chunks_after(
    store: Store, after_id: int, *, limit: int = 4
) -> tuple[list[tuple[int, int, list[dict[str, Any]] | None]], int]:
    """Stored span chunks after chunk ``after_id``, oldest first, at most ``limit``.

    Each is ``(chunk id, run id, spans)`` with spans decoded as :func:`trace` gives them
    (``None`` for a chunk that cannot be decoded). Also returns the newest chunk id (0 when
    there is none); below ``after_id``, the caller's cursor is stale (ids started again).
    """
    with store.reading() as conn:
        newest = conn.execute("SELECT MAX(id) FROM span_chunks").fetchone()[0] or 0
        rows = conn.execute(
            "SELECT id, run_id, data FROM span_chunks WHERE id > ? ORDER BY id LIMIT ?",
            (int(after_id), int(limit)),
        ).fetchall()
    out: list[tuple[int, int, list[dict[str, Any]] | None]] = []
    for chunk_id, run_id, data in rows:
        try:
            spans: list[dict[str, Any]] | None = decode_chunk(data)
        except Exception:  # a damaged chunk must not stop an export; the caller counts it
            spans = None
        out.append((chunk_id, run_id, spans))
    return out, newest


def newest_span_chunk_id(store: Store) -> int:
    """The newest span chunk id (0 when there is none)."""
    with store.reading() as conn:
        return conn.execute("SELECT MAX(id) FROM span_chunks").fetchone()[0] or 0


def first_span_chunk_after(store: Store, t_ns: int) -> int:
    """About the first span chunk holding spans that started at or after ``t_ns`` (0 if none)."""
    with store.reading() as conn:
        row = conn.execute(
            "SELECT MIN(id) FROM span_chunks WHERE max_start_ns >= ?", (int(t_ns),)
        ).fetchone()
        if row[0] is not None:
            return int(row[0])
        newest = conn.execute("SELECT MAX(id) FROM span_chunks").fetchone()[0] or 0
    return newest + 1


def _export_points(rows: Sequence[Sequence[Any]]) -> list[ExportPoint]:
    tags_of: dict[int, dict[str, str]] = {}
    out = []
    for r in rows:
        tags = tags_of.get(r[1])
        if tags is None:
            tags = tags_of[r[1]] = json.loads(r[5])
        out.append(ExportPoint(r[0], r[1], r[2], r[3], r[4], tags, r[6], r[7], *r[8:]))
    return out


# -- anomaly detection (the tables of holter.store.anomalies) ----------------------------


def anomalies(store: Store, start_ns: int, end_ns: int, **filters: Any) -> list[Any]:
    """Stored anomalies overlapping ``(start_ns, end_ns]``, newest first.

    Filters: ``metric``, ``tags``, ``min_severity``, ``limit``
    (:func:`holter.store.anomalies.anomalies`).
    """
    from holter.store.anomalies import anomalies as read

    return read(store, start_ns, end_ns, **filters)


def detector_states(store: Store, **filters: Any) -> list[Any]:
    """Stored detector baselines, one per series and statistic (``metric``, ``with_state``)."""
    from holter.store.anomalies import detector_states as read

    return read(store, **filters)


# -- report reads (holter.reports): every series of a window in one pass -----------------


def refresh_summaries(store: Store, *, max_rows: int | None = None) -> int | None:
    """Bring the 5-minute/1-hour summaries up to date (:mod:`holter.store.summaries`).

    Returns the raw points merged, or None when the store cannot be written now (then
    reads simply use the raw points, slower over long windows).
    """
    return summaries.try_refresh(store, max_rows=max_rows)


@dataclass(slots=True)
class SeriesWindow:
    """One series over a window: what it is, its merged statistics, and (on request) sketch.

    ``stats.group`` holds the series' tags; ``points`` is how many stored points (interval
    points or rollups) were merged.
    """

    series: SeriesInfo
    stats: WindowStats
    points: int
    sketch: Sketch | None = None


def _numpy() -> Any:
    try:
        import numpy as np
    except ImportError:
        return None
    return np


def _merge_arrays(np: Any, blobs: Sequence[bytes]) -> tuple[Any, Any, Any, Any, int]:
    """Merged bucket keys and counts (positive, negative; keys ascending) and zeros."""
    size = _SKETCH_HEADER.size
    parts: list[list[bytes]] = [[], [], [], []]  # pos deltas, pos counts, neg deltas, counts
    lengths: list[list[int]] = [[], []]
    zero = 0
    unpack = _SKETCH_HEADER.unpack_from
    for blob in blobs:
        raw = zlib.decompress(blob)
        version, scale, z, npos, nneg = unpack(raw)
        n = npos + nneg
        if version != 1 or scale != SKETCH_SCALE or len(raw) != size + 16 * n:
            raise ValueError("not a holter sketch")
        zero += z
        counts_at = size + 8 * n
        if npos:
            parts[0].append(raw[size:size + 8 * npos])
            parts[1].append(raw[counts_at:counts_at + 8 * npos])
            lengths[0].append(npos)
        if nneg:
            parts[2].append(raw[size + 8 * npos:counts_at])
            parts[3].append(raw[counts_at + 8 * npos:])
            lengths[1].append(nneg)
    out: list[Any] = []
    for side in (0, 1):
        if not lengths[side]:
            out += [np.zeros(0, np.int64), np.zeros(0, np.uint64)]
            continue
        deltas = np.frombuffer(b"".join(parts[2 * side]), "<i8")
        counts = np.frombuffer(b"".join(parts[2 * side + 1]), "<u8")
        # keys are delta-coded within each sketch: one cumsum, minus each segment's base
        total = np.cumsum(deltas)
        seg = np.asarray(lengths[side])
        ends = np.cumsum(seg)
        base = np.concatenate(([0], total[ends[:-1] - 1]))
        keys = total - np.repeat(base, seg)
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        starts = np.concatenate(([0], np.flatnonzero(np.diff(keys)) + 1))
        out += [keys[starts], np.add.reduceat(counts[order], starts)]  # exact: uint64
    return out[0], out[1], out[2], out[3], zero


def merge_sketches(blobs: Iterable[bytes | None]) -> Sketch:
    """Merge serialised sketches, vectorised with numpy when it is installed.

    The same result as :func:`holter.core.sketch.merge_bytes`, several times faster on
    thousands of sketches (one decompression per sketch, then whole-array operations).
    """
    chosen = [b for b in blobs if b]
    np = _numpy()
    if np is None or len(chosen) < 2:
        return merge_bytes(chosen)
    pos_keys, pos_counts, neg_keys, neg_counts, zero = _merge_arrays(np, chosen)
    merged = Sketch()
    merged.zero = zero
    merged.pos.update(zip(pos_keys.tolist(), pos_counts.tolist(), strict=True))
    merged.neg.update(zip(neg_keys.tolist(), neg_counts.tolist(), strict=True))
    for store in (merged.pos, merged.neg):
        if len(store) > SKETCH_MAX_BINS:
            collapse(store)
    return merged


def _merged_quantiles(np: Any, blobs: Sequence[bytes], lo: float, hi: float) -> list[Any]:
    """The :data:`QUANTILES` of the merged sketches, as :meth:`Sketch.quantiles` answers."""
    pos_keys, pos_counts, neg_keys, neg_counts, zero = _merge_arrays(np, blobs)
    if len(pos_keys) > SKETCH_MAX_BINS or len(neg_keys) > SKETCH_MAX_BINS:
        return merge_sketches(blobs).quantiles(_QS, lo, hi)
    mid = 2.0 * SKETCH_GAMMA / (1.0 + SKETCH_GAMMA)
    values = np.concatenate((
        -(np.exp2((neg_keys[::-1] - 1) / SKETCH_PER_DOUBLING) * mid),
        np.zeros(1 if zero else 0),
        np.exp2((pos_keys - 1) / SKETCH_PER_DOUBLING) * mid,
    ))
    counts = np.concatenate((neg_counts[::-1].astype(np.float64),
                             np.full(1 if zero else 0, float(zero)),
                             pos_counts.astype(np.float64)))
    cum = np.cumsum(counts)
    total = cum[-1] if len(cum) else 0.0
    if total <= 0:
        return [None for _ in _QS]
    ranks = np.clip(np.asarray(_QS), 0.0, 1.0) * (total - 1)
    index = np.minimum(np.searchsorted(cum, ranks, side="right"), len(values) - 1)
    out = []
    for q, found in zip(_QS, values[index].tolist(), strict=True):
        answer = lo if found < lo or q <= 0.0 else found
        out.append(hi if answer > hi or q >= 1.0 else answer)
    return out


def _aggregate_fast(rows: Sequence[Sequence[Any]], **kwargs: Any) -> WindowStats:
    """:func:`aggregate`, with the sketches merged by whole-array operations (numpy)."""
    np = _numpy() if kwargs.get("kind") == "histogram" and len(rows) > 1 else None
    if np is None:
        return aggregate(rows, **kwargs)
    stats_ = aggregate([(*r[:10], None) for r in rows], **kwargs)
    blobs = [r[10] for r in rows if r[10] and r[4]]
    if not stats_.count or not blobs:
        return stats_
    qs = _merged_quantiles(np, blobs, stats_.min, stats_.max)  # type: ignore[arg-type]
    return replace(stats_, **{field: v for (field, _), v in zip(QUANTILES, qs, strict=True)})


def trace_counts(
    store: Store, start_ns: int, end_ns: int, *, run_ids: Sequence[int] | None = None
) -> dict[str, Any]:
    """Traces whose local root started in ``(start_ns, end_ns]``, cheaply.

    How many, how many with errors, and their mean root duration: the part of
    :func:`trace_summary` a report needs, without its scans for active traces.
    """
    only = f" AND run_id IN ({','.join('?' * len(run_ids))})" if run_ids else ""
    if run_ids is not None and not run_ids:
        return {"traces": 0, "with_errors": 0, "mean_duration_ns": None}
    args = [start_ns, end_ns, *(run_ids or ())]
    with store.reading() as conn:
        # a trace's own root span is stored once (root kind 2); parts continuing a remote
        # caller (kind 1) count once per trace, unless the trace's root is here too
        n, mean = conn.execute(
            "SELECT COUNT(*), AVG(root_duration_ns) FROM trace_parts WHERE root_kind > 0 "
            "AND root_kind = 2 "
            f"AND start_ns > ? AND start_ns <= ?{only}", args).fetchone()
        n += conn.execute(
            "SELECT COUNT(DISTINCT r.trace_id) FROM trace_parts r WHERE r.root_kind > 0 "
            "AND r.root_kind = 1 "
            f"AND r.start_ns > ? AND r.start_ns <= ?{only.replace('run_id', 'r.run_id')} "
            "AND NOT EXISTS (SELECT 1 FROM trace_parts t WHERE t.trace_key = r.trace_key "
            "AND t.trace_id = r.trace_id AND t.root_kind = 2)", args).fetchone()[0]
        errors = conn.execute(
            "SELECT COUNT(DISTINCT trace_id) FROM trace_parts WHERE errors > 0 "
            f"AND start_ns > ? AND start_ns <= ?{only}", args).fetchone()[0]
    return {"traces": n or 0, "with_errors": errors or 0, "mean_duration_ns": mean}


def series_windows(
    store: Store,
    start_ns: int,
    end_ns: int,
    *,
    run: int | None = None,
    app: str | None = None,
    names: Iterable[str] | None = None,
    sketches: bool = False,
) -> list[SeriesWindow]:
    """Every series with points ending in ``(start_ns, end_ns]``, each aggregated alone.

    One read of each point table for all series (instead of one window query per
    series); rates are per second of the recorded time of the runs that wrote each
    series, as in :func:`grouped_stats`. ``names`` keeps those metrics only; ``sketches``
    also returns each histogram's merged sketch. Sorted by name, then tags. Long
    windows read the 5-minute/1-hour summaries where they are current
    (:mod:`holter.store.summaries`): every figure is the same, except a gauge's
    ``count``, which is the number of stored points merged.
    """
    wanted = set(names) if names is not None else None
    with store.reading() as conn:
        run_ids = _run_filter(conn, run, app)
        if run_ids is not None and not run_ids:
            return []
        infos = {
            r[0]: SeriesInfo(r[0], r[1], r[2], r[3], json.loads(r[4]), 0, None, None)
            for r in conn.execute("SELECT id, name, kind, unit, tags FROM series")
            if wanted is None or r[1] in wanted
        }
        run_sql = f" AND run_id IN ({','.join('?' * len(run_ids))})" if run_ids else ""
        rows_of: dict[int, list[tuple[Any, ...]]] = {}
        for row in summaries.read_rows(conn, start_ns, end_ns, run_sql=run_sql,
                                       run_args=run_ids or ()):
            if row[0] in infos:
                rows_of.setdefault(row[0], []).append(row)
        spans_of: dict[int, list[tuple[int, int]]] = {}
        run_sql = f" AND r.id IN ({','.join('?' * len(run_ids))})" if run_ids else ""
        for sid, s, e in conn.execute(
            "SELECT rs.series_id, r.started_ns, MAX(r.last_flush_ns, COALESCE(r.ended_ns, 0)) "
            "FROM runs r JOIN run_series rs ON rs.run_id = r.id WHERE r.started_ns < ? "
            f"AND MAX(r.last_flush_ns, COALESCE(r.ended_ns, 0)) > ?{run_sql}",
            (end_ns, start_ns, *(run_ids or ())),
        ):
            spans_of.setdefault(sid, []).append((s, e))
    out = []
    for sid, rows in rows_of.items():
        info = infos[sid]
        rows.sort(key=lambda r: r[3])
        stats_ = _aggregate_fast(
            rows, name=info.name, kind=info.kind, unit=info.unit, group=dict(info.tags),
            start_ns=start_ns, end_ns=end_ns,
            covered_s=_union_s(spans_of.get(sid, ()), start_ns, end_ns), n_series=1,
        )
        merged = None
        if sketches and info.kind == "histogram":
            merged = merge_sketches(r[10] for r in rows)
        seen = SeriesInfo(info.id, info.name, info.kind, info.unit, info.tags, len(rows),
                          rows[0][2], rows[-1][3])
        out.append(SeriesWindow(seen, stats_, len(rows), merged))
    out.sort(key=lambda w: (w.series.name, sorted(w.series.tags.items()), w.series.kind))
    return out


def series_steps(
    store: Store,
    series_ids: Sequence[int],
    start_ns: int,
    end_ns: int,
    *,
    step_ns: int | None = None,
    points: int = 240,
    run: int | None = None,
    app: str | None = None,
) -> list[WindowStats]:
    """The given series merged and cut into equal steps ending at ``end_ns`` (for charts).

    Without ``step_ns`` the step is the window over ``points``, but never finer than the
    data's own resolution (the median length of the points read), so a short run's
    chart has no empty steps between its flushes. Each element covers
    ``(start_ns, end_ns]`` of its step; empty steps have count 0 and no percentiles.
    """
    ids = sorted(set(series_ids))
    with store.reading() as conn:
        run_ids = _run_filter(conn, run, app)
        meta = {
            r[0]: (r[1], r[2], r[3])
            for chunk in _chunks(ids)
            for r in conn.execute(
                "SELECT id, name, kind, unit FROM series WHERE id IN "
                f"({','.join('?' * len(chunk))})",
                list(chunk),
            )
        }
        wanted = step_ns if step_ns is not None else max((end_ns - start_ns) // max(points, 1), 1)
        level = max((x for x in summaries.LEVELS_S if x * NS <= wanted), default=None)
        if level is not None and (not ids or (run_ids is not None and not run_ids)):
            rows = []
        elif level is not None:
            where = ""
            args: list[Any] = []
            if run_ids:
                where += f" AND run_id IN ({','.join('?' * len(run_ids))})"
                args.extend(run_ids)
            if len(ids) <= _CHUNK:
                where += f" AND series_id IN ({','.join('?' * len(ids))})"
                args.extend(ids)
            wanted_ids = set(ids)
            rows = [r for r in summaries.read_rows(conn, start_ns, end_ns, run_sql=where,
                                                   run_args=args, max_level_s=level)
                    if r[0] in wanted_ids]
        else:
            rows = _points(conn, ids, start_ns, end_ns, run_ids)
        spans = _run_spans(conn, ids, start_ns, end_ns, run_ids)
    name, kind, unit = next(iter(meta.values()), ("", None, ""))
    grid_end = end_ns
    if level is not None:
        # steps are whole multiples of the summary level, on its grid, so that each
        # summary row falls in exactly one step
        length = level * NS
        step_ns = -(-max(int(wanted), length) // length) * length
        grid_end = -(-end_ns // length) * length
    elif step_ns is None:
        step_ns = wanted
        if rows:
            lengths = sorted(r[3] - r[2] for r in rows)
            step_ns = max(step_ns, lengths[len(lengths) // 2])
    step_ns = max(int(step_ns), 1)
    end_ns = grid_end
    n_steps = max(1, math.ceil((end_ns - start_ns) / step_ns))
    first_ns = end_ns - n_steps * step_ns
    per_step: list[list[tuple[Any, ...]]] = [[] for _ in range(n_steps)]
    for row in rows:
        index = min(max((row[3] - first_ns - 1) // step_ns, 0), n_steps - 1)
        per_step[index].append(row)
    out = []
    for i, step_rows in enumerate(per_step):
        s = first_ns + i * step_ns
        e = s + step_ns
        out.append(
            _aggregate_fast(
                step_rows, name=name, kind=kind, unit=unit, group={}, start_ns=s, end_ns=e,
                covered_s=_union_s(spans, s, e), n_series=len(ids),
            )
        )
    return out


# -- alerting (the tables of holter.store.alerts) -----------------------------------------


def alerts(store: Store, **filters: Any) -> list[Any]:
    """Stored alerts, newest first: open ones and resolved ones since ``since_ns``.

    Filters: ``state``, ``since_ns``, ``rule``, ``ids``, ``limit``
    (:func:`holter.store.alerts.alerts`).
    """
    from holter.store.alerts import alerts as read

    return read(store, **filters)


def alert_events(store: Store, **filters: Any) -> list[Any]:
    """Alert history events, newest first.

    Filters: ``since_ns``, ``rule``, ``alert_id``, ``kinds``, ``limit``
    (:func:`holter.store.alerts.alert_events`).
    """
    from holter.store.alerts import alert_events as read

    return read(store, **filters)


def silences(store: Store, **filters: Any) -> list[Any]:
    """Silences in force now (``now_ns``), or every one (``include_expired=True``)."""
    from holter.store.alerts import silences as read

    return read(store, **filters)


def alert_groups(store: Store) -> dict[str, Any]:
    """Notification state of every alert group, by group key."""
    from holter.store.alerts import groups as read

    return read(store)


# -- live reads (holter.dashboard): what was written since a cursor -----------------------
#
# A live view keeps cursors (the newest row ids it has seen) and, at each refresh, reads
# only the rows written after them. Row ids grow in commit order: writers hold SQLite's
# single write lock, so a row with a lower id can never appear later. A newest id below
# the caller's cursor means retention emptied the table and ids started again.

POINT_ROW_COLUMNS = (
    "rowid, series_id, run_id, t_start_ns, t_end_ns, count, total, min, max, last, m2, sketch"
)
"""Columns of the rows :func:`point_rows_after` and :func:`point_rows_between` return."""

TRACE_PART_COLUMNS = (
    "rowid, trace_id, chunk_id, run_id, start_ns, end_ns, spans, errors, root_name, "
    "root_kind, root_duration_ns"
)
"""Columns of the rows :func:`trace_parts_after` and :func:`trace_parts_between` return."""

_RUN_COLUMNS = (
    "id, app, version, argv, pid, host, python, started_ns, last_flush_ns, ended_ns, "
    "exit_status, exit_info, parent_id"
)


def point_rows_after(
    store: Store, after_rowid: int, *, limit: int = 20_000
) -> tuple[list[tuple[Any, ...]], int]:
    """Interval points written after row ``after_rowid`` (oldest first, at most ``limit``).

    Rows are plain tuples of :data:`POINT_ROW_COLUMNS`, without joins, for readers that
    keep series metadata themselves (:func:`series_by_id`). Also returns the newest row id
    of the ``points`` table (0 when empty).
    """
    with store.reading() as conn:
        newest = conn.execute("SELECT MAX(rowid) FROM points").fetchone()[0] or 0
        rows = conn.execute(
            f"SELECT {POINT_ROW_COLUMNS} FROM points WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (int(after_rowid), int(limit)),
        ).fetchall()
    return rows, newest


def point_rows_between(
    store: Store, start_ns: int, end_ns: int, *, tables: Sequence[str] = POINT_TABLES
) -> tuple[list[tuple[Any, ...]], int]:
    """Points of every table (interval points and rollups) ending in ``(start_ns, end_ns]``.

    Rows as :func:`point_rows_after` gives them (a rollup row's rowid is that of its own
    table), with the newest ``points`` row id read in the same snapshot: a reader that
    loads a window here and then follows :func:`point_rows_after` from that id misses
    nothing and counts nothing twice. ``tables`` limits the read to some of
    :data:`holter.store.schema.POINT_TABLES` (e.g. the rollups only).
    """
    out: list[tuple[Any, ...]] = []
    with store.reading() as conn:
        newest = conn.execute("SELECT MAX(rowid) FROM points").fetchone()[0] or 0
        for table in tables:
            if table not in POINT_TABLES:
                raise QueryError(f"no point table {table!r}")
            extra = " AND rowid <= ?" if table == "points" else ""
            args: list[Any] = [int(start_ns), int(end_ns)]
            if extra:
                args.append(newest)
            out.extend(conn.execute(
                f"SELECT {POINT_ROW_COLUMNS} FROM {table} WHERE t_end_ns > ? AND t_end_ns <= ?"
                f"{extra}",
                args,
            ).fetchall())
    return out, newest


def trace_parts_after(
    store: Store, after_rowid: int, *, limit: int = 20_000
) -> tuple[list[tuple[Any, ...]], int]:
    """``trace_parts`` rows written after ``after_rowid`` that hold a root or an error.

    Rows are tuples of :data:`TRACE_PART_COLUMNS`, oldest first, at most ``limit`` rows
    scanned; also returns the newest row id scanned: the next cursor (below
    ``after_rowid`` when the table was emptied and its ids started again). Parts without a
    root or an error are skipped but still move the cursor.
    """
    with store.reading() as conn:
        newest = conn.execute("SELECT MAX(rowid) FROM trace_parts").fetchone()[0] or 0
        upto = min(newest, int(after_rowid) + int(limit))
        rows = conn.execute(
            f"SELECT {TRACE_PART_COLUMNS} FROM trace_parts WHERE rowid > ? AND rowid <= ? "
            "AND (root_kind > 0 OR errors > 0) ORDER BY rowid",
            (int(after_rowid), upto),
        ).fetchall()
    return rows, upto


def trace_parts_between(
    store: Store, start_ns: int, end_ns: int
) -> tuple[list[tuple[Any, ...]], int]:
    """``trace_parts`` rows starting in ``(start_ns, end_ns]`` that hold a root or an error.

    With the newest ``trace_parts`` row id read in the same snapshot (see
    :func:`point_rows_between`). Both kinds are found through their partial indexes.
    """
    with store.reading() as conn:
        newest = conn.execute("SELECT MAX(rowid) FROM trace_parts").fetchone()[0] or 0
        rows = conn.execute(
            f"SELECT {TRACE_PART_COLUMNS} FROM trace_parts WHERE root_kind > 0 "
            "AND start_ns > ? AND start_ns <= ? AND rowid <= ? "
            f"UNION SELECT {TRACE_PART_COLUMNS} FROM trace_parts WHERE errors > 0 "
            "AND start_ns > ? AND start_ns <= ? AND rowid <= ? ORDER BY rowid",
            (int(start_ns), int(end_ns), newest, int(start_ns), int(end_ns), newest),
        ).fetchall()
    return rows, newest


def chunk_spans(store: Store, chunk_ids: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
    """The decoded spans of the given span chunks, by chunk id (each with its ``run_id``).

    Chunks expired by retention, or that cannot be decoded, are left out.
    """
    out: dict[int, list[dict[str, Any]]] = {}
    wanted = sorted({int(c) for c in chunk_ids})
    with store.reading() as conn:
        for chunk in _chunks(wanted):
            for chunk_id, run_id, data in conn.execute(
                "SELECT id, run_id, data FROM span_chunks WHERE id IN "
                f"({','.join('?' * len(chunk))})",
                list(chunk),
            ):
                try:
                    spans = decode_chunk(data)
                except Exception:  # a damaged chunk must not stop a live view
                    continue
                for span in spans:
                    span["run_id"] = run_id
                out[chunk_id] = spans
    return out


def trace_totals(
    store: Store, trace_ids: Sequence[str]
) -> dict[str, tuple[int, int, int, int, int]]:
    """Per trace id: ``(first start, last end, spans, errors, unfinished)`` over its parts."""
    if not trace_ids:
        return {}
    with store.reading() as conn:
        return _trace_totals(conn, list(trace_ids))


def _run_info(r: Sequence[Any]) -> RunInfo:
    return RunInfo(
        id=r[0], app=r[1], version=r[2], argv=json.loads(r[3]), pid=r[4], host=r[5],
        python=r[6], started_ns=r[7], last_flush_ns=r[8], ended_ns=r[9],
        exit_status=r[10], exit_info=r[11], parent_id=r[12],
    )


def runs_after(store: Store, after_id: int, *, limit: int = 10_000) -> list[RunInfo]:
    """Runs with an id above ``after_id`` (created since), oldest first."""
    with store.reading() as conn:
        rows = conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE id > ? ORDER BY id LIMIT ?",
            (int(after_id), int(limit)),
        ).fetchall()
    return [_run_info(r) for r in rows]


def runs_by_id(store: Store, ids: Iterable[int]) -> dict[int, RunInfo]:
    """The runs with the given ids (as they are now), by id; unknown ids are left out."""
    out: dict[int, RunInfo] = {}
    wanted = sorted({int(i) for i in ids})
    with store.reading() as conn:
        for chunk in _chunks(wanted):
            for r in conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE id IN ({','.join('?' * len(chunk))})",
                list(chunk),
            ):
                out[r[0]] = _run_info(r)
    return out


def live_marks(store: Store) -> dict[str, tuple[Any, ...]]:
    """Cheap change marks of the tables a live view follows, read in one snapshot.

    ``points``, ``trace_parts`` and ``runs``: the newest row id; ``anomalies``: the
    newest id and latest end; ``alerts``: the newest id and last evaluation (absent when
    the store has no such table yet). A view re-reads a table only when its mark moved.
    """
    marks: dict[str, tuple[Any, ...]] = {}
    with store.reading() as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )}
        for table in ("points", "trace_parts", "runs"):
            if table in tables:
                marks[table] = (conn.execute(f"SELECT MAX(rowid) FROM {table}").fetchone()[0]
                                or 0,)
        if "anomalies" in tables:
            marks["anomalies"] = tuple(conn.execute(
                "SELECT MAX(id), MAX(end_ns), COUNT(*) FROM anomalies"
            ).fetchone())
        if "alerts" in tables:
            marks["alerts"] = tuple(conn.execute(
                "SELECT MAX(id), MAX(evaluated_ns), MAX(COALESCE(resolved_ns, 0)), "
                "SUM(state = 'firing') FROM alerts"
            ).fetchone())
    return marks
