"""The store: one SQLite file in WAL mode, written by the collector, read by queries.

Several processes may write one file at once: each flush is one short
``BEGIN IMMEDIATE`` transaction, and SQLite's busy timeout queues writers. A flush
that still cannot get the lock raises :class:`StoreBusy`; the collector keeps the
batch (bounded) and tries again at the next flush, so no "database is locked"
error reaches the program.

Retention: interval points older than ``raw_retention`` are merged into 1-minute
points, those older than ``minute_retention`` into 1-hour points, and 1-hour
points older than ``hour_retention`` are deleted. Each step moves rows from one
table to the next in one transaction, so every observation is in exactly one
table at any time and queries simply read all three.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from holter.core.sketch import Sketch, merge_bytes
from holter.errors import NotAStore, SchemaError, StoreError
from holter.model import Batch, SeriesKey
from holter.store import schema
from holter.store.spans import safe_text, write_spans

SQLITE_HEADER = b"SQLite format 3\x00"
MINUTE_NS = 60 * 1_000_000_000
HOUR_NS = 60 * MINUTE_NS
_ROLLUP_BATCH = 20_000


_sqlite_connect = sqlite3.connect
"""The original ``sqlite3.connect``: holter's own connections are never instrumented."""


class StoreBusy(StoreError):
    """Raised when another process held the write lock for longer than the timeout."""


