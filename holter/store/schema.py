"""Every table, index and migration of the store, in one place.

The schema version lives in ``holter_meta`` and the set of applied migrations in
``holter_migrations``. Missing migrations are applied in order inside one transaction;
a store written by a newer holter is refused with both versions named, so an old
holter never misreads or damages it.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable

APPLICATION_ID = 0x686F6C74  # "holt"
"""Stored in SQLite's header (PRAGMA application_id) to recognise holter files."""

_POINT_COLUMNS = """
    series_id INTEGER NOT NULL,
    run_id INTEGER NOT NULL,
    t_start_ns INTEGER NOT NULL,
    t_end_ns INTEGER NOT NULL,
    count REAL,
    total REAL,
    min REAL,
    max REAL,
    last REAL,
    m2 REAL,
    sketch BLOB
"""

POINT_TABLES = ("points", "points_1m", "points_1h")
"""Interval points, then 1-minute and 1-hour rollups (same columns)."""

_V1 = [
    """CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        app TEXT NOT NULL,
        version TEXT,
        argv TEXT NOT NULL,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        python TEXT NOT NULL,
        started_ns INTEGER NOT NULL,
        last_flush_ns INTEGER NOT NULL,
        ended_ns INTEGER,
        exit_status INTEGER,
        exit_info TEXT,
        parent_id INTEGER REFERENCES runs(id)
    )""",
    "CREATE INDEX runs_app_started ON runs(app, started_ns)",
    "CREATE INDEX runs_started ON runs(started_ns)",
    """CREATE TABLE series (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        unit TEXT NOT NULL DEFAULT '',
        tags TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        UNIQUE (name, kind, unit, tags)
    )""",
    """CREATE TABLE run_series (
        run_id INTEGER NOT NULL,
        series_id INTEGER NOT NULL,
        PRIMARY KEY (run_id, series_id)
    ) WITHOUT ROWID""",
    f"CREATE TABLE points ({_POINT_COLUMNS})",
    "CREATE INDEX points_series_end ON points(series_id, t_end_ns)",
    "CREATE INDEX points_end ON points(t_end_ns)",
    f"CREATE TABLE points_1m ({_POINT_COLUMNS})",
    "CREATE UNIQUE INDEX points_1m_key ON points_1m(series_id, run_id, t_start_ns)",
    "CREATE INDEX points_1m_series_end ON points_1m(series_id, t_end_ns)",
    "CREATE INDEX points_1m_end ON points_1m(t_end_ns)",
    f"CREATE TABLE points_1h ({_POINT_COLUMNS})",
    "CREATE UNIQUE INDEX points_1h_key ON points_1h(series_id, run_id, t_start_ns)",
    "CREATE INDEX points_1h_series_end ON points_1h(series_id, t_end_ns)",
    "CREATE INDEX points_1h_end ON points_1h(t_end_ns)",
]

# Spans: compressed chunks (holter.store.spans), and one trace_parts row per (trace,
# chunk) with the trace's time range, counts and local root, which is what listing traces
# needs. Root kind: 2 a span without parent, 1 a span continuing a remote caller (the
# local root), 0 none in this chunk. Traces are found by trace_key, the trace id's upper
# 64 bits as a signed integer (an integer index costs half a text one; trace ids start
# with their epoch second, so it grows at its end). slow_traces keeps each chunk's
# SLOW_PER_CHUNK slowest roots, so the N slowest of any window (N up to that) are found
# without indexing every trace's duration.
_V2 = [
    """CREATE TABLE span_chunks (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL,
        min_start_ns INTEGER NOT NULL,
        max_start_ns INTEGER NOT NULL,
        spans INTEGER NOT NULL,
        data BLOB NOT NULL
    )""",
    "CREATE INDEX span_chunks_start ON span_chunks(max_start_ns)",
    """CREATE TABLE trace_parts (
        trace_key INTEGER NOT NULL,
        trace_id TEXT NOT NULL,
        chunk_id INTEGER NOT NULL,
        run_id INTEGER NOT NULL,
        start_ns INTEGER NOT NULL,
        end_ns INTEGER NOT NULL,
        spans INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        unfinished INTEGER NOT NULL,
        root_span_id TEXT,
        root_name TEXT,
        root_kind INTEGER NOT NULL,
        root_duration_ns INTEGER
    )""",
    "CREATE INDEX trace_parts_key ON trace_parts(trace_key)",
    "CREATE INDEX trace_parts_root_start ON trace_parts(start_ns) WHERE root_kind > 0",
    "CREATE INDEX trace_parts_root_name ON trace_parts(root_name, start_ns) WHERE root_kind > 0",
    "CREATE INDEX trace_parts_errors ON trace_parts(start_ns) WHERE errors > 0",
    """CREATE TABLE slow_traces (
        trace_key INTEGER NOT NULL,
        trace_id TEXT NOT NULL,
        start_ns INTEGER NOT NULL,
        root_duration_ns INTEGER NOT NULL,
        run_id INTEGER NOT NULL
    )""",
    "CREATE INDEX slow_traces_duration ON slow_traces(root_duration_ns)",
    "CREATE INDEX slow_traces_start ON slow_traces(start_ns)",
]

