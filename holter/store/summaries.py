"""Summaries: 5-minute and 1-hour merges of the interval points, a cache for long windows.

Interval points are kept raw for a day (``raw_retention_s``), so a 24-hour window over
500 series at 10 s is 4.3 million points whose sketches must all be decoded: far too
slow for a report. This module keeps, *beside* the raw points (a copy, not a move:
the query API's windows and the retention rollups are unchanged), their merges per
series, run and 5-minute / 1-hour bucket, so a long window reads a few dozen rows per
series. It is derived data: dropping the table loses nothing. The tables come with schema
version 6; the monitor refreshes them in its periodic maintenance, which also drops
buckets older than the raw points (never read again), so a report finds them current.

* ``point_summaries``: rows shaped as points (same columns, plus ``level``, the
  bucket length in seconds); a bucket holds the raw points whose interval *ends* in
  it, as windows count them.
* ``summary_state``: ``points_rowid``, the last raw ``points`` row merged so far, and
  ``points_t_end``, that row's end (to notice that the table was emptied and its row
  ids started again, in which case the summaries are rebuilt).

:func:`refresh` merges the raw rows written since the last call (in batches, each its
own short transaction); :func:`read_rows` returns, for a window, summary rows where
they are complete and raw or rolled-up points elsewhere, so that every observation is
counted exactly once (see its docstring). A summary bucket is only used when it lies
wholly after the oldest raw point still stored: older buckets may hold points that
retention has since moved into the 1-minute rollups.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from holter.store.schema import POINT_TABLES
from holter.store.sqlite import Store, StoreBusy, _busy_or_error, merge_rows

LEVELS_S = (3600, 300)
"""Summary bucket lengths in seconds, coarsest first."""
BATCH_ROWS = 5_000
"""Raw rows merged per transaction by :func:`refresh`."""
_NS = 1_000_000_000

_COLUMNS = "series_id, run_id, t_start_ns, t_end_ns, count, total, min, max, last, m2, sketch"


def has_tables(conn: sqlite3.Connection) -> bool:
    """Whether this store has summaries at all."""
    return conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'summary_state'"
    ).fetchone() is not None


def refresh(store: Store, *, max_rows: int | None = None) -> int:
    """Merge the raw points written since the last refresh; return how many were merged.

    Each batch of :data:`BATCH_ROWS` rows is one transaction, so writers wait at most
    one batch. ``max_rows`` bounds the work of one call. Raises StoreError (StoreBusy
    when another process holds the write lock); callers that only read may ignore it
    and read without summaries.
    """
    done = 0
    try:
        with store.reading() as conn:
            if not has_tables(conn):  # a store opened without migrating (read-only)
                return 0
        while max_rows is None or done < max_rows:
            with store.atomic() as conn:
                merged = _refresh_batch(conn, BATCH_ROWS if max_rows is None
                                        else min(BATCH_ROWS, max_rows - done))
            done += merged
            if merged == 0:
                break
    except sqlite3.Error as exc:
        raise _busy_or_error(exc, store.path) from None
    return done


def _state(conn: sqlite3.Connection) -> tuple[int, int]:
    got = dict(conn.execute("SELECT key, value FROM summary_state").fetchall())
    return int(got.get("points_rowid", 0)), int(got.get("points_t_end", 0))


def _set_state(conn: sqlite3.Connection, rowid: int, t_end: int) -> None:
    conn.executemany(
        "INSERT INTO summary_state(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [("points_rowid", rowid), ("points_t_end", t_end)],
    )


def _refresh_batch(conn: sqlite3.Connection, limit: int) -> int:
    watermark, t_end = _state(conn)
    if watermark:
        row = conn.execute("SELECT t_end_ns FROM points WHERE rowid = ?", (watermark,)).fetchone()
        newest = conn.execute("SELECT MAX(rowid) FROM points").fetchone()[0] or 0
        if (row is not None and row[0] != t_end) or newest < watermark:
            watermark = 0  # the table was emptied and its row ids started again
    if not watermark:  # (re)build from scratch
        conn.execute("DELETE FROM point_summaries")
    rows = conn.execute(
        f"SELECT p.rowid, s.kind, p.{_COLUMNS.replace(', ', ', p.')} FROM points p "
        "JOIN series s ON s.id = p.series_id WHERE p.rowid > ? ORDER BY p.rowid LIMIT ?",
        (watermark, limit),
    ).fetchall()
    if not rows:
        return 0
    level_ns = [level * _NS for level in sorted(LEVELS_S)]  # finest first
    finest = level_ns[0]
    groups: dict[tuple[int, int, int], list[tuple[Any, ...]]] = {}
    kinds: dict[int, str] = {}
    for r in rows:
        kinds[r[2]] = r[1]
        bucket = (r[5] - 1) // finest * finest
        groups.setdefault((r[2], r[3], bucket), []).append((None, *r[2:]))
    parts = groups
    for i, length in enumerate(level_ns):
        merged_rows: dict[tuple[int, int, int], list[tuple[Any, ...]]] = {}
        for (sid, run_id, bucket), members in parts.items():
            existing = conn.execute(
                f"SELECT NULL, {_COLUMNS} FROM point_summaries WHERE level = ? AND "
                "series_id = ? AND run_id = ? AND t_start_ns = ?",
                (length // _NS, sid, run_id, bucket),
            ).fetchone()
            fresh = merge_rows(kinds[sid], members)
            total = merge_rows(kinds[sid], [existing, _as_row(sid, run_id, bucket, length,
                                                              fresh)]) \
                if existing is not None else fresh
            conn.execute(
                f"INSERT OR REPLACE INTO point_summaries(level, {_COLUMNS}) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (length // _NS, sid, run_id, bucket, bucket + length, *total),
            )
            if i + 1 < len(level_ns):
                coarser = level_ns[i + 1]
                merged_rows.setdefault((sid, run_id, bucket // coarser * coarser), []).append(
                    _as_row(sid, run_id, bucket, length, fresh))
        parts = merged_rows
    last = rows[-1]
    _set_state(conn, last[0], last[5])
    return len(rows)


def _as_row(sid: int, run_id: int, bucket: int, length: int,
            merged: Sequence[Any]) -> tuple[Any, ...]:
    return (None, sid, run_id, bucket, bucket + length, *merged)


def read_rows(
    conn: sqlite3.Connection,
    start_ns: int,
    end_ns: int,
    *,
    run_sql: str = "",
    run_args: Sequence[Any] = (),
    max_level_s: int | None = None,
) -> list[tuple[Any, ...]]:
    """Point-shaped rows covering ``(start_ns, end_ns]``, each observation exactly once.

    Where summary buckets of a level (of at most ``max_level_s`` seconds) fit wholly in the
    window and after the oldest raw point, their rows are used, plus the raw points
    written after the last refresh that end in them; the rest of the window (its
    edges, and whatever is older than the raw points) is read at the next finer level,
    and finally from the point tables themselves. Rows are ``(series_id, run_id,
    t_start, t_end, count, total, min, max, last, m2, sketch)``. ``run_sql`` is a
    condition on ``run_id`` and ``series_id`` (``" AND run_id IN (?,?)"``) with
    ``run_args``.
    """
    levels = [level for level in LEVELS_S if max_level_s is None or level <= max_level_s]
    if levels and not has_tables(conn):
        levels = []
    watermark = _state(conn)[0] if levels else 0
    if not watermark:
        return _raw(conn, start_ns, end_ns, run_sql, run_args)
    oldest = conn.execute("SELECT MIN(t_end_ns) FROM points").fetchone()[0]
    if oldest is None:
        return _raw(conn, start_ns, end_ns, run_sql, run_args)
    out: list[tuple[Any, ...]] = []

    def read(lo: int, hi: int, todo: Sequence[int]) -> None:
        if hi <= lo:
            return
        if not todo:
            out.extend(_raw(conn, lo, hi, run_sql, run_args))
            return
        length = todo[0] * _NS
        first = -(-max(lo, oldest) // length) * length  # ceil
        last = hi // length * length
        if first >= last:
            read(lo, hi, todo[1:])
            return
        # with a series filter the primary key (level, series_id, ...) is the way in: the
        # unary + keeps the planner off the time index, which would scan every series
        by_series = "series_id" in run_sql
        t_col = "+t_end_ns" if by_series else "t_end_ns"
        out.extend(conn.execute(
            f"SELECT {_COLUMNS} FROM point_summaries WHERE level = ? AND {t_col} > ? "
            f"AND {t_col} <= ?{run_sql}",
            (todo[0], first, last, *run_args),
        ).fetchall())
        out.extend(conn.execute(  # written since the last refresh
            f"SELECT {_COLUMNS} FROM points NOT INDEXED WHERE rowid > ? AND t_end_ns > ? "
            f"AND t_end_ns <= ?{run_sql}",
            (watermark, first, last, *run_args),
        ).fetchall())
        read(lo, first, todo[1:])
        read(last, hi, todo[1:])

    read(start_ns, end_ns, levels)
    return out


def _raw(conn: sqlite3.Connection, lo: int, hi: int, run_sql: str,
         run_args: Sequence[Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for table in POINT_TABLES:
        out.extend(conn.execute(
            f"SELECT {_COLUMNS} FROM {table} WHERE t_end_ns > ? AND t_end_ns <= ?{run_sql}",
            (lo, hi, *run_args),
        ).fetchall())
    return out


def try_refresh(store: Store, *, max_rows: int | None = None) -> int | None:
    """:func:`refresh`, or None when the store cannot be written now (busy, read-only)."""
    try:
        return refresh(store, max_rows=max_rows)
    except StoreBusy:
        return None
    except Exception:  # a read-only file or directory: read without summaries
        return None


__all__ = ["BATCH_ROWS", "LEVELS_S", "has_tables", "read_rows", "refresh", "try_refresh"]