class Store:
    """An open store file. Thread-safe: one connection guarded by a lock."""

    def __init__(self, conn: sqlite3.Connection, path: str, timeout_s: float) -> None:
        self.conn = conn
        self.path = path
        self.timeout_s = timeout_s
        self.lock = threading.RLock()
        self._depth = 0
        self._series_ids: dict[SeriesKey, int] = {}
        self._run_series: set[tuple[int, int]] = set()

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        timeout_s: float = 5.0,
    ) -> Store:
        """Open (and with ``create``, create) the store at ``path``.

        Raises :class:`StoreError` when the file is missing (``create=False``), is not
        an SQLite file, is an SQLite file of another program, or cannot be opened;
        :class:`SchemaError` when it was written by a newer holter. A file that is
        not a holter store is never modified.
        """
        path = os.fspath(path)
        memory = path == ":memory:"
        if not memory:
            _check_file(path, create)
        try:
            conn = _sqlite_connect(
                path,
                timeout=timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {path!r}: {exc}") from None
        try:
            _check_holter(conn, path)
            store = cls(conn, path, timeout_s)
            store._prepare(memory)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"{path!r} is not a usable holter store: {exc}") from None
        except StoreError:
            conn.close()
            raise
        return store

    def _prepare(self, memory: bool) -> None:
        conn = self.conn
        if not memory:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":  # pragma: no cover - e.g. a network file system
                conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=OFF")
        if _schema_version(conn) < schema.SCHEMA_VERSION or schema.missing(conn):
            with self.atomic():
                if _schema_version(conn) < schema.SCHEMA_VERSION or schema.missing(conn):
                    conn.execute(  # another process may have done it meanwhile
                        "CREATE TABLE IF NOT EXISTS holter_meta "
                        "(key TEXT PRIMARY KEY, value TEXT NOT NULL)"
                    )
                    schema.migrate(conn)
                    conn.execute(f"PRAGMA application_id={schema.APPLICATION_ID}")

    def close(self) -> None:
        """Close the connection (pending transactions are rolled back)."""
        with self.lock, contextlib.suppress(sqlite3.Error):
            self.conn.close()

    def abandon(self) -> None:
        """Drop the connection without touching it (after fork, in the child)."""
        self.conn = None  # type: ignore[assignment]

    # -- transactions ------------------------------------------------------------------

    @contextlib.contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``); nested calls use savepoints."""
        with self.lock:
            conn = self.conn
            depth = self._depth
            try:
                if depth == 0:
                    conn.execute("BEGIN IMMEDIATE")
                else:
                    conn.execute(f"SAVEPOINT sp{depth}")
            except sqlite3.OperationalError as exc:
                raise _busy_or_error(exc, self.path) from None
            self._depth = depth + 1
            try:
                yield conn
            except BaseException:
                self._depth = depth
                with contextlib.suppress(sqlite3.Error):
                    if depth == 0:
                        conn.execute("ROLLBACK")
                    else:
                        conn.execute(f"ROLLBACK TO sp{depth}")
                        conn.execute(f"RELEASE sp{depth}")
                raise
            self._depth = depth
            try:
                conn.execute("COMMIT" if depth == 0 else f"RELEASE sp{depth}")
            except sqlite3.OperationalError as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise _busy_or_error(exc, self.path) from None

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, for queries (one consistent snapshot per ``with``)."""
        with self.lock:
            conn = self.conn
            own = self._depth == 0
            if own:
                conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if own:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("COMMIT")

    def set_busy_timeout(self, timeout_s: float) -> None:
        """Change how long a write waits for another process's lock."""
        with self.lock:
            self.conn.execute(f"PRAGMA busy_timeout={max(int(timeout_s * 1000), 0)}")

    # -- runs --------------------------------------------------------------------------

    def create_run(
        self,
        *,
        app: str,
        version: str | None,
        argv: Sequence[str],
        pid: int,
        host: str,
        python: str,
        started_ns: int,
        parent_id: int | None = None,
    ) -> int:
        """Record the start of a run; return its id."""
        try:
            with self.atomic() as conn:
                cur = conn.execute(
                    "INSERT INTO runs(app, version, argv, pid, host, python, started_ns, "
                    "last_flush_ns, parent_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (safe_text(app), safe_text(version), json.dumps(list(argv)), pid,
                     safe_text(host), python, started_ns, started_ns, parent_id),
                )
                return int(cur.lastrowid)  # type: ignore[arg-type]
        except sqlite3.Error as exc:
            raise _busy_or_error(exc, self.path) from None

    def end_run(
        self, run_id: int, ended_ns: int, exit_status: int | None, exit_info: str | None
    ) -> None:
        """Record the end of a run."""
        try:
            with self.atomic() as conn:
                conn.execute(
                    "UPDATE runs SET ended_ns = ?, last_flush_ns = MAX(last_flush_ns, ?), "
                    "exit_status = ?, exit_info = ? WHERE id = ?",
                    (ended_ns, ended_ns, exit_status, safe_text(exit_info), run_id),
                )
        except sqlite3.Error as exc:
            raise _busy_or_error(exc, self.path) from None

    # -- writing -----------------------------------------------------------------------

    def write_batch(self, run_id: int, batch: Batch) -> None:
        """Write one flush's points and advance the run's recorded time, atomically."""
        new_ids: dict[SeriesKey, int] = {}
        new_links: set[tuple[int, int]] = set()
        try:
            with self.atomic() as conn:
                rows = []
                for p in batch.points:
                    sid = self._series_ids.get(p.key) or new_ids.get(p.key)
                    if sid is None:
                        sid = _series_id(conn, p.key)
                        new_ids[p.key] = sid
                    link = (run_id, sid)
                    if link not in self._run_series and link not in new_links:
                        conn.execute(
                            "INSERT OR IGNORE INTO run_series(run_id, series_id) VALUES (?, ?)",
                            link,
                        )
                        new_links.add(link)
                    rows.append(
                        (sid, run_id, p.t_start_ns, p.t_end_ns, p.count, p.total, p.min, p.max,
                         p.last, p.m2, p.sketch)
                    )
                if rows:
                    conn.executemany(
                        "INSERT INTO points(series_id, run_id, t_start_ns, t_end_ns, count, "
                        "total, min, max, last, m2, sketch) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        rows,
                    )
                if batch.spans:
                    write_spans(conn, run_id, batch.spans)
                conn.execute(
                    "UPDATE runs SET last_flush_ns = MAX(last_flush_ns, ?) WHERE id = ?",
                    (batch.t_end_ns, run_id),
                )
        except sqlite3.Error as exc:
            raise _busy_or_error(exc, self.path) from None
        self._series_ids.update(new_ids)
        self._run_series.update(new_links)

    # -- retention ---------------------------------------------------------------------

    def maintain(
        self,
        now_ns: int,
        *,
        raw_retention_s: float,
        minute_retention_s: float,
        hour_retention_s: float,
        span_retention_s: float | None = None,
    ) -> int:
        """Roll up and expire old points (and spans); return how many rows were touched."""
        moved = 0
        raw_cut = _floor(now_ns - int(raw_retention_s * 1e9), MINUTE_NS)
        minute_cut = _floor(now_ns - int(minute_retention_s * 1e9), HOUR_NS)
        hour_cut = now_ns - int(hour_retention_s * 1e9)
        try:
            moved += self._roll_up("points", "points_1m", raw_cut, MINUTE_NS)
            moved += self._roll_up("points_1m", "points_1h", minute_cut, HOUR_NS)
            with self.atomic() as conn:
                moved += conn.execute(
                    "DELETE FROM points_1h WHERE t_end_ns <= ?", (hour_cut,)
                ).rowcount
                if self._has_summaries(conn):  # buckets older than the raw points: never read
                    moved += conn.execute(
                        "DELETE FROM point_summaries WHERE t_end_ns <= ?", (raw_cut,)
                    ).rowcount
                if span_retention_s is not None:
                    span_cut = now_ns - int(span_retention_s * 1e9)
                    moved += conn.execute(
                        "DELETE FROM span_chunks WHERE max_start_ns < ?", (span_cut,)
                    ).rowcount
                    first = first_rowid_at(conn, "trace_parts", "start_ns", span_cut)
                    if first is not None:
                        moved += conn.execute(
                            "DELETE FROM trace_parts WHERE rowid < ?", (first,)
                        ).rowcount
                    moved += conn.execute(
                        "DELETE FROM slow_traces WHERE start_ns < ?", (span_cut,)
                    ).rowcount
        except sqlite3.Error as exc:
            raise _busy_or_error(exc, self.path) from None
        return moved

    @staticmethod
    def _has_summaries(conn: sqlite3.Connection) -> bool:
        return conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'point_summaries'"
        ).fetchone() is not None

    def _roll_up(self, source: str, target: str, cutoff_ns: int, bucket_ns: int) -> int:
        moved = 0
        while True:
            with self.atomic() as conn:
                rows = conn.execute(
                    f"SELECT p.rowid, p.series_id, p.run_id, p.t_start_ns, p.t_end_ns, p.count, "
                    f"p.total, p.min, p.max, p.last, p.m2, p.sketch, s.kind FROM {source} p "
                    f"JOIN series s ON s.id = p.series_id WHERE p.t_end_ns <= ? "
                    f"ORDER BY p.series_id, p.run_id, p.t_end_ns LIMIT ?",
                    (cutoff_ns, _ROLLUP_BATCH),
                ).fetchall()
                if not rows:
                    return moved
                groups: dict[tuple[int, int, int], list[tuple[Any, ...]]] = {}
                for row in rows:
                    bucket = (row[4] - 1) // bucket_ns * bucket_ns
                    groups.setdefault((row[1], row[2], bucket), []).append(row)
                for (sid, run_id, bucket), members in groups.items():
                    existing = conn.execute(
                        f"SELECT NULL, series_id, run_id, t_start_ns, t_end_ns, count, total, "
                        f"min, max, last, m2, sketch FROM {target} "
                        f"WHERE series_id = ? AND run_id = ? AND t_start_ns = ?",
                        (sid, run_id, bucket),
                    ).fetchone()
                    kind = members[0][12]
                    parts = [r[:12] for r in members]
                    if existing is not None:
                        parts.insert(0, existing)
                    merged = merge_rows(kind, parts)
                    conn.execute(
                        f"INSERT INTO {target}(series_id, run_id, t_start_ns, t_end_ns, count, "
                        f"total, min, max, last, m2, sketch) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
                        f"ON CONFLICT(series_id, run_id, t_start_ns) DO UPDATE SET "
                        f"count=excluded.count, total=excluded.total, min=excluded.min, "
                        f"max=excluded.max, last=excluded.last, m2=excluded.m2, "
                        f"sketch=excluded.sketch",
                        (sid, run_id, bucket, bucket + bucket_ns, *merged),
                    )
                conn.executemany(
                    f"DELETE FROM {source} WHERE rowid = ?", [(r[0],) for r in rows]
                )
                moved += len(rows)
            if len(rows) < _ROLLUP_BATCH:
                return moved


