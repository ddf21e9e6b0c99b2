"""The query API: windows, rates over recorded time, filters, grouping, buckets."""

from __future__ import annotations

import math
import random

import pytest

import holter.testing
from holter.errors import QueryError
from holter.store import query as q

T0 = 1_800_000_000 * 10**9
S = 10**9


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h", 3600), ("24h", 86400), ("7d", 7 * 86400),
     ("1h30m", 5400), ("1.5h", 5400), ("500ms", 0.5), (90, 90), (" 2m ", 120)],
)
def test_parse_window(text, seconds) -> None:
    assert q.parse_window(text) == int(seconds * S)


@pytest.mark.parametrize("bad", ["", "5", "5x", "m5", "-5m", "0s", "1h foo", 0, -3, True])
def test_bad_windows_name_the_text(bad) -> None:
    with pytest.raises(QueryError) as info:
        q.parse_window(bad)
    assert repr(bad) in str(info.value) or "positive" in str(info.value)


def test_rate_is_per_second_of_recorded_time(db_path: str) -> None:
    """A run recorded for 20 s of a 5-minute window: rate = count / 20 s."""
    with holter.testing.FakeClock(start_ns=T0) as clock, \
            holter.testing.monitor(db=db_path) as mon:
        c = mon.counter("requests")
        for _ in range(2):
            c.inc(100)
            clock.advance(10)
            mon.flush()
        stats = mon.query("requests", "5m", flush=False)
        assert stats.count == 200
        assert stats.covered_s == pytest.approx(20.0)
        assert stats.rate == pytest.approx(10.0)
        # a window that only covers the last 5 s of recording
        clock.advance(0)
        recent = q.stats(mon.store, "requests", "5s")
        assert recent.covered_s == pytest.approx(5.0)
        assert recent.count == 100  # the point ending in the window


def test_rate_over_two_runs_counts_their_union(tmp_path) -> None:
    db = str(tmp_path / "s.db")
    with holter.testing.FakeClock(start_ns=T0) as clock:
        for _ in range(2):
            with holter.testing.monitor(db=db) as mon:
                mon.counter("jobs").inc(30)
                clock.advance(30)
                mon.flush()
            clock.advance(60)  # a gap with no run
        with holter.testing.monitor(db=db) as reader:
            stats = q.stats(reader.store, "jobs", "10m")
    assert stats.count == 60
    assert stats.covered_s == pytest.approx(60.0)
    assert stats.rate == pytest.approx(1.0)


def test_histogram_percentiles_through_the_store_are_within_one_percent(db_path: str) -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(3, 1.2) for _ in range(50_000)]
    with holter.testing.monitor(db=db_path) as mon:
        h = mon.histogram("latency", unit="ms")
        for i, v in enumerate(values):
            h.observe(v, route="/a" if i % 2 else "/b")
            if i % 10_000 == 0:
                mon.flush()
        stats = mon.query("latency", "5m")
    exact = sorted(values)
    assert stats.count == len(values)
    assert stats.min == exact[0]
    assert stats.max == exact[-1]
    assert stats.mean == pytest.approx(sum(values) / len(values))
    mean = sum(values) / len(values)
    assert stats.stddev == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in values)
                                                   / len(values)))
    for field, quantile in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99_9", 0.999)]:
        want = exact[int(quantile * (len(exact) - 1))]
        assert getattr(stats, field) == pytest.approx(want, rel=0.01), field


def test_tags_filter_and_group_by(db_path: str) -> None:
    with holter.testing.monitor(db=db_path) as mon:
        c = mon.counter("http.requests")
        for _ in range(5):
            c.inc(method="GET", status=200)
        for _ in range(3):
            c.inc(method="POST", status=200)
        c.inc(method="GET", status=500)
        assert mon.query("http.requests").count == 9
        assert mon.query("http.requests", tags={"status": 200}).count == 8
        assert mon.query("http.requests", tags={"method": "GET", "status": "500"}).count == 1
        groups = mon.query("http.requests", by="method")
        assert [(g.group, g.count) for g in groups] == [({"method": "GET"}, 6),
                                                       ({"method": "POST"}, 3)]
        nothing = mon.query("http.requests", tags={"method": "PUT"})
        assert nothing.count == 0
        assert nothing.series == 0


def test_group_by_several_tags(db_path: str) -> None:
    with holter.testing.monitor(db=db_path) as mon:
        h = mon.histogram("d")
        h.observe(1.0, a="x", b="1")
        h.observe(2.0, a="x", b="2")
        h.observe(3.0, a="y", b="1")
        h.observe(4.0, a="y", b="1")
        mon.flush()
        groups = q.grouped_stats(mon.store, "d", by=["a", "b"])
    assert sorted((tuple(g.group.values()), g.count) for g in groups) == [
        (("x", "1"), 1), (("x", "2"), 1), (("y", "1"), 2)]


def test_gauge_window(db_path: str) -> None:
    with holter.testing.FakeClock(start_ns=T0) as clock, \
            holter.testing.monitor(db=db_path) as mon:
        g = mon.gauge("queue.depth")
        for value in (3, 9, 1, 4):
            g.set(value)
            clock.advance(10)
            mon.flush()
        g.inc(2)
        g.dec()
        clock.advance(10)
        stats = mon.query("queue.depth", "5m")
    assert stats.last == 5
    assert stats.min == 1
    assert stats.max == 9
    assert stats.mean == pytest.approx((3 + 9 + 1 + 4 + 6 + 5) / 6)


def test_run_and_app_filters(tmp_path) -> None:
    db = str(tmp_path / "s.db")
    run_ids = []
    for app, amount in (("a", 1), ("b", 10), ("a", 100)):
        with holter.testing.monitor(db=db, app=app) as mon:
            mon.counter("x").inc(amount)
            mon.flush()
            run_ids.append(mon.run_id)
    with holter.testing.monitor(db=db) as reader:
        store = reader.store
        assert q.stats(store, "x").count == 111
        assert q.stats(store, "x", app="a").count == 101
        assert q.stats(store, "x", run=run_ids[1]).count == 10
        with pytest.raises(QueryError, match="no run with id 999"):
            q.stats(store, "x", run=999)
        assert [r.app for r in q.runs(store)] == ["a", "b", "a"][::-1]


def test_unknown_metric_and_kind_conflicts(tmp_path) -> None:
    db = str(tmp_path / "s.db")
    with holter.testing.monitor(db=db) as mon:
        mon.counter("x").inc()
        mon.flush()
    with holter.testing.monitor(db=db) as mon:
        mon.gauge("x").set(1)
        mon.flush()
        with pytest.raises(QueryError, match="several kinds"):
            q.stats(mon.store, "x")
        assert q.stats(mon.store, "x", kind="gauge").last == 1
        with pytest.raises(QueryError, match="no metric named 'y'"):
            q.stats(mon.store, "y")


def test_buckets_partition_the_window(db_path: str) -> None:
    with holter.testing.FakeClock(start_ns=T0) as clock, \
            holter.testing.monitor(db=db_path) as mon:
        c = mon.counter("jobs")
        for i in range(12):
            c.inc(i)
            clock.advance(10)
            mon.flush()
        steps = q.buckets(mon.store, "jobs", "2m", step="30s")
    assert len(steps) == 4
    assert [s.end_ns - s.start_ns for s in steps] == [30 * S] * 4
    assert sum(s.count for s in steps) == sum(range(12))
    assert [s.count for s in steps] == [0 + 1 + 2, 3 + 4 + 5, 6 + 7 + 8, 9 + 10 + 11]
    assert steps[-1].rate == pytest.approx((9 + 10 + 11) / 30)
