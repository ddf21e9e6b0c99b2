"""How drained spans reach the store: in the order they ended, one trace_parts row per trace.

Sorting records (e.g. by span name, to group ``span.duration``) would scatter every
trace over many rows and chunks: five times the rows for five-span traces, a fifth of
the sustainable span rate. Multi-row inserts must store exactly what one row per
statement stores.
"""

from __future__ import annotations

import sqlite3

import holter.testing
from holter.store import schema
from holter.store import spans as store_spans


def _five_span_traces(mon, traces: int) -> None:
    for _ in range(traces):
        with mon.span("request", route="/users/{id}"):
            with mon.span("db.query", table="users"):
                pass
            with mon.span("cache.get"):
                pass
            with mon.span("render"), mon.span("template"):
                pass


def test_drain_keeps_the_order_spans_ended_in() -> None:
    with holter.testing.monitor() as mon:
        _five_span_traces(mon, 3)
        records = mon.tracer.drain()
    names = [r[3] for r in records]
    assert names == ["db.query", "cache.get", "template", "render", "request"] * 3
    traces = [r[0] for r in records]
    assert traces == [t for t in dict.fromkeys(traces) for _ in range(5)]


def test_a_trace_is_one_trace_parts_row_unless_a_chunk_ends_inside_it(monkeypatch) -> None:
    monkeypatch.setattr(store_spans, "CHUNK_SPANS", 64)
    with holter.testing.monitor() as mon:
        _five_span_traces(mon, 200)
        mon.flush()
        conn = mon.store.conn
        parts, spans, roots = conn.execute(
            "SELECT COUNT(*), SUM(spans), SUM(root_kind = 2) FROM trace_parts"
        ).fetchone()
        chunks = conn.execute("SELECT COUNT(*) FROM span_chunks").fetchone()[0]
    assert spans == 1000
    assert chunks == 16
    assert 200 <= parts <= 200 + chunks - 1
    assert roots == 200


def _table(conn: sqlite3.Connection, table: str) -> list[tuple[object, ...]]:
    return conn.execute(f"SELECT rowid, * FROM {table} ORDER BY rowid").fetchall()


def test_multi_row_inserts_store_what_one_row_per_statement_stores() -> None:
    def fresh(variables: int | None = None) -> sqlite3.Connection:
        conn = sqlite3.connect(":memory:", isolation_level=None)
        if variables is not None:
            conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, variables)
        for statement in schema._V2:
            conn.execute(statement)
        return conn

    head = (
        "INSERT INTO trace_parts(trace_key, trace_id, chunk_id, run_id, start_ns, end_ns, "
        "spans, errors, unfinished, root_span_id, root_name, root_kind, root_duration_ns)"
    )
    rows = [
        (i - 500, f"{i:032x}", 1, 2, i, i + 5, 1, i % 2, 0,
         None if i % 3 else f"{i:016x}", None if i % 3 else "r\u00e9q", 2 * (i % 3 == 0), i)
        for i in range(1000)
    ]
    expected = fresh()
    expected.executemany(f"{head} VALUES ({','.join('?' * 13)})", rows)
    for variables in (None, 13, 100, 999):
        for n in (0, 1, 255, 256, 257, 1000):
            conn = fresh(variables)
            store_spans.insert_rows(conn, head, rows[:n])
            assert _table(conn, "trace_parts") == _table(expected, "trace_parts")[:n]
