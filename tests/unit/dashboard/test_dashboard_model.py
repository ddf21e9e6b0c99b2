"""The dashboard's live model: the same numbers as the query API, read incrementally."""

from __future__ import annotations

import os
import sqlite3

import pytest
from dashboard_support import bump_schema, record_workload, recorder, write_trace

from holter import _clock
from holter.dashboard.model import LiveModel, Scope
from holter.errors import SchemaError
from holter.store import anomalies as store_anomalies
from holter.store import query as q
from holter.store.schema import SCHEMA_VERSION
from holter.store.sqlite import Store


def point_rows(db: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT COUNT(*) FROM points").fetchone()[0]
    finally:
        conn.close()


def series_rows(snap, panel="series"):
    data = snap.panels[panel]
    return {data.rows[k][0]: data.rows[k] for k in data.order}


def test_values_match_the_query_api(db_path: str) -> None:
    with recorder(db_path) as mon:
        record_workload(mon, jobs=40)
        model = LiveModel(db_path, window="1h")
        snap = model.refresh()
        assert snap.status == "ready"
        rows = series_rows(snap)
        store = mon.store
        for label, name, tags in [
            ("http.latency{route=/users}", "http.latency", {"route": "/users"}),
            ("http.latency{route=/orders}", "http.latency", {"route": "/orders"}),
        ]:
            sid = next(int(k) for k in snap.panels["series"].order
                       if snap.panels["series"].rows[k][0] == label)
            mine = model._series[sid].values
            truth = q.stats(store, name, "1h", tags=tags)
            assert mine["count"] == truth.count == 40
            assert (mine["p50"], mine["p95"], mine["p99"]) == (truth.p50, truth.p95, truth.p99)
            assert mine["rate"] == pytest.approx(truth.rate, rel=0.05)
        done = q.stats(store, "jobs.done", "1h")
        assert rows["jobs.done"][1] == "40" == str(done.count)
        assert rows["queue.depth"][1] == "7"  # a gauge shows its last value
        ops = series_rows(snap, "ops")
        assert set(ops) >= {"handle_request", "auth", "db.query", "failing_job"}
        assert ops["failing_job"][3] == "100.0%"  # its one span failed
        assert ops["auth"][3] == "0%"


def test_each_refresh_reads_only_what_was_written_since(db_path: str) -> None:
    with recorder(db_path) as mon:
        record_workload(mon, jobs=10)
        model = LiveModel(db_path, window="1h")
        first = model.refresh()
        read_at_start = first.points_read
        assert read_at_start > 0
        # nothing new: nothing read
        assert model.refresh().points_read == read_at_start
        rows_before = point_rows(db_path)
        mon.counter("jobs.done").inc(5)
        mon.flush()
        written = point_rows(db_path) - rows_before
        snap = model.refresh()
        assert snap.points_read - read_at_start == written  # exactly the new rows
        assert written < read_at_start
        assert series_rows(snap)["jobs.done"][1] == "15"


def test_rows_keep_their_place_until_the_user_sorts(db_path: str) -> None:
    with recorder(db_path) as mon:
        mon.counter("busy").inc(100)
        mon.counter("quiet").inc(1)
        mon.flush()
        model = LiveModel(db_path, window="1h")
        def labels(snap):
            rows = snap.panels["series"].rows
            return [rows[k][0] for k in snap.panels["series"].order
                    if not rows[k][0].startswith("holter.")]

        assert labels(model.refresh()) == ["busy", "quiet"]  # first load: by rate
        mon.counter("quiet").inc(10_000)
        mon.counter("new.one").inc(1_000_000)
        mon.flush()
        snap = model.refresh()
        assert labels(snap) == ["busy", "quiet", "new.one"]  # in place; newcomers appended
        generation = snap.panels["series"].generation
        assert model.cycle_sort("series") == "value"
        snap = model.current()
        assert labels(snap) == ["new.one", "quiet", "busy"]
        assert snap.panels["series"].generation != generation
        assert model.cycle_sort("runs") is None  # not sortable


def test_filter_keeps_matching_rows(db_path: str) -> None:
    with recorder(db_path) as mon:
        record_workload(mon, jobs=5)
        model = LiveModel(db_path, window="1h")
        model.refresh()
        model.set_filter("LATENCY")
        snap = model.current()
        shown = [snap.panels["series"].rows[k][0] for k in snap.panels["series"].order]
        assert shown == ["http.latency{route=/orders}", "http.latency{route=/users}"] or \
            sorted(shown) == ["http.latency{route=/orders}", "http.latency{route=/users}"]
        assert snap.panels["series"].total > len(shown)
        model.set_filter("")
        assert len(model.current().panels["series"].order) == snap.panels["series"].total


def test_scope_follows_one_run_and_the_runs_it_started(db_path: str) -> None:
    with recorder(db_path, app="parent") as parent:
        parent.counter("work").inc(1)
        parent.flush()
        parent_run = parent.run_id
        with recorder(db_path, app="child", parent_run=parent_run) as child:
            child.counter("work").inc(10)
            child.flush()
        with recorder(db_path, app="other") as other:
            other.counter("work").inc(100)
            other.flush()
        everything = LiveModel(db_path, window="1h").refresh()
        assert series_rows(everything)["work"][1] == "111"
        family = LiveModel(db_path, window="1h", scope=Scope(run=parent_run)).refresh()
        assert series_rows(family)["work"][1] == "11"
        assert family.scope == f"run {parent_run}"
        assert set(family.panels["runs"].order) == {str(parent_run), str(parent_run + 1)}
        only = LiveModel(db_path, window="1h", scope=Scope(app="other")).refresh()
        assert series_rows(only)["work"][1] == "100"


def test_waits_for_a_store_that_does_not_exist_yet(db_path: str) -> None:
    model = LiveModel(db_path, window="1h")
    model.check()  # not an error
    snap = model.refresh()
    assert snap.status == "waiting"
    assert "waiting for" in snap.message and db_path in snap.message
    assert not os.path.exists(db_path)  # the dashboard never creates it
    with recorder(db_path) as mon:
        mon.counter("late").inc(2)
        mon.flush()
        snap = model.refresh()
        assert snap.status == "ready"
        assert series_rows(snap)["late"][1] == "2"


def test_a_newer_schema_is_one_line_naming_both_versions(db_path: str) -> None:
    Store.open(db_path).close()
    bump_schema(db_path, SCHEMA_VERSION + 1)
    model = LiveModel(db_path)
    with pytest.raises(SchemaError) as caught:
        model.check()
    assert str(SCHEMA_VERSION + 1) in str(caught.value)
    assert str(SCHEMA_VERSION) in str(caught.value)
    snap = model.refresh()
    assert snap.status == "error"
    assert "\n" not in snap.message
    assert f"version {SCHEMA_VERSION + 1}" in snap.message
    assert f"version {SCHEMA_VERSION}" in snap.message


def test_a_locked_store_shows_busy_never_database_is_locked(db_path: str) -> None:
    with recorder(db_path) as mon:
        record_workload(mon, jobs=3)
    model = LiveModel(db_path, window="1h", busy_timeout_s=0.05)
    assert model.refresh().status == "ready"
    model.close()  # the connection is opened again at the next refresh
    # another process takes the file exclusively (no reader may look while it writes)
    locker = sqlite3.connect(db_path, timeout=0)
    locker.execute("PRAGMA locking_mode=EXCLUSIVE")
    locker.execute("BEGIN EXCLUSIVE")
    locker.execute("UPDATE runs SET last_flush_ns = last_flush_ns + 1")
    try:
        for fresh in (model, LiveModel(db_path, window="1h", busy_timeout_s=0.05)):
            snap = fresh.refresh()
            assert snap.status in ("busy", "waiting")
            assert "database is locked" not in snap.message.lower()
            assert "busy" in snap.message
        assert model.refresh().panels["series"] is not None  # the last data is kept
    finally:
        locker.rollback()
        locker.close()
    assert model.refresh().status == "ready"


def test_window_switch_reloads_the_window(db_path: str) -> None:
    with recorder(db_path) as mon:
        record_workload(mon, jobs=4)
        model = LiveModel(db_path, window="1h")
        assert series_rows(model.refresh())["jobs.done"][1] == "4"
        assert model.next_window() == "1m"
        snap = model.refresh()
        assert snap.window == "1m"
        assert series_rows(snap)["jobs.done"][1] == "4"  # written just now: inside 1m too


def test_points_older_than_the_window_are_left_out(db_path: str) -> None:
    now = _clock.time_ns()
    with recorder(db_path) as mon:
        mon.counter("old").inc(1)
        mon.flush()
        later = LiveModel(db_path, window="1m", clock=lambda: now + 10 * 60 * 10**9)
        snap = later.refresh()
        assert "old" not in series_rows(snap)


def test_slowest_traces_and_the_waterfall_data(db_path: str) -> None:
    with recorder(db_path) as mon:
        record_workload(mon, jobs=3)
        trace_id = write_trace(mon)
        model = LiveModel(db_path, window="1h")
        snap = model.refresh()
        traces = snap.panels["traces"]
        assert trace_id in traces.rows
        assert traces.order[0] == trace_id  # the slowest first
        assert traces.rows[trace_id][1] == "slow_request"
        assert traces.rows[trace_id][2] == "3"  # spans
        spans = model.trace(trace_id)
        assert {s["name"] for s in spans} == {"slow_request", "fetch_slow", "fetch_fast"}


def test_alerts_and_anomalies_appear_only_with_their_data(db_path: str) -> None:
    with recorder(db_path) as mon:
        record_workload(mon, jobs=3)
        model = LiveModel(db_path, window="1h")
        snap = model.refresh()
        assert snap.panels["alerts"] is None
        assert snap.panels["anomalies"] is None
        store = mon.store
        now = _clock.time_ns()
        # the real alert engine, evaluated at the flush
        mon.alert("SlowOrders", "p95(http.latency) > 40", window="1h", tags={"route": "/orders"})
        mon.counter("jobs.done").inc()
        mon.flush()
        sid = next(s.id for s in q.series(store, "http.latency"))
        store_anomalies.ensure_tables(store)
        store_anomalies.save(store, [], [
            (sid, "p95", mon.run_id, now - 20 * 10**9, now - 10 * 10**9, now - 15 * 10**9,
             120.0, 20.0, 10.0, 30.0, 9.5, "high", "spike", "mature", 3),
        ], [])
        snap = model.refresh()
        alerts = snap.panels["alerts"]
        assert alerts is not None
        row = alerts.rows[alerts.order[0]]
        assert row[0] == "FIRING" and row[1] == "SlowOrders"
        anomalies = snap.panels["anomalies"]
        assert anomalies is not None
        row = anomalies.rows[anomalies.order[0]]
        assert row[1].startswith("http.latency{route=") and row[2:5] == ("p95", "spike", "high")
        assert model.series_key_of("anomalies", anomalies.order[0]) == sid


def test_rolled_up_points_count_in_the_window(db_path: str) -> None:
    import holter.testing

    start = _clock.time_ns() - 600 * 10**9
    with holter.testing.FakeClock(start_ns=start) as clock, recorder(db_path) as mon:
        mon.counter("rolled").inc(7)
        mon.flush()
        clock.advance(180)
        mon.counter("rolled").inc(1)
        mon.flush()
        moved = mon.store.maintain(clock.time_ns(), raw_retention_s=60,
                                   minute_retention_s=86_400, hour_retention_s=86_400)
        assert moved >= 1  # the first point now lives in the 1-minute table
        model = LiveModel(db_path, window="1h", clock=lambda: clock.time_ns() + 10**9)
        assert series_rows(model.refresh())["rolled"][1] == "8"
