"""Storage of anomaly detection: detector states (baselines) and the anomalies found.

Two tables (schema version 3, :mod:`holter.store.schema`):

* ``detector_state``: one row per (series, statistic) with the detector's serialised
  state, so a restarted program keeps its baselines, and a summary (maturity,
  seasonality, expected value and band at the last update) that ``holter baselines``
  lists without decoding the state.
* ``anomalies``: one row per anomalous *event* of a (series, statistic): when it
  started and ended, its most anomalous point (value, expected value, band, score),
  severity, kind and the detector's maturity.

Only this module writes or reads those tables; :mod:`holter.store.query` re-exports
the readers.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from holter.errors import QueryError
from holter.model import SeriesKey
from holter.store import schema
from holter.store.sqlite import Store, _busy_or_error

SEVERITIES = ("low", "medium", "high", "critical")
"""Anomaly severities, mildest first."""


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One anomalous event of one statistic of one series.

    ``time_ns`` is when it started, ``end_ns`` its last anomalous point and ``peak_ns``
    its most anomalous point, whose ``value``, ``expected`` value and band
    (``low``..``high``) are recorded. ``stat`` says which statistic of the series was
    judged: ``value`` (gauges), ``rate`` (counters per second, histograms'
    observations per second), ``p50``/``p95``/``p99`` (histograms).
    """

    id: int
    metric: str
    series_kind: str
    unit: str
    tags: dict[str, str]
    stat: str
    time_ns: int
    end_ns: int
    peak_ns: int
    value: float
    expected: float | None
    low: float | None
    high: float | None
    score: float
    severity: str
    kind: str
    maturity: str
    points: int
    run_id: int | None
    series_id: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (times in ns since the epoch)."""
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class StateRow:
    """The stored baseline of one (series, statistic): a summary and the detector state."""

    series_id: int
    metric: str
    series_kind: str
    unit: str
    tags: dict[str, str]
    stat: str
    updated_ns: int
    points: int
    maturity: str
    seasonality: str
    expected: float | None
    low: float | None
    high: float | None
    last_value: float | None
    last_score: float | None
    state: bytes | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, without the serialised state."""
        return {name: getattr(self, name) for name in self.__slots__  # type: ignore[attr-defined]
                if name != "state"}


def stat_unit(unit: str, stat: str) -> str:
    """The unit of a judged statistic: ``/s`` for rates, the series' unit otherwise."""
    return "/s" if stat == "rate" else unit


def ensure_tables(store: Store) -> None:
    """Create the tables if this store lacks them.

    A store can reach a later schema version before version 3 existed (migrations are
    applied above the stored version only); the statements are ``IF NOT EXISTS``.
    """
    with store.reading() as conn:
        if _has_tables(conn):
            return
    try:
        with store.atomic() as conn:
            for statement in schema.MIGRATIONS[3]:  # type: ignore[union-attr]
                conn.execute(statement)
    except sqlite3.Error as exc:
        raise _busy_or_error(exc, store.path) from None


def tags_json(tags: Iterable[tuple[str, str]] | Mapping[str, str]) -> str:
    """Tags as the ``series`` table stores them (sorted keys, compact JSON)."""
    return json.dumps(dict(tags), sort_keys=True, separators=(",", ":"))


def series_ids(store: Store, keys: Sequence[SeriesKey]) -> dict[SeriesKey, int]:
    """Ids of already written series (keys that are not stored yet are left out)."""
    out: dict[SeriesKey, int] = {}
    if not keys:
        return out
    with store.reading() as conn:
        for key in keys:
            row = conn.execute(
                "SELECT id FROM series WHERE name = ? AND kind = ? AND unit = ? AND tags = ?",
                (key.name, key.kind, key.unit, tags_json(key.tags)),
            ).fetchone()
            if row is not None:
                out[key] = int(row[0])
    return out


def load_states(store: Store, wanted: Sequence[tuple[int, str]]) -> dict[tuple[int, str], bytes]:
    """Serialised detector states of the given (series id, stat) pairs that have one."""
    out: dict[tuple[int, str], bytes] = {}
    if not wanted:
        return out
    with store.reading() as conn:
        for sid, stat in wanted:
            row = conn.execute(
                "SELECT state FROM detector_state WHERE series_id = ? AND stat = ?", (sid, stat)
            ).fetchone()
            if row is not None and row[0] is not None:
                out[(sid, stat)] = bytes(row[0])
    return out


