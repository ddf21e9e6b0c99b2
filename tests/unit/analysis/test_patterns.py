"""Recurring, trending and correlated patterns on constructed sets of anomalies."""

from __future__ import annotations

import random

import pytest

from holter.analysis.patterns import (
    correlated,
    find_patterns,
    group_by_series,
    label,
    recurring,
    trending,
)
from holter.store.anomalies import Anomaly

NS = 1_000_000_000
START = 1_699_920_000 * NS  # a midnight, UTC
DAY = 86400 * NS
_ids = iter(range(1, 1_000_000))


def anomaly(series_id: int, t_s: float, *, value: float = 10.0, expected: float = 1.0,
            duration_s: float = 10.0, metric: str | None = None, stat: str = "p99") -> Anomaly:
    t_ns = START + int(t_s * NS)
    return Anomaly(
        id=next(_ids), metric=metric or f"m{series_id}", series_kind="histogram", unit="ms",
        tags={"host": "a"}, stat=stat, time_ns=t_ns, end_ns=t_ns + int(duration_s * NS),
        peak_ns=t_ns, value=value, expected=expected, low=0.0, high=2.0, score=0.5,
        severity="medium", kind="spike", maturity="mature", points=1, run_id=1,
        series_id=series_id,
    )


def uniform(series_id: int, n: int, span_s: float, seed: int) -> list[Anomaly]:
    rnd = random.Random(seed)
    return [anomaly(series_id, rnd.uniform(0, span_s)) for _ in range(n)]


def test_label() -> None:
    assert label(anomaly(1, 0, metric="http.latency")) == "http.latency{host=a}:p99"


# -- recurring -----------------------------------------------------------------------------


def test_every_six_hours_with_jitter_and_misses_is_found() -> None:
    rnd = random.Random(1)
    period = 6 * 3600
    items = [anomaly(1, k * period + 1800 + rnd.uniform(-120, 120))
             for k in range(16) if k not in (3, 9)]
    items += uniform(1, 4, 16 * period, seed=2)  # unrelated ones
    found = recurring(sorted(items, key=lambda a: a.time_ns))
    assert len(found) == 1
    assert found[0].details["period_s"] == pytest.approx(period, rel=0.05)
    assert found[0].details["aligned"] >= 14
    assert found[0].p_value < 1e-6
    assert "every 6 h" in found[0].description


def test_daily_at_the_same_time_is_found_with_its_phase() -> None:
    items = [anomaly(1, d * 86400 + 14 * 3600 + 5 * 60) for d in range(7)]
    found = recurring(items)
    assert found and found[0].details["period_s"] == pytest.approx(86400, rel=0.05)
    assert "14:0" in found[0].description


@pytest.mark.parametrize("seed", range(5))
def test_random_anomalies_do_not_recur(seed) -> None:
    items = sorted(uniform(1, 30, 7 * 86400, seed), key=lambda a: a.time_ns)
    assert recurring(items) == []


def test_two_anomalies_are_not_a_pattern() -> None:
    assert recurring([anomaly(1, 0), anomaly(1, 3600)]) == []


# -- trending ------------------------------------------------------------------------------


def test_more_and_more_frequent_anomalies_are_a_trend() -> None:
    rnd = random.Random(3)
    # the rate grows linearly over a week: times drawn from a triangular density
    items = sorted((anomaly(1, rnd.triangular(0, 7 * 86400, 7 * 86400)) for _ in range(60)),
                   key=lambda a: a.time_ns)
    found = [p for p in trending(items, START, START + 7 * DAY) if p.details["test"] == "laplace"]
    assert found and found[0].details["direction"] == "increasing"
    assert found[0].p_value < 0.01


def test_growing_anomalies_are_a_trend_with_sens_slope() -> None:
    rnd = random.Random(4)
    items = [anomaly(1, d * 43200 + rnd.uniform(0, 3600), value=10 + 5 * d + rnd.gauss(0, 1))
             for d in range(14)]
    found = [p for p in trending(items, START, START + 7 * DAY)
             if p.details["test"] == "mann_kendall"]
    assert found and found[0].details["direction"] == "increasing"
    assert found[0].details["slope_per_day"] == pytest.approx(10.0, rel=0.2)


@pytest.mark.parametrize("seed", range(5))
def test_steady_anomalies_are_no_trend(seed) -> None:
    rnd = random.Random(seed)
    items = sorted((anomaly(1, rnd.uniform(0, 7 * 86400), value=rnd.uniform(5, 15))
                    for _ in range(40)), key=lambda a: a.time_ns)
    assert trending(items, START, START + 7 * DAY) == []


# -- correlated ----------------------------------------------------------------------------


def test_anomalies_that_happen_together_are_correlated_and_ranked() -> None:
    rnd = random.Random(5)
    span = 3 * 86400
    gc_times = [rnd.uniform(0, span) for _ in range(12)]
    gc = [anomaly(1, t, metric="gc.pause") for t in gc_times]
    latency = [anomaly(2, t + 5, metric="http.latency") for t in gc_times[:10]]
    latency += [anomaly(2, rnd.uniform(0, span), metric="http.latency") for _ in range(3)]
    rss = [anomaly(3, t + 20, metric="rss") for t in gc_times[:4]]
    rss += [anomaly(3, rnd.uniform(0, span), metric="rss") for _ in range(6)]
    noise = uniform(4, 15, span, seed=6)
    groups = group_by_series(gc + latency + rss + noise)
    found = correlated(groups, START, START + span * NS)
    pairs = [tuple(sorted(p.details["series_ids"])) for p in found]
    assert (1, 2) in pairs
    assert all(4 not in pair for pair in pairs)
    best = min(found, key=lambda p: p.p_value)
    assert tuple(sorted(best.details["series_ids"])) == (1, 2)
    assert best.details["together"] == 10
    lag = best.details["median_lag_s"]
    assert abs(lag) == pytest.approx(5.0, abs=1.0)


@pytest.mark.parametrize("seed", range(5))
def test_independent_series_are_not_correlated(seed) -> None:
    span = 7 * 86400
    groups = group_by_series(uniform(1, 20, span, seed) + uniform(2, 20, span, seed + 100)
                             + uniform(3, 20, span, seed + 200))
    assert correlated(groups, START, START + span * NS) == []


def test_statistics_of_one_series_are_not_correlated_with_each_other() -> None:
    times = [k * 5000.0 for k in range(10)]
    items = [anomaly(1, t, stat="p95") for t in times] + [anomaly(1, t, stat="p99") for t in times]
    assert correlated(group_by_series(items), START, START + DAY) == []


def test_find_patterns_ranks_strongest_first_and_keeps_one_per_series() -> None:
    period = 3600
    items = []
    for stat in ("p50", "p95", "p99"):
        items += [anomaly(1, k * period + 60, stat=stat) for k in range(20)]
    items += [anomaly(2, k * period + 65) for k in range(20)]
    found = find_patterns(items, START, START + DAY)
    assert [p.p_value for p in found] == sorted(p.p_value for p in found)
    recurring_1 = [p for p in found if p.type == "recurring" and p.details["series_ids"] == [1]]
    assert len(recurring_1) == 1
    assert any(p.type == "correlated" for p in found)
    assert all(isinstance(p.as_dict()["series"], list) for p in found)


def test_no_anomalies_no_patterns() -> None:
    assert find_patterns([], START, START + DAY) == []