def merge_rows(kind: str, rows: Sequence[Sequence[Any]]) -> tuple[Any, ...]:
    """Merge point rows of one series into ``(count, total, min, max, last, m2, sketch)``.

    Rows are ``(_, series_id, run_id, t_start_ns, t_end_ns, count, total, min, max,
    last, m2, sketch)``, in time order.
    """
    ordered = sorted(rows, key=lambda r: r[4])
    if kind == "counter":
        return (None, sum(r[6] or 0 for r in ordered), None, None, None, None, None)
    if kind == "gauge":
        return (
            sum(r[5] or 0 for r in ordered),
            sum(r[6] or 0 for r in ordered),
            min(r[7] for r in ordered if r[7] is not None),
            max(r[8] for r in ordered if r[8] is not None),
            ordered[-1][9],
            None,
            None,
        )
    count = 0.0
    total = 0.0
    m2 = 0.0
    lo = float("inf")
    hi = float("-inf")
    for r in ordered:
        n = r[5] or 0
        if not n:
            continue
        s = r[6] or 0.0
        if count:
            delta = s / n - total / count
            m2 += (r[10] or 0.0) + delta * delta * count * n / (count + n)
        else:
            m2 = r[10] or 0.0
        count += n
        total += s
        lo = min(lo, r[7])
        hi = max(hi, r[8])
    sketch: Sketch = merge_bytes(r[11] for r in ordered)
    return (count, total, lo, hi, None, m2, sketch.to_bytes())