def save(
    store: Store,
    states: Sequence[tuple[Any, ...]],
    new: Sequence[tuple[Any, ...]],
    updated: Sequence[tuple[Any, ...]],
) -> list[int]:
    """Write detector states, new anomalies and updates of open ones in one transaction.

    ``states``: ``(series_id, stat, updated_ns, points, maturity, seasonality, expected,
    low, high, last_value, last_score, state)``. ``new``: ``(series_id, stat, run_id,
    time_ns, end_ns, peak_ns, value, expected, low, high, score, severity, kind,
    maturity, points)``. ``updated``: ``(end_ns, peak_ns, value, expected, low, high,
    score, severity, kind, points, id)``. Returns the ids of the new anomalies.
    """
    ids: list[int] = []
    try:
        with store.atomic() as conn:
            if states:
                conn.executemany(
                    "INSERT INTO detector_state(series_id, stat, updated_ns, points, maturity, "
                    "seasonality, expected, low, high, last_value, last_score, state) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(series_id, stat) DO UPDATE SET "
                    "updated_ns=excluded.updated_ns, points=excluded.points, "
                    "maturity=excluded.maturity, seasonality=excluded.seasonality, "
                    "expected=excluded.expected, low=excluded.low, high=excluded.high, "
                    "last_value=excluded.last_value, last_score=excluded.last_score, "
                    "state=COALESCE(excluded.state, detector_state.state)",
                    states,
                )
            for row in new:
                cur = conn.execute(
                    "INSERT INTO anomalies(series_id, stat, run_id, time_ns, end_ns, peak_ns, "
                    "value, expected, low, high, score, severity, kind, maturity, points) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    row,
                )
                ids.append(int(cur.lastrowid))  # type: ignore[arg-type]
            if updated:
                conn.executemany(
                    "UPDATE anomalies SET end_ns=?, peak_ns=?, value=?, expected=?, low=?, "
                    "high=?, score=?, severity=?, kind=?, points=? WHERE id=?",
                    updated,
                )
    except sqlite3.Error as exc:
        raise _busy_or_error(exc, store.path) from None
    return ids


def expire(store: Store, before_ns: int) -> int:
    """Delete anomalies that ended before ``before_ns``; return how many."""
    try:
        with store.atomic() as conn:
            return conn.execute("DELETE FROM anomalies WHERE end_ns < ?", (before_ns,)).rowcount
    except sqlite3.Error as exc:
        raise _busy_or_error(exc, store.path) from None


def anomalies(
    store: Store,
    start_ns: int,
    end_ns: int,
    *,
    metric: str | None = None,
    tags: Mapping[str, str] | None = None,
    min_severity: str = "low",
    limit: int | None = None,
) -> list[Anomaly]:
    """Anomalies whose event overlaps ``(start_ns, end_ns]``, newest first."""
    if min_severity not in SEVERITIES:
        raise QueryError(
            f"bad severity {min_severity!r}: use one of {', '.join(SEVERITIES)}"
        )
    allowed = SEVERITIES[SEVERITIES.index(min_severity):]
    sql = (
        "SELECT a.id, s.name, s.kind, s.unit, s.tags, a.stat, a.time_ns, a.end_ns, a.peak_ns, "
        "a.value, a.expected, a.low, a.high, a.score, a.severity, a.kind, a.maturity, "
        "a.points, a.run_id, a.series_id FROM anomalies a JOIN series s ON s.id = a.series_id "
        f"WHERE a.end_ns > ? AND a.time_ns <= ? AND a.severity IN ({','.join('?' * len(allowed))})"
    )
    args: list[Any] = [start_ns, end_ns, *allowed]
    if metric is not None:
        sql += " AND s.name = ?"
        args.append(metric)
    sql += " ORDER BY a.time_ns DESC, a.id DESC"
    with store.reading() as conn:
        if not _has_tables(conn):
            return []
        rows = conn.execute(sql, args).fetchall()
    wanted = dict(tags or {})
    out = []
    for r in rows:
        parsed = json.loads(r[4])
        if any(parsed.get(k) != v for k, v in wanted.items()):
            continue
        out.append(Anomaly(
            id=r[0], metric=r[1], series_kind=r[2], unit=stat_unit(r[3], r[5]), tags=parsed,
            stat=r[5],
            time_ns=r[6], end_ns=r[7], peak_ns=r[8], value=r[9], expected=r[10], low=r[11],
            high=r[12], score=r[13], severity=r[14], kind=r[15], maturity=r[16], points=r[17],
            run_id=r[18], series_id=r[19],
        ))
        if limit is not None and len(out) >= limit:
            break
    return out


def detector_states(
    store: Store, *, metric: str | None = None, with_state: bool = False
) -> list[StateRow]:
    """Stored baselines (one per series and statistic), by metric, tags and statistic."""
    sql = (
        "SELECT d.series_id, s.name, s.kind, s.unit, s.tags, d.stat, d.updated_ns, d.points, "
        "d.maturity, d.seasonality, d.expected, d.low, d.high, d.last_value, d.last_score"
        + (", d.state" if with_state else ", NULL")
        + " FROM detector_state d JOIN series s ON s.id = d.series_id"
    )
    args: list[Any] = []
    if metric is not None:
        sql += " WHERE s.name = ?"
        args.append(metric)
    sql += " ORDER BY s.name, s.tags, d.stat"
    with store.reading() as conn:
        if not _has_tables(conn):
            return []
        rows = conn.execute(sql, args).fetchall()
    return [
        StateRow(
            series_id=r[0], metric=r[1], series_kind=r[2], unit=stat_unit(r[3], r[5]),
            tags=json.loads(r[4]),
            stat=r[5], updated_ns=r[6], points=r[7], maturity=r[8], seasonality=r[9],
            expected=r[10], low=r[11], high=r[12], last_value=r[13], last_score=r[14],
            state=bytes(r[15]) if r[15] is not None else None,
        )
        for r in rows
    ]


def _has_tables(conn: sqlite3.Connection) -> bool:
    """False for a store older than schema 3 opened read-only (nothing detected yet)."""
    return conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'anomalies'"
    ).fetchone() is not None


__all__ = [
    "SEVERITIES",
    "Anomaly",
    "StateRow",
    "anomalies",
    "detector_states",
    "ensure_tables",
    "expire",
    "load_states",
    "save",
    "series_ids",
    "stat_unit",
    "tags_json",
]