# Export cursors (holter.store.cursors): per export target, the last point row and span
# chunk it has sent, and a small JSON state (e.g. the last timestamp sent per series), so a
# push that stops and starts again resumes where it stopped and sends nothing twice.
_V4 = [
    """CREATE TABLE export_cursors (
        target TEXT PRIMARY KEY,
        points_rowid INTEGER NOT NULL DEFAULT 0,
        span_chunk_id INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT '{}',
        updated_ns INTEGER NOT NULL
    )""",
]

# Anomaly detection (holter.store.anomalies): one detector state per (series, statistic),
# with a summary for `holter baselines`, and one row per anomalous event. IF NOT EXISTS:
# a store that reached a later version before this one existed gets these tables from
# holter.store.anomalies.ensure_tables.
_V3 = [
    """CREATE TABLE IF NOT EXISTS detector_state (
        series_id INTEGER NOT NULL,
        stat TEXT NOT NULL,
        updated_ns INTEGER NOT NULL,
        points INTEGER NOT NULL,
        maturity TEXT NOT NULL,
        seasonality TEXT NOT NULL,
        expected REAL,
        low REAL,
        high REAL,
        last_value REAL,
        last_score REAL,
        state BLOB,
        PRIMARY KEY (series_id, stat)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS anomalies (
        id INTEGER PRIMARY KEY,
        series_id INTEGER NOT NULL,
        stat TEXT NOT NULL,
        run_id INTEGER,
        time_ns INTEGER NOT NULL,
        end_ns INTEGER NOT NULL,
        peak_ns INTEGER NOT NULL,
        value REAL NOT NULL,
        expected REAL,
        low REAL,
        high REAL,
        score REAL NOT NULL,
        severity TEXT NOT NULL,
        kind TEXT NOT NULL,
        maturity TEXT NOT NULL,
        points INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS anomalies_time ON anomalies(time_ns)",
    "CREATE INDEX IF NOT EXISTS anomalies_end ON anomalies(end_ns)",
    "CREATE INDEX IF NOT EXISTS anomalies_series ON anomalies(series_id, time_ns)",
]

# Alerting (holter.store.alerts): alert instances (the persisted state machine), their
# history, silences, and notification groups. IF NOT EXISTS, like version 3: a store may
# have reached a later version first (holter.store.alerts.ensure_tables).
_V5 = [
    """CREATE TABLE IF NOT EXISTS alerts (
        id INTEGER PRIMARY KEY,
        rule TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        labels TEXT NOT NULL,
        annotations TEXT NOT NULL,
        state TEXT NOT NULL,
        value REAL,
        active_ns INTEGER NOT NULL,
        fired_ns INTEGER,
        last_true_ns INTEGER NOT NULL,
        evaluated_ns INTEGER NOT NULL,
        resolved_ns INTEGER,
        muted TEXT NOT NULL DEFAULT '',
        run_id INTEGER
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS alerts_open ON alerts(rule, fingerprint) "
    "WHERE state != 'resolved'",
    "CREATE INDEX IF NOT EXISTS alerts_resolved ON alerts(resolved_ns)",
    """CREATE TABLE IF NOT EXISTS alert_events (
        id INTEGER PRIMARY KEY,
        time_ns INTEGER NOT NULL,
        alert_id INTEGER,
        rule TEXT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'
    )""",
    "CREATE INDEX IF NOT EXISTS alert_events_time ON alert_events(time_ns)",
    "CREATE INDEX IF NOT EXISTS alert_events_alert ON alert_events(alert_id)",
    """CREATE TABLE IF NOT EXISTS silences (
        id INTEGER PRIMARY KEY,
        rule TEXT NOT NULL,
        matchers TEXT NOT NULL,
        starts_ns INTEGER NOT NULL,
        ends_ns INTEGER NOT NULL,
        created_ns INTEGER NOT NULL,
        comment TEXT NOT NULL DEFAULT '',
        author TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX IF NOT EXISTS silences_ends ON silences(ends_ns)",
    """CREATE TABLE IF NOT EXISTS alert_groups (
        group_key TEXT PRIMARY KEY,
        labels TEXT NOT NULL,
        first_ns INTEGER,
        last_notify_ns INTEGER,
        notified TEXT NOT NULL DEFAULT '[]'
    )""",
]

# Summaries (holter.store.summaries): 5-minute and 1-hour merges of the interval points,
# derived data that long windows read; the monitor keeps them current in maintenance.
_V6 = [
    """CREATE TABLE IF NOT EXISTS point_summaries (
        level INTEGER NOT NULL,
        series_id INTEGER NOT NULL,
        run_id INTEGER NOT NULL,
        t_start_ns INTEGER NOT NULL,
        t_end_ns INTEGER NOT NULL,
        count REAL,
        total REAL,
        min REAL,
        max REAL,
        last REAL,
        m2 REAL,
        sketch BLOB,
        PRIMARY KEY (level, series_id, run_id, t_start_ns)
    )""",
    "CREATE INDEX IF NOT EXISTS point_summaries_end ON point_summaries(level, t_end_ns)",
    """CREATE TABLE IF NOT EXISTS summary_state (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    )""",
]

Migration = list[str] | Callable[[sqlite3.Connection], None]

MIGRATIONS: dict[int, Migration] = {}
"""Version → statements (or a function) that bring the previous version up to it.

Each feature registers its own version below, one line each; never edit a released one.
"""
MIGRATIONS[1] = _V1  # runs, series, points and rollups
MIGRATIONS[2] = _V2  # spans
MIGRATIONS[3] = _V3  # anomaly detection: detector states, anomalies
MIGRATIONS[4] = _V4  # export cursors
MIGRATIONS[5] = _V5  # alerting: alerts, history, silences, notification groups
MIGRATIONS[6] = _V6  # 5-minute and 1-hour summaries of the points

SCHEMA_VERSION = max(MIGRATIONS)
"""The schema this holter writes and reads: the newest migration."""


_IF_NOT_EXISTS = re.compile(
    r"^\s*CREATE\s+(UNIQUE\s+)?(TABLE|INDEX)\s+(?!IF\s+NOT\s+EXISTS)", re.IGNORECASE
)


def _idempotent(statement: str) -> str:
    """``CREATE TABLE x`` → ``CREATE TABLE IF NOT EXISTS x`` (the same for indexes)."""
    return _IF_NOT_EXISTS.sub(
        lambda m: f"CREATE {m.group(1) or ''}{m.group(2)} IF NOT EXISTS ", statement, count=1
    )


def applied(conn: sqlite3.Connection) -> set[int] | None:
    """Versions recorded as applied, or None for a store written before that was recorded."""
    try:
        return {row[0] for row in conn.execute("SELECT version FROM holter_migrations")}
    except sqlite3.OperationalError:
        return None


def missing(conn: sqlite3.Connection) -> list[int]:
    """Registered migrations this store has not had yet."""
    done = applied(conn)
    return sorted(MIGRATIONS) if done is None else sorted(set(MIGRATIONS) - done)


def migrate(conn: sqlite3.Connection) -> None:
    """Apply every registered migration the store has not had (in a write transaction).

    Applied versions are recorded one by one (not as a single maximum), so a migration
    registered with a lower number than one already applied still runs. Statements are
    made idempotent, so a store from before that record existed is brought up safely.
    """
    conn.execute(
        "CREATE TABLE IF NOT EXISTS holter_migrations "
        "(version INTEGER PRIMARY KEY, applied_ns INTEGER NOT NULL)"
    )
    for version in missing(conn):
        step = MIGRATIONS[version]
        if callable(step):
            step(conn)
        else:
            for statement in step:
                conn.execute(_idempotent(statement))
        conn.execute(
            "INSERT OR IGNORE INTO holter_migrations(version, applied_ns) VALUES (?, ?)",
            (version, time.time_ns()),
        )
    conn.execute(
        "INSERT INTO holter_meta(key, value) VALUES ('schema_version', ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (str(SCHEMA_VERSION),),
    )
