"""Anomaly detection inside a monitor, against a real store: found, stored, listed, restored."""

from __future__ import annotations

import json
import random
import sqlite3

import pytest
from click.testing import CliRunner

import holter.testing
from holter.cli.main import cli
from holter.store import anomalies as astore

T0 = 1_800_000_000 * 10**9
STEP_S = 10


def record(mon, clock, n, *, spike_at=None, rnd=None, latency_scale=1.0):
    """n flushes of a small service: queue depth (gauge), latency (histogram), requests."""
    rnd = rnd or random.Random(1)
    queue = mon.gauge("queue.depth")
    latency = mon.histogram("http.latency", unit="ms")
    requests = mon.counter("http.requests")
    for i in range(n):
        depth = 50 + rnd.gauss(0, 3)
        if spike_at is not None and i == spike_at:
            depth = 400.0
        queue.set(depth, host="a")
        for _ in range(20):
            latency.observe((10 + rnd.expovariate(1.0)) * latency_scale, route="/users")
        requests.inc(rnd.randint(90, 110), route="/users")
        clock.advance(STEP_S)
        mon.flush()


def test_a_spike_is_stored_with_its_context(db_path: str) -> None:
    with holter.testing.FakeClock(start_ns=T0) as clock, \
            holter.testing.monitor(db=db_path) as mon:
        record(mon, clock, 300, spike_at=250)
        spike_ns = T0 + 251 * STEP_S * 10**9
        found = mon.anomalies(window="2h")
    queue = [a for a in found if a.metric == "queue.depth"]
    assert len(queue) == 1
    a = queue[0]
    assert (a.stat, a.kind, a.tags) == ("value", "spike", {"host": "a"})
    assert a.time_ns == spike_ns and a.peak_ns == spike_ns
    assert a.value == 400.0
    assert a.expected == pytest.approx(50, abs=5)
    assert a.low < a.expected < a.high < a.value
    assert a.severity in ("high", "critical") and 0.65 <= a.score <= 1.0
    assert a.maturity == "learning"  # less than a day of history
    assert a.run_id == mon.run_id
    # the steady series stayed quiet
    assert [x for x in found if x.metric != "queue.depth"] == []


def test_every_statistic_has_a_baseline(db_path: str) -> None:
    with holter.testing.FakeClock(start_ns=T0) as clock, \
            holter.testing.monitor(db=db_path) as mon:
        record(mon, clock, 60)
        found = {(b.metric, b.stat): b for b in mon.baselines()}
    assert {("queue.depth", "value"), ("http.requests", "rate"), ("http.latency", "p50"),
            ("http.latency", "p95"), ("http.latency", "p99"),
            ("http.latency", "rate")} <= set(found)
    b = found[("http.requests", "rate")]
    assert b.points == 60 and b.maturity == "learning" and b.seasonality == "none"
    assert b.expected == pytest.approx(10.0, rel=0.2)  # 100 a flush of 10 s
    assert b.low < b.expected < b.high
    assert b.unit == "/s"
    assert found[("http.latency", "p99")].unit == "ms"
    assert b.mature_in_s == pytest.approx(86400 - 59 * STEP_S, abs=1)


def test_a_counter_that_stops_counts_as_rate_zero(db_path: str) -> None:
    with holter.testing.FakeClock(start_ns=T0) as clock, \
            holter.testing.monitor(db=db_path) as mon:
        requests = mon.counter("jobs")
        rnd = random.Random(2)
        for _ in range(200):
            requests.inc(rnd.randint(95, 105))
            clock.advance(STEP_S)
            mon.flush()
        for _ in range(3):  # the program keeps running but the counter stops
            clock.advance(STEP_S)
            mon.flush()
        found = mon.anomalies(window="1h", metric="jobs")
        base = mon.baselines(metric="jobs")
    assert [(a.stat, a.kind) for a in found] == [("rate", "level_shift")]
    assert found[0].value == 0.0 and found[0].expected == pytest.approx(10.0, rel=0.1)
    assert base[0].points == 203


