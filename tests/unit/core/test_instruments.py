"""Instruments through the public API: amounts, timers, strict and non-strict values, callbacks.

Recorded values are read back from the store with ``mon.query`` (which flushes first).
Timing tests only assert lower bounds (a sleep of S seconds takes at least S), never speed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

import holter.testing
from holter.core.instruments import Timer
from holter.errors import ConfigError, InvalidValue
from holter.store import query as q

SLEEP = 0.02


def dropped_by_reason(mon, *, flush: bool = True) -> dict[str, float]:
    try:
        groups = mon.query("holter.dropped", by="reason", flush=flush)
    except q.QueryError:  # nothing was ever dropped
        return {}
    return {s.group["reason"]: s.count for s in groups}


class Boom(Exception):
    pass


# -- counters ------------------------------------------------------------------------------


def test_counter_inc_by_one_and_by_amounts(mon) -> None:
    c = mon.counter("jobs")
    for _ in range(100):
        c.inc()
    c.inc(5)
    c.inc(0.25)
    c.inc(True)
    stats = mon.query("jobs")
    assert stats.count == 106.25
    assert stats.kind == "counter"


def test_counter_deltas_per_flush_add_up(mon) -> None:
    c = mon.counter("jobs")
    c.inc(3)
    assert mon.flush()
    assert mon.flush()  # an idle interval writes no point for the counter
    c.inc(4)
    assert mon.query("jobs").count == 7


@pytest.mark.parametrize(
    ("amount", "total"),
    [
        (1, 2.5),
        (3, 6.5),
        (2.5, 5.5),
        (True, 2.5),
        (Decimal("1"), 2.5),
        (np.float64(1.25), 3.0),
        pytest.param(
            np.int64(4),
            8.5,
        ),
        pytest.param(
            Decimal("2.5"),
            5.5,
        ),
        pytest.param(
            Fraction(5, 2),
            5.5,
        ),
        pytest.param(
            2**70,
            2.0**71 + 0.5,
        ),
    ],
)
def test_counter_amounts_reach_the_store(mon, amount, total) -> None:
    c = mon.counter("amounts")
    c.inc(amount)
    c.inc(amount)
    assert mon.flush() is True
    c.inc(0.5)
    mon.counter("later").inc()
    assert mon.flush() is True  # the store keeps taking later data
    assert mon.query("amounts", flush=False).count == pytest.approx(total)
    assert mon.query("later", flush=False).count == 1


# -- timers ----------------------------------------------------------------------------------


def test_timer_records_seconds_by_default_and_ms_when_asked(mon) -> None:
    with mon.timer("outer.ms", unit="ms"), mon.timer("inner.s") as timer:
        time.sleep(SLEEP)
    inner = mon.query("inner.s")
    outer = mon.query("outer.ms")
    assert (inner.unit, outer.unit) == ("s", "ms")
    assert inner.count == outer.count == 1
    assert inner.sum >= SLEEP  # seconds
    assert timer.elapsed == inner.sum  # Timer.elapsed holds seconds
    assert outer.sum >= inner.sum * 1000 >= SLEEP * 1000  # the ms timer encloses the other


def test_timer_in_other_time_units(mon) -> None:
    with mon.timer("t.ns", unit="ns"), mon.timer("t.us", unit="us"):
        time.sleep(SLEEP)
    us = mon.query("t.us").sum
    ns = mon.query("t.ns").sum
    assert us >= SLEEP * 1e6
    assert ns >= us * 1000


def test_timer_uses_the_unit_of_an_existing_histogram(mon) -> None:
    mon.histogram("db.query", unit="ms")
    with mon.timer("db.query", table="users"):
        time.sleep(SLEEP)
    stats = mon.query("db.query", tags={"table": "users"})
    assert stats.unit == "ms"
    assert stats.sum >= SLEEP * 1000


def test_histogram_time_context_manager(mon) -> None:
    h = mon.histogram("work", unit="ms")
    with h.time(step="a") as t:
        time.sleep(SLEEP)
    assert isinstance(t, Timer)
    assert t.elapsed >= SLEEP
    stats = mon.query("work", tags={"step": "a"})
    assert stats.sum == pytest.approx(t.elapsed * 1000)


def test_timer_records_when_the_block_raises_and_lets_the_error_through(mon) -> None:
    err = Boom("from the program")
    with pytest.raises(Boom) as info, mon.timer("failing"):
        time.sleep(SLEEP)
        raise err
    assert info.value is err
    stats = mon.query("failing")
    assert stats.count == 1
    assert stats.sum >= SLEEP


def test_timer_needs_a_time_unit(mon) -> None:
    with pytest.raises(ConfigError, match="'By'"):
        mon.histogram("payload", unit="By").time()
    with pytest.raises(ConfigError, match="'parsecs'"):
        mon.timer("distance", unit="parsecs")
    with pytest.raises(ConfigError, match="'By'"):
        mon.histogram("payload").timed()


def test_timer_on_a_name_of_another_kind_is_a_config_error(mon) -> None:
    mon.counter("requests")
    with pytest.raises(ConfigError, match="counter"):
        mon.timer("requests")


def test_timed_sync_function(mon) -> None:
    @mon.timed("inner.s")
    def inner(x: int) -> int:
        time.sleep(SLEEP)
        return x * 2

    @mon.timed("outer.ms", unit="ms", route="/")
    def outer(x: int) -> int:
        return inner(x) + 1

    assert inner.__name__ == "inner"
    assert outer(5) == 11
    s = mon.query("inner.s")
    ms = mon.query("outer.ms", tags={"route": "/"})
    assert (s.unit, ms.unit) == ("s", "ms")
    assert s.count == ms.count == 1
    assert s.sum >= SLEEP
    assert ms.sum >= s.sum * 1000


def test_timed_sync_function_records_when_it_raises(mon) -> None:
    err = Boom("x")

    @mon.timed("fails")
    def fails() -> None:
        time.sleep(SLEEP)
        raise err

    with pytest.raises(Boom) as info:
        fails()
    assert info.value is err
    assert mon.query("fails").sum >= SLEEP


def test_timed_async_function(mon) -> None:
    @mon.timed("inner.s")
    async def inner(x: int) -> int:
        await asyncio.sleep(SLEEP)
        return x * 2

    @mon.timed("outer.ms", unit="ms")
    async def outer(x: int) -> int:
        return await inner(x) + 1

    assert inspect.iscoroutinefunction(inner)
    assert inspect.iscoroutinefunction(outer)
    assert inner.__name__ == "inner"
    assert asyncio.run(outer(5)) == 11
    s = mon.query("inner.s")
    ms = mon.query("outer.ms")
    assert s.count == ms.count == 1
    # the event loop may wake within its clock resolution of the deadline
    assert s.sum >= SLEEP - 1e-3
    assert ms.sum >= s.sum * 1000


def test_timed_async_function_records_when_it_raises(mon) -> None:
    err = Boom("async")

    @mon.timed("afails", unit="ms")
    async def fails() -> None:
        await asyncio.sleep(SLEEP)
        raise err

    with pytest.raises(Boom) as info:
        asyncio.run(fails())
    assert info.value is err
    stats = mon.query("afails")
    assert stats.count == 1
    assert stats.sum >= (SLEEP - 1e-3) * 1000


def test_async_with_timer(mon) -> None:
    async def main() -> Timer:
        async with mon.timer("await.ms", unit="ms") as t:
            await asyncio.sleep(SLEEP)
        return t

    t = asyncio.run(main())
    stats = mon.query("await.ms")
    assert stats.sum == pytest.approx(t.elapsed * 1000)
    assert stats.sum >= (SLEEP - 1e-3) * 1000


# -- strict mode -------------------------------------------------------------------------------

BAD_VALUES = {
    "counter": [math.nan, math.inf, -math.inf, -1, -0.001, "1", None, 1j],
    "gauge": [math.nan, math.inf, -math.inf, "1", None],
    "histogram": [math.nan, math.inf, -math.inf, "1", None, 1j],
}
RECORD = {"counter": "inc", "gauge": "set", "histogram": "observe"}


@pytest.mark.parametrize(
    ("kind", "value"), [(k, v) for k, values in BAD_VALUES.items() for v in values]
)
def test_strict_mode_raises_invalid_value(mon, kind, value) -> None:
    inst = getattr(mon, kind)("strict.metric")
    record = getattr(inst, RECORD[kind])
    with pytest.raises(InvalidValue) as info:
        record(value)
    assert isinstance(info.value, ValueError)
    assert "'strict.metric'" in str(info.value)
    with pytest.raises(InvalidValue):
        getattr(inst.bind(k="v"), RECORD[kind])(value)
    with pytest.raises(InvalidValue):
        record(value, k="v")
    # nothing bad was recorded: only the good value shows
    record(2)
    stats = mon.query("strict.metric")
    if kind == "counter":
        assert stats.count == 2
    elif kind == "gauge":
        assert (stats.last, stats.min, stats.max) == (2, 2, 2)
    else:
        assert (stats.count, stats.sum) == (1, 2.0)
    assert dropped_by_reason(mon) == {}


def test_strict_gauge_inc_dec_raise(mon) -> None:
    g = mon.gauge("g")
    g.set(1)
    for op, value in (("inc", math.nan), ("dec", math.inf), ("inc", "x"), ("dec", None)):
        with pytest.raises(InvalidValue):
            getattr(g, op)(value)
    assert mon.query("g").last == 1


def test_strict_is_the_test_default() -> None:
    with holter.testing.monitor() as mon:
        assert mon.config.strict is True
        with pytest.raises(InvalidValue):
            mon.counter("c").inc(-1)


# -- non-strict mode ---------------------------------------------------------------------------


def test_non_strict_drops_bad_values_and_counts_them_by_reason() -> None:
    with holter.testing.monitor(strict=False) as mon:
        c = mon.counter("c")
        g = mon.gauge("g")
        h = mon.histogram("h")
        # every call returns normally
        for v in (math.nan, math.inf, -1, "x", None):
            assert c.inc(v) is None
        c.inc(2)
        for v in (math.nan, "x"):
            g.set(v)
        g.set(5)
        g.inc(math.inf)
        for v in (math.nan, math.inf, -math.inf, "x", 1.0, 3.0):
            h.observe(v)
        c.bind(k="v").inc(-5)
        assert mon.flush() is True
        assert dropped_by_reason(mon) == {"not_finite": 7, "negative": 2, "not_a_number": 4}
        assert mon.query("c").count == 2
        assert mon.query("g").last == 5
        hs = mon.query("h")
        assert (hs.count, hs.sum, hs.min, hs.max) == (2, 4.0, 1.0, 3.0)


def test_non_strict_logs_once_per_reason(caplog) -> None:
    with caplog.at_level(logging.WARNING, "holter"), holter.testing.monitor(strict=False) as mon:
        c = mon.counter("c")
        for _ in range(5):
            c.inc(math.nan)
            c.inc(-2)
            c.inc("two")
            mon.histogram("h").observe(math.inf)
        mon.flush()
        mon.counter("c2").inc(math.inf)  # another metric, same reason: still no new log
        mon.flush()
    drops = [r for r in caplog.records if "holter dropped a value" in r.getMessage()]
    assert sorted(r.args[0] for r in drops) == ["negative", "not_a_number", "not_finite"]
    assert all("holter.dropped{reason=" in r.getMessage() for r in drops)


def test_drops_found_during_a_flush_are_written_by_that_flush() -> None:
    def broken() -> float:
        raise Boom

    with holter.testing.monitor(strict=False) as mon:
        mon.histogram("h").observe(math.nan)
        mon.histogram("h").observe(1.0)
        mon.gauge("cb", fn=broken)
        assert mon.flush() is True
        assert dropped_by_reason(mon, flush=False) == {"not_finite": 1, "callback_error": 1}


# -- callback gauges ---------------------------------------------------------------------------


def test_callback_gauge_is_sampled_at_each_flush(mon) -> None:
    calls: list[int] = []
    depth = {"value": 3}

    def sample() -> float:
        calls.append(1)
        return depth["value"]

    g = mon.gauge("queue.depth", fn=sample)
    assert mon.gauge("queue.depth") is g
    assert calls == []  # not sampled when defined
    depth["value"] = 7
    assert mon.flush()
    assert len(calls) == 1
    depth["value"] = 2
    assert mon.flush()
    assert len(calls) == 2
    stats = mon.query("queue.depth", flush=False)
    assert stats.last == 2
    assert (stats.min, stats.max) == (2, 7)


def test_callback_gauges_with_tags_are_separate_series(mon) -> None:
    mon.gauge("pool.size", fn=lambda: 4, tags={"pool": "a"})
    mon.gauge("pool.size", fn=lambda: 9, tags={"pool": "b"})
    by_pool = {s.group["pool"]: s.last for s in mon.query("pool.size", by="pool")}
    assert by_pool == {"a": 4, "b": 9}


@pytest.mark.parametrize("strict", [True, False])
def test_raising_callback_is_counted_and_does_not_break_the_flush(strict) -> None:
    def broken() -> float:
        raise Boom("callback failed")

    with holter.testing.monitor(strict=strict) as mon:
        mon.gauge("broken", fn=broken)
        mon.gauge("fine", fn=lambda: 11)
        mon.counter("work").inc(3)
        assert mon.flush() is True
        assert mon.query("fine").last == 11
        assert mon.query("work").count == 3
        assert dropped_by_reason(mon)["callback_error"] >= 1
        before = dropped_by_reason(mon)["callback_error"]
        assert mon.flush() is True
        assert dropped_by_reason(mon)["callback_error"] > before  # once per flush


def bad_once(value: object) -> Callable[[], object]:
    """A callback that returns ``value`` at its first call and 1.0 afterwards."""
    calls: list[int] = []

    def sample() -> object:
        calls.append(1)
        return value if len(calls) == 1 else 1.0

    return sample


@pytest.mark.parametrize("strict", [True, False])
def test_callback_returning_a_non_number_is_dropped_not_raised(strict) -> None:
    with holter.testing.monitor(strict=strict) as mon:
        mon.gauge("odd", fn=bad_once("seven"))
        assert mon.flush() is True
        assert dropped_by_reason(mon) == {"not_a_number": 1}
        assert mon.query("odd").last == 1.0


@pytest.mark.parametrize(
    "strict",
    [
        pytest.param(
            True,
        ),
        False,
    ],
)
def test_callback_returning_nan_is_counted_as_not_finite(strict) -> None:
    with holter.testing.monitor(strict=strict) as mon:
        mon.gauge("nan", fn=bad_once(math.nan))
        assert mon.flush() is True
        assert dropped_by_reason(mon) == {"not_finite": 1}


def test_callback_must_be_callable(mon) -> None:
    with pytest.raises(ConfigError, match="callable"):
        mon.gauge("g", fn=42)
