"""The alerting tables (schema version 5): migration from an older store, readers on stores
without them, silences and history retention."""

from __future__ import annotations

import sqlite3

import pytest

from holter.errors import QueryError
from holter.store import alerts as astore
from holter.store import query as q
from holter.store import schema
from holter.store.sqlite import Store


def test_a_version_4_store_gains_the_alerting_tables(db_path: str) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE holter_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    for version in (1, 2, 3, 4):
        for statement in schema.MIGRATIONS[version]:  # type: ignore[union-attr]
            conn.execute(statement)
    conn.execute("INSERT INTO holter_meta VALUES ('schema_version', '4')")
    conn.commit()
    conn.close()
    store = Store.open(db_path)
    try:
        with store.reading() as c:
            assert astore.has_tables(c)
            version = c.execute(
                "SELECT value FROM holter_meta WHERE key='schema_version'").fetchone()[0]
        assert int(version) == schema.SCHEMA_VERSION >= 5
        assert q.alerts(store) == [] and q.silences(store) == [] and q.alert_groups(store) == {}
    finally:
        store.close()


def test_readers_on_a_store_without_the_tables(db_path: str) -> None:
    store = Store.open(db_path)
    try:
        with store.atomic() as conn:
            for table in ("alerts", "alert_events", "silences", "alert_groups"):
                conn.execute(f"DROP TABLE {table}")
        assert q.alerts(store) == [] and q.alert_events(store) == []
        assert q.silences(store) == [] and q.alert_groups(store) == {}
        silence = astore.add_silence(store, "r", duration_s=60)  # creates them again
        assert [s.id for s in q.silences(store)] == [silence.id]
    finally:
        store.close()


def test_silences_expire_and_history_retention(db_path: str) -> None:
    store = Store.open(db_path)
    try:
        now = 1_700_000_000 * 10**9
        old = astore.add_silence(store, "r", matchers={"route": "/a"}, duration_s=60,
                                 starts_ns=now - 3600 * 10**9)
        live = astore.add_silence(store, "*", duration_s=3600, starts_ns=now - 10**9)
        assert [s.id for s in q.silences(store, now_ns=now)] == [live.id]
        assert live.matches("any-rule", {}) and not old.matches("other", {"route": "/a"})
        assert old.matches("r", {"route": "/a", "x": "1"}) and not old.matches("r", {})
        ended = astore.expire_silence(store, live.id, now_ns=now)
        assert not ended.active(now)
        with pytest.raises(QueryError, match="no silence with id 999"):
            astore.expire_silence(store, 999)
        with store.atomic() as conn:
            aid = astore.insert_alert(conn, rule="r", fingerprint="f", labels={"a": "1"},
                                      annotations={}, state="firing", value=1.0, now_ns=now,
                                      run_id=None)
            astore.update_alert(conn, aid, state="resolved", resolved_ns=now)
            astore.add_events(conn, [(now, aid, "r", "resolved", {})])
        assert astore.expire_history(store, now + 1) == 4  # event, alert, two silences
        assert q.alerts(store) == [] and q.alert_events(store) == []
        with pytest.raises(QueryError, match="bad alert state"):
            q.alerts(store, state="on fire")
    finally:
        store.close()
