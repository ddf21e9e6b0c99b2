"""The SQLite store: opening, schema, refusing foreign files, transactions, retention."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

import holter.testing
from holter.errors import SchemaError, StoreError
from holter.model import Batch, Point, SeriesKey
from holter.store import query as q
from holter.store import schema
from holter.store.sqlite import Store

T0 = 1_800_000_000 * 10**9
S = 10**9


def test_new_store_has_schema_wal_and_application_id(db_path: str) -> None:
    store = Store.open(db_path)
    try:
        conn = store.conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA application_id").fetchone()[0] == schema.APPLICATION_ID
        version = conn.execute(
            "SELECT value FROM holter_meta WHERE key='schema_version'"
        ).fetchone()[0]
        assert int(version) == schema.SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"runs", "series", "points", "points_1m", "points_1h", "run_series"} <= tables
    finally:
        store.close()
    # reopening an existing store keeps it as it is
    again = Store.open(db_path, create=False)
    again.close()


def test_missing_store_is_an_error_when_not_creating(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no holter store"):
        Store.open(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(tmp_path / "nope" / "x.db")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_text_file_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not a database\n")
    before = _digest(path)
    with pytest.raises(StoreError, match="not an SQLite database"):
        Store.open(path)
    assert _digest(path) == before


def test_foreign_sqlite_file_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
    conn.execute("INSERT INTO customers VALUES (1, 'a')")
    conn.commit()
    conn.close()
    before = _digest(path)
    with pytest.raises(StoreError, match="another program"):
        Store.open(path)
    assert _digest(path) == before
    assert not Path(str(path) + "-wal").exists()


def test_newer_schema_names_both_versions(db_path: str) -> None:
    Store.open(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE holter_meta SET value='99' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError) as info:
        Store.open(db_path)
    assert "99" in str(info.value)
    assert str(schema.SCHEMA_VERSION) in str(info.value)


def _batch(t_end: int, *points: Point) -> Batch:
    return Batch(t_end - 10 * S, t_end, list(points))


def test_write_batch_links_series_and_runs(db_path: str) -> None:
    store = Store.open(db_path)
    try:
        run = store.create_run(app="a", version=None, argv=["x"], pid=1, host="h", python="3",
                               started_ns=T0)
        key = SeriesKey("jobs", "counter", "", (("queue", "q1"),))
        store.write_batch(run, _batch(T0 + 10 * S, Point(key, T0, T0 + 10 * S, total=4)))
        store.write_batch(run, _batch(T0 + 20 * S, Point(key, T0 + 10 * S, T0 + 20 * S, total=6)))
        found = q.series(store)
        assert [(s.name, s.tags, s.points) for s in found] == [("jobs", {"queue": "q1"}, 2)]
        [info] = q.runs(store)
        assert info.last_flush_ns == T0 + 20 * S
        stats = q.stats(store, "jobs", start=T0 / 1e9, end=(T0 + 30 * S) / 1e9)
        assert stats.count == 10
        assert stats.covered_s == pytest.approx(20.0)
        assert stats.rate == pytest.approx(0.5)
    finally:
        store.close()


def test_nested_atomic_rolls_back_only_the_inner_part(db_path: str) -> None:
    store = Store.open(db_path)
    try:
        with store.atomic() as conn:
            conn.execute("INSERT INTO holter_meta VALUES ('outer', '1')")
            with pytest.raises(RuntimeError), store.atomic():
                conn.execute("INSERT INTO holter_meta VALUES ('inner', '1')")
                raise RuntimeError("boom")
        keys = {r[0] for r in store.conn.execute("SELECT key FROM holter_meta")}
        assert "outer" in keys
        assert "inner" not in keys
    finally:
        store.close()


def test_retention_rolls_up_without_changing_answers(db_path: str) -> None:
    """Raw points → 1-minute → 1-hour → deleted; counts, sums and percentiles survive."""
    with holter.testing.FakeClock(start_ns=T0) as clock, holter.testing.monitor(
        db=db_path, raw_retention_s=3600, minute_retention_s=4 * 3600, hour_retention_s=86400
    ) as mon:
        hist = mon.histogram("latency", unit="ms")
        counter = mon.counter("requests")
        value = 1.0
        for _ in range(90):  # 90 flushes of 10 s = 15 minutes
            for _ in range(20):
                value = value * 1.37 % 997 + 0.5
                hist.observe(value)
                counter.inc()
            clock.advance(10)
            mon.flush()
        store = mon.store
        everything = {"start": (T0 - S) / 1e9, "end": (T0 + 3 * 86400 * S) / 1e9}
        before_h = q.stats(store, "latency", **everything)
        before_c = q.stats(store, "requests", **everything)
        assert before_h.count == 1800

        def table_counts() -> dict[str, int]:
            return {t: store.conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                    for t in schema.POINT_TABLES}

        clock.advance(2 * 3600)  # raw points now older than raw retention
        store.maintain(clock.now_ns, raw_retention_s=3600, minute_retention_s=4 * 3600,
                       hour_retention_s=86400)
        counts = table_counts()
        assert counts["points_1m"] > 0
        assert counts["points"] < 10  # only points newer than the cut remain
        after_h = q.stats(store, "latency", **everything)
        after_c = q.stats(store, "requests", **everything)
        assert after_h.count == before_h.count
        assert after_h.sum == pytest.approx(before_h.sum)
        assert after_h.stddev == pytest.approx(before_h.stddev)
        assert (after_h.p50, after_h.p99, after_h.min, after_h.max) == (
            before_h.p50, before_h.p99, before_h.min, before_h.max)
        assert after_c.count == before_c.count

        clock.advance(5 * 3600)  # 1-minute points now older than minute retention
        store.maintain(clock.now_ns, raw_retention_s=3600, minute_retention_s=4 * 3600,
                       hour_retention_s=86400)
        counts = table_counts()
        assert counts["points_1h"] > 0
        assert counts["points_1m"] == 0
        final_h = q.stats(store, "latency", **everything)
        assert final_h.count == before_h.count
        assert final_h.p99 == before_h.p99

        clock.advance(2 * 86400)  # everything older than hour retention
        store.maintain(clock.now_ns, raw_retention_s=3600, minute_retention_s=4 * 3600,
                       hour_retention_s=86400)
        assert table_counts()["points_1h"] == 0