def test_a_restarted_program_keeps_its_baselines(db_path: str) -> None:
    with holter.testing.FakeClock(start_ns=T0) as clock:
        with holter.testing.monitor(db=db_path) as first:
            record(first, clock, 200)
            run_1 = first.run_id
        with holter.testing.monitor(db=db_path) as second:
            # the very first point after the restart is judged against the saved baseline
            record(second, clock, 1, spike_at=0, rnd=random.Random(9))
            found = second.anomalies(window="1h", metric="queue.depth")
            base = {b.stat: b for b in second.baselines(metric="queue.depth")}
            run_2 = second.run_id
    assert run_2 != run_1
    assert [(a.kind, a.run_id) for a in found] == [("spike", run_2)]
    assert base["value"].points == 201
    assert base["value"].maturity == "learning"


def test_a_fresh_series_is_warming_and_not_judged(db_path: str) -> None:
    with holter.testing.FakeClock(start_ns=T0) as clock, \
            holter.testing.monitor(db=db_path) as mon:
        g = mon.gauge("fresh")
        for value in (1, 1000, 1, 1000, 5):
            g.set(value)
            clock.advance(STEP_S)
            mon.flush()
        assert mon.anomalies(window="1h") == []
        (base,) = mon.baselines(metric="fresh")
    assert base.maturity == "warming"
    assert base.warming_points == 15
    assert base.expected is None


def test_bad_values_do_not_break_detection(db_path: str) -> None:
    with holter.testing.FakeClock(start_ns=T0) as clock, \
            holter.testing.monitor(db=db_path, strict=False) as mon:
        g = mon.gauge("odd")
        for i in range(100):
            g.set([1e308, -1e308, float("nan"), 0.0, 5e-324][i % 5])
            clock.advance(STEP_S)
            mon.flush()
        anomalies = mon.anomalies(window="1h")
    assert all(0.0 <= a.score <= 1.0 for a in anomalies)


def test_detection_can_be_switched_off(db_path: str) -> None:
    with holter.testing.FakeClock(start_ns=T0) as clock, \
            holter.testing.monitor(db=db_path, anomalies=False) as mon:
        record(mon, clock, 30, spike_at=25)
        assert mon.anomaly_detection is None
        assert mon.anomalies(window="1h") == []
        assert mon.baselines() == []


def test_a_store_that_missed_migration_3_gets_its_tables(db_path: str) -> None:
    with holter.testing.FakeClock(start_ns=T0) as clock:
        with holter.testing.monitor(db=db_path, anomalies=False) as mon:
            record(mon, clock, 3)
        conn = sqlite3.connect(db_path)
        conn.execute("DROP TABLE anomalies")
        conn.execute("DROP TABLE detector_state")
        conn.commit()
        conn.close()
        with holter.testing.monitor(db=db_path) as mon:
            assert mon.anomalies(window="1h") == []  # no table yet: nothing found, no error
            record(mon, clock, 60, spike_at=55)
            assert [a.metric for a in mon.anomalies(window="1h")] == ["queue.depth"]


def test_anomalies_expire_with_the_hourly_points(db_path: str) -> None:
    with holter.testing.FakeClock(start_ns=T0) as clock, \
            holter.testing.monitor(db=db_path) as mon:
        record(mon, clock, 100, spike_at=90)
        assert astore.expire(mon.store, T0) == 0
        assert astore.expire(mon.store, T0 + 10**15) == 1
        assert mon.anomalies(window="1d") == []


# -- the CLI ----------------------------------------------------------------------------------


@pytest.fixture
def recorded(db_path: str) -> str:
    """A store whose queue depth has two spikes, recorded up to the real present."""
    import time

    start = time.time_ns() - 400 * STEP_S * 10**9
    with holter.testing.FakeClock(start_ns=start) as clock, \
            holter.testing.monitor(db=db_path) as mon:
        record(mon, clock, 150, spike_at=120)
        record(mon, clock, 150, spike_at=100, rnd=random.Random(5))
    return db_path


