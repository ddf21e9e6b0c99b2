"""Summaries (5-minute and 1-hour merges): a long window reads them, and counts the same."""

from __future__ import annotations

import random

import pytest

import holter.testing
from holter.store import query as q
from holter.store import summaries

T0 = 1_800_000_000 * 10**9 + 7 * 10**9  # not on a minute boundary
S = 10**9


def record(mon, clock, steps: int, rng: random.Random) -> None:
    lat = mon.histogram("req.latency", unit="s")
    jobs = mon.counter("jobs")
    depth = mon.gauge("queue.depth")
    for _ in range(steps):
        for _ in range(20):
            lat.observe(rng.lognormvariate(-3, 0.5), route=rng.choice("ab"))
        jobs.inc(rng.randint(0, 9))
        depth.set(rng.randint(0, 50))
        clock.advance(10)
        mon.flush()


def points(store) -> int:
    with store.reading() as conn:
        return conn.execute("SELECT COUNT(*) FROM points").fetchone()[0]


def snapshot(store, start, end):
    # a gauge's count is the number of stored points merged, which summaries change
    return {(w.series.name, tuple(sorted(w.series.tags.items()))):
            (w.stats.count if w.series.kind != "gauge" else None, w.stats.sum, w.stats.min,
             w.stats.max, w.stats.p50, w.stats.p99, w.stats.last)
            for w in q.series_windows(store, start, end)}


def same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        for x, y in zip(a[key], b[key], strict=True):
            assert x == y if y is None else x == pytest.approx(y, rel=1e-9), key


def test_windows_read_summaries_and_count_every_point_once(db_path: str) -> None:
    rng = random.Random(3)
    with holter.testing.FakeClock(start_ns=T0) as clock, \
            holter.testing.monitor(db=db_path) as mon:
        record(mon, clock, 3 * 360, rng)  # three hours
        store = mon.store
        end = clock.now_ns - 3 * S
        windows = [(T0 + 1234 * S, end), (T0, end + S), (end - 2 * 3600 * S - 17 * S, end)]
        with store.reading() as conn:  # maintenance kept them current: forget, read raw
            conn.execute("DELETE FROM summary_state")
        raw = [snapshot(store, *w) for w in windows]
        assert q.refresh_summaries(store) == points(store)  # rebuilt from scratch
        with store.reading() as conn:
            levels = dict(conn.execute(
                "SELECT level, COUNT(*) FROM point_summaries GROUP BY level").fetchall())
            rows = summaries.read_rows(conn, *windows[0])
        assert set(levels) == {300, 3600}
        assert len(rows) < points(store) / 5  # far fewer rows than points
        for w, before in zip(windows, raw, strict=True):
            same(snapshot(store, *w), before)
        # points written after the refresh are read raw, once
        record(mon, clock, 40, rng)
        later = (T0 + 1234 * S, clock.now_ns)
        expected = snapshot(store, *later)
        with store.reading() as conn:
            conn.execute("DELETE FROM summary_state")  # forget: read all raw
        raw_later = snapshot(store, *later)
        same(expected, raw_later)
        assert q.refresh_summaries(store) == points(store)  # rebuilt from scratch
        same(snapshot(store, *later), raw_later)


def test_retention_rollups_are_not_counted_twice(db_path: str) -> None:
    rng = random.Random(5)
    with holter.testing.FakeClock(start_ns=T0) as clock, \
            holter.testing.monitor(db=db_path) as mon:
        record(mon, clock, 2 * 360, rng)
        store = mon.store
        window = (T0, clock.now_ns)
        before = snapshot(store, *window)
        q.refresh_summaries(store)
        # one hour of raw points moves into 1-minute rollups; summaries of it go stale
        store.maintain(clock.now_ns, raw_retention_s=3600, minute_retention_s=7 * 86400,
                       hour_retention_s=90 * 86400)
        after = snapshot(store, *window)
        for key, figures in before.items():
            assert after[key][0] == figures[0], key  # counts
            assert after[key][2:4] == figures[2:4]  # min, max
        same(after, snapshot(store, *window))


def test_steps_on_the_summary_grid(db_path: str) -> None:
    rng = random.Random(7)
    with holter.testing.FakeClock(start_ns=T0) as clock, \
            holter.testing.monitor(db=db_path) as mon:
        record(mon, clock, 6 * 360, rng)  # six hours
        store = mon.store
        ids = [s.id for s in q.series(store, "jobs")]
        end = clock.now_ns
        raw = q.series_steps(store, ids, T0, end, points=48)
        q.refresh_summaries(store)
        cut = q.series_steps(store, ids, T0, end, points=48)
        assert sum(s.count for s in cut) == sum(s.count for s in raw)
        step = cut[0].end_ns - cut[0].start_ns
        assert step % (300 * S) == 0 and cut[-1].end_ns % (300 * S) == 0
        # every full step holds the same ~30 points' worth of jobs, no lumps
        full = [s.count for s in cut[1:-1]]
        assert max(full) < 2 * min(full)


def test_the_monitor_keeps_summaries_current_and_bounded(db_path: str) -> None:
    rng = random.Random(11)
    with holter.testing.FakeClock(start_ns=T0) as clock, \
            holter.testing.monitor(db=db_path, raw_retention_s=3600) as mon:
        record(mon, clock, 3 * 360, rng)  # three hours, maintenance every five minutes
        store = mon.store
        with store.reading() as conn:
            watermark = conn.execute(
                "SELECT value FROM summary_state WHERE key = 'points_rowid'").fetchone()[0]
            behind = conn.execute(
                "SELECT COUNT(*) FROM points WHERE rowid > ?", (watermark,)).fetchone()[0]
            oldest_bucket_end = conn.execute(
                "SELECT MIN(t_end_ns) FROM point_summaries").fetchone()[0]
            oldest_point_end = conn.execute("SELECT MIN(t_end_ns) FROM points").fetchone()[0]
            n_series = conn.execute("SELECT COUNT(*) FROM series").fetchone()[0]
            total = conn.execute("SELECT COUNT(*) FROM points").fetchone()[0]
        # at most the points of one maintenance interval (30 flushes) wait
        assert 0 <= behind <= n_series * 31 < total / 5
        # buckets wholly older than the raw points are dropped, not kept forever
        assert oldest_bucket_end > oldest_point_end - 3600 * S
        assert oldest_bucket_end >= clock.now_ns - 2 * 3600 * S


def test_new_stores_have_the_summary_tables(db_path: str) -> None:
    with holter.testing.monitor(db=db_path) as mon:
        mon.counter("c").inc()
        mon.flush()
        with mon.store.reading() as conn:
            assert summaries.has_tables(conn)
            versions = {v for (v,) in conn.execute("SELECT version FROM holter_migrations")}
        assert 6 in versions
