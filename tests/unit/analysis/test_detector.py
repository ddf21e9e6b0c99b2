"""The streaming detector on synthetic series with known anomalies, and on bad input."""

from __future__ import annotations

import datetime
import math
import random

import pytest

from holter.analysis import Detector
from holter.analysis.anomaly import Events
from holter.analysis.detector import SHIFT_POINTS, WARM_POINTS

T0 = 1_700_006_400  # a Wednesday, 00:00 UTC


def run(gen, n, step=60.0, seed=3):
    """Feed ``gen(i, t, rnd)`` for ``n`` points; return (events, observations, detector)."""
    rnd = random.Random(seed)
    det = Detector()
    tracker = Events()
    events, observations = [], []
    for i in range(n):
        t = T0 + i * step
        obs = det.observe(t, gen(i, t, rnd))
        observations.append(obs)
        event = tracker.step(obs, i)
        if event is not None and event.points == 1:
            events.append(event)
    return events, observations, det


def noise(i, t, rnd):
    return 100.0 + rnd.gauss(0.0, 5.0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pure_noise_gives_no_anomaly(seed) -> None:
    events, observations, det = run(noise, 3000, seed=seed)
    assert events == []
    assert all(0.0 <= o.score <= 1.0 for o in observations)
    assert det.maturity == "mature"


@pytest.mark.parametrize(
    "make",
    [
        lambda i, t, r: math.exp(r.gauss(3.0, 0.5)),  # skewed (lognormal)
        lambda i, t, r: float(sum(1 for _ in range(10) if r.random() < 0.05)),  # sparse counts
        lambda i, t, r: 100.0 + 20.0 * math.sin(2 * math.pi * (t % 86400) / 86400) + r.gauss(0, 2),
    ],
    ids=["lognormal", "sparse-counts", "smooth-daily"],
)
def test_other_normal_series_give_no_anomaly_after_warming(make) -> None:
    events, _, _ = run(make, 3000)
    assert [e for e in events if e.start_ns > 200] == []


@pytest.mark.parametrize(("offset", "kind"), [(60.0, "spike"), (-60.0, "dip")])
def test_spike_and_dip_are_found_at_their_point(offset, kind) -> None:
    events, observations, _ = run(
        lambda i, t, r: noise(i, t, r) + (offset if i == 1500 else 0), 2000
    )
    assert [(e.start_ns, e.kind) for e in events] == [(1500, kind)]
    event = events[0]
    assert event.value == pytest.approx(observations[1500].value)
    assert event.low < event.expected < event.high
    assert not event.low <= event.value <= event.high
    assert event.score >= 0.4
    assert observations[1500].onset


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_level_shift_is_found_then_accepted_as_the_new_normal(seed) -> None:
    events, observations, _ = run(
        lambda i, t, r: noise(i, t, r) + (40.0 if i >= 1500 else 0), 2500, seed=seed
    )
    assert len(events) == 1
    assert 1500 <= events[0].start_ns <= 1502
    assert events[0].kind == "level_shift"
    assert events[0].value > events[0].expected
    # a new normal: nothing anomalous once the shift has been absorbed
    assert max(o.raw_score for o in observations[1500 + 50:]) < 0.3
    assert observations[-1].expected == pytest.approx(140.0, abs=5.0)


def test_large_shift_is_accepted_after_a_few_points() -> None:
    events, observations, _ = run(lambda i, t, r: noise(i, t, r) + (500.0 if i >= 1500 else 0),
                                  1600)
    assert [e.kind for e in events] == ["level_shift"]
    assert events[0].points <= SHIFT_POINTS + 10
    assert observations[1500 + SHIFT_POINTS + 1].expected == pytest.approx(600.0, abs=25.0)


def test_variance_change_is_found() -> None:
    events, _, _ = run(lambda i, t, r: 100.0 + r.gauss(0.0, 5.0 if i < 1500 else 30.0), 1700)
    assert events
    assert 1500 <= events[0].start_ns <= 1505
    assert events[0].kind == "variance_change"


def test_fast_drift_is_found() -> None:
    # the mean runs away at one scale per point, no jump
    events, _, _ = run(lambda i, t, r: noise(i, t, r) + (5.0 * (i - 1500) if i >= 1500 else 0),
                       1700, seed=3)
    found = [e for e in events if e.start_ns >= 1500]
    assert found, "the drift was not found"
    assert found[0].start_ns < 1520
    assert found[0].kind in ("trend_change", "level_shift")


def test_slow_drift_is_followed_not_flagged() -> None:
    # documented: a drift of a fifth of a scale per point is absorbed like a new level
    events, observations, _ = run(
        lambda i, t, r: noise(i, t, r) + (1.0 * (i - 1500) if i >= 1500 else 0), 1700, seed=8
    )
    assert [e for e in events if e.start_ns >= 1500] == []
    assert observations[-1].expected == pytest.approx(300.0, abs=25.0)


# -- seasonality ----------------------------------------------------------------------------


def office_hours(i, t, rnd):
    """20 at night, 80 from 08:00 to 18:00 UTC, noise σ=2; 5-minute points."""
    hour = (t % 86400) / 3600
    return 20.0 + (60.0 if 8 <= hour < 18 else 0.0) + rnd.gauss(0.0, 2.0)


def test_daily_pattern_is_learnt_and_then_not_anomalous() -> None:
    events, observations, det = run(office_hours, 12 * 288, step=300.0)
    # the first jump surprises a detector that has not seen a day yet; later ones do not
    assert all(e.start_ns < 288 for e in events)
    assert det.seasonality == "daily"
    assert det.maturity == "mature"
    assert observations[0].maturity == "warming"
    assert observations[WARM_POINTS + 1].maturity == "learning"
    late = observations[10 * 288 + 100]  # 08:20 on day 10
    assert late.expected == pytest.approx(80.0, abs=4.0)


def test_missing_daily_bump_is_found_on_its_day() -> None:
    day9 = 9 * 288

    def missing(i, t, rnd):
        value = office_hours(i, t, rnd)
        return value - 60.0 if day9 <= i < day9 + 288 and value > 50 else value

    events, _, _ = run(missing, 11 * 288, step=300.0)
    late = [e for e in events if e.start_ns >= 288]
    assert len(late) == 1
    assert day9 + 96 <= late[0].start_ns <= day9 + 100  # at 08:00-08:20 on day 9
    assert late[0].value < late[0].expected


def test_night_spike_on_a_daily_pattern_is_found() -> None:
    at = 9 * 288 + 36  # 03:00 on day 9

    def spiky(i, t, rnd):
        return office_hours(i, t, rnd) + (50.0 if i == at else 0.0)

    events, _, _ = run(spiky, 10 * 288, step=300.0)
    assert [(e.start_ns, e.kind) for e in events if e.start_ns >= 288] == [(at, "spike")]


def weekday_office(i, t, rnd):
    """Busy on weekday office hours, a little busy at weekends; 30-minute points."""
    hour = (t % 86400) / 3600
    weekday = datetime.datetime.fromtimestamp(t, datetime.UTC).weekday() < 5
    busy = 8 <= hour < 18
    return 20.0 + (60.0 if busy and weekday else 10.0 if busy else 0.0) + rnd.gauss(0.0, 2.0)


def test_weekly_pattern_is_learnt_and_weekends_are_not_anomalies() -> None:
    events, observations, det = run(weekday_office, 6 * 7 * 48, step=1800.0)
    assert events == []
    assert det.seasonality == "weekly"
    saturday_noon = next(o for o in observations[-7 * 48:]
                         if datetime.datetime.fromtimestamp(o.timestamp, datetime.UTC).strftime(
                             "%a %H:%M") == "Sat 12:00")
    assert saturday_noon.expected == pytest.approx(30.0, abs=8.0)


# -- bad input, cold start, bounded state --------------------------------------------------


def test_bad_values_never_raise_and_scores_stay_finite() -> None:
    det = Detector()
    values = [1.0, math.nan, math.inf, -math.inf, None, "x", 1e300, -1e308, 1e-300, 0.0,
              float("1e308"), 5, True]
    for i in range(300):
        value = values[i % len(values)]
        score = det.update(T0 + i, value)  # type: ignore[arg-type]
        assert 0.0 <= score <= 1.0 and math.isfinite(score)
        obs = det.observe(T0 + i + 0.5, value)  # type: ignore[arg-type]
        assert math.isfinite(obs.score)
        assert obs.expected is None or math.isfinite(obs.expected)
    assert det.skipped > 0
    assert det.update("not a time", 1.0) == 0.0  # type: ignore[arg-type]


def test_constant_series_scores_zero_and_a_change_is_anomalous() -> None:
    det = Detector()
    scores = [det.update(T0 + i * 10, 45.0) for i in range(500)]
    assert max(scores) < 0.1
    obs = det.observe(T0 + 5000, 46.0)
    assert obs.score >= 0.8 and obs.kind == "spike"


def test_gaps_and_irregular_times_are_fine() -> None:
    rnd = random.Random(5)
    det = Detector()
    t = float(T0)
    for i in range(2000):
        t += rnd.choice([10, 10, 10, 11, 9, 3600, 86400 * 3]) if i % 50 == 0 else 10
        assert 0.0 <= det.update(t, 100 + rnd.gauss(0, 1)) <= 1.0
    assert det.update(t - 1000, 100.0) >= 0.0  # out of order: judged as now


def test_too_few_points_are_warming_not_judged() -> None:
    det = Detector()
    for i in range(WARM_POINTS - 1):
        obs = det.observe(T0 + i, 1000.0 * (i % 2))
        assert obs.maturity == "warming"
        assert obs.score == 0.0 and obs.kind is None and obs.expected is None
    assert det.maturity == "warming"
    det.update(T0 + WARM_POINTS, 500.0)
    assert det.maturity == "learning"


def test_state_round_trip_continues_identically() -> None:
    rnd = random.Random(9)
    det = Detector()
    for i in range(3 * 288):
        det.update(T0 + i * 300, office_hours(i, T0 + i * 300, rnd))
    data = det.to_bytes()
    copy = Detector.from_bytes(data)
    assert copy.to_bytes() == data
    for i in range(3 * 288, 4 * 288):
        t = T0 + i * 300
        value = office_hours(i, t, rnd)
        assert det.update(t, value) == copy.update(t, value)
    # while warming, the buffered points survive too
    fresh = Detector()
    fresh.update(T0, 1.0)
    assert Detector.from_bytes(fresh.to_bytes())._buf == fresh._buf


def test_state_is_bounded() -> None:
    rnd = random.Random(2)
    det = Detector()
    sizes = []
    for i in range(30_000):
        det.update(T0 + i * 60, rnd.gauss(0, 1))
        if i % 10_000 == 9_999:
            sizes.append(len(det.to_bytes()))
    assert sizes[0] == sizes[-1] < 6000


@pytest.mark.parametrize("bad", [b"", b"HDT1", b"XXXX" + bytes(300), b"HDT1" + bytes(50), None])
def test_corrupt_state_is_a_value_error(bad) -> None:
    with pytest.raises(ValueError, match="detector state"):
        Detector.from_bytes(bad)  # type: ignore[arg-type]


def test_nab_factory_protocol() -> None:
    det = Detector(probationary_rows=600)
    assert det.update(T0, 1.0) == 0.0