def first_rowid_at(conn: sqlite3.Connection, table: str, column: str, cut: int) -> int | None:
    """Binary search for the first rowid whose ``column`` is ≥ ``cut``.

    Rows are appended in roughly increasing ``column`` order (spans by start time), so
    this finds the cut in log(n) lookups instead of scanning or indexing every row.
    """
    lo_hi = conn.execute(f"SELECT MIN(rowid), MAX(rowid) FROM {table}").fetchone()
    if lo_hi[0] is None:
        return None
    lo, hi = lo_hi
    while lo < hi:
        mid = (lo + hi) // 2
        row = conn.execute(
            f"SELECT rowid, {column} FROM {table} WHERE rowid >= ? ORDER BY rowid LIMIT 1", (mid,)
        ).fetchone()
        if row is None or row[1] >= cut:
            hi = mid
        else:
            lo = row[0] + 1
    return lo


def _check_file(path: str, create: bool) -> None:
    if not os.path.exists(path):
        if not create:
            raise NotAStore(
                f"no holter store at {path!r}; record something first (for example "
                "`holter demo`), or pass --db / set HOLTER_DB to the store's path"
            )
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise NotAStore(
                f"cannot create store {path!r}: directory {parent!r} does not exist"
            )
        return
    if os.path.isdir(path):
        raise NotAStore(f"{path!r} is a directory, not a holter store file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise NotAStore(f"cannot read store {path!r}: {exc.strerror or exc}") from None
    if head and head != SQLITE_HEADER:
        raise NotAStore(f"{path!r} is not a holter store (it is not an SQLite database)")
    if not head and not create:
        raise NotAStore(f"{path!r} is empty, not a holter store")


def _check_holter(conn: sqlite3.Connection, path: str) -> None:
    tables = {
        row[0]
        for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    if not tables:
        return
    if "holter_meta" not in tables:
        raise NotAStore(
            f"{path!r} is an SQLite database of another program, not a holter store; "
            "pass another --db path"
        )
    version = _schema_version(conn)
    if version > schema.SCHEMA_VERSION:
        raise SchemaError(
            f"store {path!r} has schema version {version}, newer than version "
            f"{schema.SCHEMA_VERSION} that this holter reads; upgrade holter "
            "(pip install -U holter)"
        )


def _schema_version(conn: sqlite3.Connection) -> int:
    try:
        row = conn.execute(
            "SELECT value FROM holter_meta WHERE key = 'schema_version'"
        ).fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0]) if row else 0


def _series_id(conn: sqlite3.Connection, key: SeriesKey) -> int:
    tags = json.dumps(dict(key.tags), sort_keys=True, separators=(",", ":"))
    conn.execute(
        "INSERT OR IGNORE INTO series(name, kind, unit, tags) VALUES (?, ?, ?, ?)",
        (key.name, key.kind, key.unit, tags),
    )
    row = conn.execute(
        "SELECT id FROM series WHERE name = ? AND kind = ? AND unit = ? AND tags = ?",
        (key.name, key.kind, key.unit, tags),
    ).fetchone()
    return int(row[0])


def _busy_or_error(exc: sqlite3.Error, path: str) -> StoreError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return StoreBusy(f"store {path!r} is busy (another process holds its write lock): {text}")
    return StoreError(f"store {path!r}: {text}")


def _floor(value: int, step: int) -> int:
    return value // step * step