def test_holter_anomalies_lists_and_filters(recorded: str) -> None:
    runner = CliRunner()
    out = runner.invoke(cli, ["anomalies", "--db", recorded, "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["count"] == len(data["anomalies"]) >= 2
    first = data["anomalies"][0]
    assert {"metric", "tags", "stat", "time_ns", "value", "expected", "low", "high", "score",
            "severity", "kind", "maturity"} <= set(first)
    assert [a["metric"] for a in data["anomalies"]].count("queue.depth") == 2
    assert isinstance(data["patterns"], list)
    table = runner.invoke(cli, ["anomalies", "--db", recorded, "--window", "2h"])
    assert table.exit_code == 0 and "queue.depth" in table.output and "spike" in table.output
    none = runner.invoke(cli, ["anomalies", "--db", recorded, "--metric", "nothing", "--json"])
    assert json.loads(none.output)["anomalies"] == []
    critical = runner.invoke(cli, ["anomalies", "--db", recorded, "--min-severity", "critical",
                                   "--json"])
    assert all(a["severity"] == "critical" for a in json.loads(critical.output)["anomalies"])


def test_holter_anomalies_rejects_bad_options(recorded: str) -> None:
    runner = CliRunner()
    bad = runner.invoke(cli, ["anomalies", "--db", recorded, "--min-severity", "huge"])
    assert bad.exit_code == 2 and "huge" in bad.output
    window = runner.invoke(cli, ["anomalies", "--db", recorded, "--window", "soon"])
    assert window.exit_code == 2 and "'soon'" in window.output


def test_holter_baselines(recorded: str) -> None:
    runner = CliRunner()
    out = runner.invoke(cli, ["baselines", "--db", recorded, "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    queue = next(r for r in rows if r["metric"] == "queue.depth")
    assert queue["points"] == 300 and queue["maturity"] == "learning"
    assert "state" not in queue
    table = runner.invoke(cli, ["baselines", "--db", recorded, "--metric", "http.latency"])
    assert table.exit_code == 0
    assert "http.latency{route=/users}:p99" in table.output and "learning" in table.output


def test_detectors_are_capped_and_the_excess_counted(db_path: str) -> None:
    from holter.analysis.anomaly import AnomalyDetection

    with holter.testing.FakeClock(start_ns=T0) as clock, \
            holter.testing.monitor(db=db_path) as mon:
        mon.anomaly_detection = AnomalyDetection(mon, max_detectors=2)
        for i in range(3):
            mon.gauge(f"g{i}").set(1.0)
        clock.advance(STEP_S)
        mon.flush()
        assert len(mon.anomaly_detection.tracked) == 2
        dropped = mon.query("holter.dropped", window="1h", tags={"reason": "detector_limit"})
    assert dropped.count >= 1


def test_point_inputs_per_kind() -> None:
    from holter.analysis.anomaly import point_inputs
    from holter.core.sketch import Sketch
    from holter.model import Point, SeriesKey

    s = 10**9
    counter = Point(SeriesKey("c", "counter", "", ()), 0, 10 * s, total=50.0)
    assert point_inputs(counter) == [("rate", 5.0)]
    gauge = Point(SeriesKey("g", "gauge", "", ()), 0, 10 * s, count=2, total=30.0, last=20.0)
    assert point_inputs(gauge) == [("value", 15.0)]
    sampled = Point(SeriesKey("g", "gauge", "", ()), 0, 10 * s, count=0, total=0.0, last=7.0)
    assert point_inputs(sampled) == [("value", 7.0)]
    sketch = Sketch()
    for v in range(1, 101):
        sketch.add(float(v))
    hist = Point(SeriesKey("h", "histogram", "ms", ()), 0, 10 * s, count=100, total=5050.0,
                 min=1.0, max=100.0, sketch=sketch.to_bytes())
    got = dict(point_inputs(hist))
    assert got["p50"] == pytest.approx(50, rel=0.02) and got["p99"] == pytest.approx(99, rel=0.02)
    assert got["rate"] == 10.0
    broken = Point(SeriesKey("h", "histogram", "ms", ()), 0, 10 * s, count=3, sketch=b"junk")
    assert point_inputs(broken) == [("rate", 0.3)]
    assert point_inputs(Point(SeriesKey("c", "counter", "", ()), 5, 5, total=1.0)) == []


def test_the_facade_exposes_the_detector_lazily() -> None:
    import holter

    assert holter.analysis.Detector().update(1.0, 1.0) == 0.0
