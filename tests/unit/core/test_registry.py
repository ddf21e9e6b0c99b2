"""The registry: get-or-create, definition errors, tag conversion, cardinality cap, drops."""

from __future__ import annotations

import enum
import itertools
import logging
import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

import holter.testing
from holter.core.instruments import Counter, Gauge, Histogram
from holter.core.registry import (
    MAX_TAG_VALUE_LEN,
    NAME_PATTERN,
    TAG_KEY_PATTERN,
    Registry,
    canonical_tags,
    tag_value,
)
from holter.errors import ConfigError, HolterError, InvalidValue
from holter.store import query as q

KINDS = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}


def overflow_count(mon, metric: str) -> float:
    return mon.query("holter.overflow", tags={"metric": metric}).count


# -- get-or-create -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_same_name_and_kind_returns_the_same_instrument(definer, kind) -> None:
    mon = definer
    make = getattr(mon, kind)
    first = make("svc.thing")
    assert make("svc.thing") is first
    assert make("svc.thing", unit=None) is first
    assert mon.registry.define(KINDS[kind], "svc.thing", None, "") is first
    assert first.kind == kind
    assert first.name == "svc.thing"


def test_same_name_and_unit_returns_the_same_instrument(definer) -> None:
    mon = definer
    h = mon.histogram("latency", unit="ms")
    assert mon.histogram("latency", unit="ms") is h
    assert mon.histogram("latency") is h  # no unit given: whatever it was defined with
    assert h.unit == "ms"


@pytest.mark.parametrize(("first", "second"), list(itertools.permutations(sorted(KINDS), 2)))
def test_same_name_another_kind_is_a_config_error_naming_both(definer, first, second) -> None:
    mon = definer
    original = getattr(mon, first)("jobs")
    with pytest.raises(ConfigError) as info:
        getattr(mon, second)("jobs")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, HolterError)
    text = str(info.value)
    assert "'jobs'" in text
    assert first in text and second in text
    # the original is untouched and still the registered one
    assert getattr(mon, first)("jobs") is original
    assert mon.registry.instruments["jobs"] is original


def test_kind_conflict_is_raised_by_the_registry_too() -> None:
    reg = Registry(strict=False)
    reg.define(Counter, "x", None, "")
    with pytest.raises(ConfigError, match=r"counter.*histogram"):
        reg.define(Histogram, "x", None, "")


def test_unit_conflict_is_a_config_error_naming_both_units(definer) -> None:
    mon = definer
    mon.histogram("db.query", unit="ms")
    with pytest.raises(ConfigError) as info:
        mon.histogram("db.query", unit="s")
    text = str(info.value)
    assert "'ms'" in text and "'s'" in text and "'db.query'" in text
    mon.counter("bytes.sent")
    with pytest.raises(ConfigError, match=r"None.*'By'"):
        mon.counter("bytes.sent", unit="By")


@pytest.mark.parametrize("bad", ["has space", "", "x" * 64, "tab\t", "é"])
def test_invalid_unit_is_a_config_error(definer, bad) -> None:
    mon = definer
    with pytest.raises(ConfigError) as info:
        mon.counter("c", unit=bad)
    assert repr(bad) in str(info.value)
    assert "c" not in mon.registry.instruments


@pytest.mark.parametrize("unit", ["s", "ms", "By", "{request}", "1", "x" * 63])
def test_valid_units(definer, unit) -> None:
    assert definer.histogram("h", unit=unit).unit == unit


# -- names and tag keys --------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["", "1abc", "_private", ".dot", "a b", "a;b", "a,b", "é", "x" * 256, "\na", "a\n", None, 5],
)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_invalid_metric_name_raises_naming_value_and_pattern(definer, kind, bad) -> None:
    with pytest.raises(ValueError) as info:
        getattr(definer, kind)(bad)
    assert isinstance(info.value, ConfigError)
    text = str(info.value)
    assert repr(bad) in text
    assert NAME_PATTERN in text


@pytest.mark.parametrize("where", ["name", "tag key", "unit"])
def test_a_trailing_newline_is_rejected(definer, where) -> None:
    # '$' alone would match before a final newline; the patterns must match the whole text
    with pytest.raises(ConfigError):
        if where == "name":
            definer.counter("requests\n")
        elif where == "tag key":
            definer.counter("c").inc(**{"route\n": "/"})
        else:
            definer.histogram("h", unit="ms\n")


@pytest.mark.parametrize("good", ["a", "http.requests", "a/b-c_d.e9", "X" * 255])
def test_valid_metric_names(definer, good) -> None:
    assert definer.counter(good).name == good


@pytest.mark.parametrize("bad", ["", "1k", "a-b", "a b", "a/b", "é", "k" * 129, "x:y"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_invalid_tag_key_raises_naming_key_and_pattern(definer, kind, bad) -> None:
    inst = getattr(definer, kind)("m")
    record = {"counter": "inc", "gauge": "set", "histogram": "observe"}[kind]
    with pytest.raises(ValueError) as info:
        getattr(inst, record)(1, **{bad: "v"})
    assert isinstance(info.value, ConfigError)
    text = str(info.value)
    assert repr(bad) in text
    assert TAG_KEY_PATTERN in text
    with pytest.raises(ConfigError):
        inst.bind(**{bad: "v"})
    assert inst.series() == []


@pytest.mark.parametrize("good", ["k", "_k", "a.b", "K_9", "k" * 128])
def test_valid_tag_keys(definer, good) -> None:
    c = definer.counter("c")
    c.inc(**{good: "v"})
    assert [cell.tags for cell in c.series()] == [((good, "v"),)]


def test_invalid_tag_key_raises_even_outside_strict_mode() -> None:
    # a bad key is misuse (like a bad name), not a bad value: it is not silently dropped
    with holter.testing.monitor(strict=False) as mon, pytest.raises(ConfigError):
        mon.counter("c").inc(**{"bad key": 1})


# -- tag values ----------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    ONE = 1


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("GET", "GET"),
        (1, "1"),
        (1.0, "1"),
        (True, "1"),
        (Decimal("1"), "1"),
        (Decimal("1.000"), "1"),
        (Fraction(2, 2), "1"),
        (np.int64(1), "1"),
        (np.float64(1.0), "1"),
        (Level.ONE, "1"),
        (False, "0"),
        (-0.0, "0"),
        (200, "200"),
        (1.5, "1.5"),
        (Decimal("1.5"), "1.5"),
        (Fraction(3, 2), "1.5"),
        (0.1, "0.1"),
        (-3, "-3"),
        (10**20, "100000000000000000000"),
        (math.inf, "inf"),
        (Color.RED, "red"),
        (b"caf\xc3\xa9", "café"),
        (b"\xff", "\ufffd"),
        (None, "None"),
        ([1, 2], "[1, 2]"),
        ("x" * (MAX_TAG_VALUE_LEN + 50), "x" * MAX_TAG_VALUE_LEN),
    ],
)
def test_tag_value_conversion(value, text) -> None:
    assert tag_value(value) == text
    assert tag_value(value) == text  # deterministic


def test_tag_value_of_an_unprintable_object() -> None:
    assert tag_value(Unprintable()) == "<unprintable Unprintable>"


@pytest.mark.parametrize("value", [1, 1.0, True, Decimal("1"), Fraction(1), np.int64(1), Level.ONE])
def test_equal_tag_values_give_one_series_string(definer, value) -> None:
    # a fresh counter per value: the stored tag does not depend on a cached alias
    c = definer.counter("c")
    c.inc(status=value)
    assert [cell.tags for cell in c.series()] == [(("status", "1"),)]


def test_mixed_equal_tag_values_record_into_one_series(mon) -> None:
    c = mon.counter("requests")
    for value in (1, 1.0, True, Decimal("1"), "1"):
        c.inc(code=value)
    assert [cell.tags for cell in c.series()] == [(("code", "1"),)]
    assert mon.query("requests", tags={"code": 1}).count == 5
    assert mon.query("requests", tags={"code": "1"}).count == 5


def test_kwarg_order_does_not_create_a_new_series(mon) -> None:
    c = mon.counter("requests")
    c.inc(method="GET", status=200)
    c.inc(status=200, method="GET")
    c.inc(1, **{"status": 200.0, "method": "GET"})
    assert len(c.series()) == 1
    assert c.series()[0].tags == (("method", "GET"), ("status", "200"))
    assert mon.query("requests", tags={"method": "GET", "status": 200}).count == 3


def test_canonical_tags_are_sorted_strings() -> None:
    assert canonical_tags({"b": 2, "a": True, "c": "x"}) == (("a", "1"), ("b", "2"), ("c", "x"))
    assert canonical_tags({}) == ()


def test_unhashable_tag_values_work(mon) -> None:
    c = mon.counter("c")
    h = mon.histogram("h")
    for _ in range(3):
        c.inc(ids=[1, 2], meta={"k": 1})
        h.observe(2.0, ids=[1, 2])
    assert [cell.tags for cell in c.series()] == [(("ids", "[1, 2]"), ("meta", "{'k': 1}"))]
    assert mon.query("c").count == 3
    assert mon.query("h", tags={"ids": "[1, 2]"}).count == 3
    assert c.bind(ids=[1, 2], meta={"k": 1}) is c.series()[0]


def test_tag_conversion_does_not_depend_on_history(mon) -> None:
    first = mon.counter("first")
    first.inc(k=(1,))
    first.inc(k=(1.0,))
    second = mon.counter("second")
    second.inc(k=(1.0,))
    second.inc(k=(1,))
    expected = {(("k", "(1,)"),), (("k", "(1.0,)"),)}
    assert {cell.tags for cell in first.series()} == expected
    assert {cell.tags for cell in second.series()} == expected


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_bind_returns_the_series_that_tags_record_into(mon, kind) -> None:
    inst = getattr(mon, kind)("m")
    bound = inst.bind(route="/users", code=200)
    assert inst.bind(code=200, route="/users") is bound
    assert inst.bind(route="/users", code=200.0) is bound
    if kind == "counter":
        bound.inc()
        inst.inc(route="/users", code=200)
    elif kind == "gauge":
        bound.set(3)
        inst.inc(2, route="/users", code=200)
    else:
        bound.observe(1.0)
        inst.observe(3.0, code=200, route="/users")
    assert inst.series() == [bound]
    stats = mon.query("m", tags={"route": "/users"})
    if kind == "counter":
        assert stats.count == 2
    elif kind == "gauge":
        assert stats.last == 5
    else:
        assert (stats.count, stats.sum) == (2, 4.0)


def test_untagged_series_is_one_series(mon) -> None:
    c = mon.counter("c")
    c.inc()
    c.inc(2)
    assert c.bind() is c.series()[0]
    assert c.series()[0].tags == ()
    assert mon.query("c").count == 3


# -- cardinality cap -----------------------------------------------------------------------


def test_cardinality_cap_sends_new_combinations_to_the_overflow_series() -> None:
    cap = 3
    with holter.testing.monitor(max_series=cap) as mon:
        c = mon.counter("hits")
        for user in range(cap):
            c.inc(2, user=user)
        assert len(c.series()) == cap
        c.inc(5, user="u-new")  # the N+1-th combination
        c.inc(7, user="u-newer")
        c.inc(1, user=0)  # an existing combination keeps its own series
        tags = [cell.tags for cell in c.series()]
        assert len(tags) == cap + 1
        assert (("holter.overflow", "true"),) in tags
        assert mon.query("hits").count == 2 * cap + 5 + 7 + 1  # totals stay correct
        assert mon.query("hits", tags={"holter.overflow": "true"}).count == 12
        assert mon.query("hits", tags={"user": 0}).count == 3
        assert overflow_count(mon, "hits") == 2
        # more overflowing recordings are counted each time; the series count stays bounded
        for i in range(50):
            c.inc(user=f"x{i}")
        assert len(c.series()) == cap + 1
        assert mon.query("hits", tags={"holter.overflow": "true"}).count == 12 + 50
        assert overflow_count(mon, "hits") == 52


def test_cardinality_cap_is_per_metric_and_covers_every_kind() -> None:
    with holter.testing.monitor(max_series=2) as mon:
        h = mon.histogram("lat")
        g = mon.gauge("depth")
        for i in range(4):
            h.observe(float(i), q=i)
            g.set(i, q=i)
        assert len(h.series()) == 3
        assert len(g.series()) == 3
        lat = mon.query("lat")
        assert (lat.count, lat.sum, lat.min, lat.max) == (4, 6.0, 0.0, 3.0)
        over = mon.query("lat", tags={"holter.overflow": "true"})
        assert (over.count, over.sum) == (2, 5.0)
        assert overflow_count(mon, "lat") == 2
        assert overflow_count(mon, "depth") == 2
        assert mon.query("holter.overflow").count == 4


def test_overflow_is_logged_once_per_metric(caplog) -> None:
    with holter.testing.monitor(max_series=1) as mon, caplog.at_level(logging.WARNING, "holter"):
        a = mon.counter("a")
        b = mon.counter("b")
        for i in range(5):
            a.inc(k=i)
            b.inc(k=i)
        messages = [r.getMessage() for r in caplog.records if "tag combinations" in r.getMessage()]
    assert len(messages) == 2
    assert any("'a'" in m for m in messages) and any("'b'" in m for m in messages)


def test_bind_past_the_cap_returns_the_overflow_series() -> None:
    with holter.testing.monitor(max_series=1) as mon:
        c = mon.counter("c")
        c.inc(k="first")
        bound = c.bind(k="second")
        assert bound.tags == (("holter.overflow", "true"),)
        bound.inc()
        bound.inc()
        assert mon.query("c", tags={"holter.overflow": "true"}).count == 2
        assert overflow_count(mon, "c") == 1  # bind resolved once


# -- drop accounting -----------------------------------------------------------------------


def _dropped_by_reason(mon) -> dict[str, float]:
    return {s.group["reason"]: s.count for s in mon.query("holter.dropped", by="reason")}


def test_registry_drop_raises_in_strict_mode_naming_value_metric_and_reason() -> None:
    reg = Registry(strict=True)
    with pytest.raises(InvalidValue) as info:
        reg.drop(math.nan, "not_finite", 1, "db.latency")
    assert isinstance(info.value, ValueError)
    text = str(info.value)
    assert "nan" in text and "'db.latency'" in text and "not finite" in text


def test_registry_drop_counts_in_non_strict_mode() -> None:
    reg = Registry(strict=False)
    reg.drop(math.nan, "not_finite", 3, "m")
    reg.drop(-1, "negative", 1, "m")
    reg.count_drop("not_finite")
    dropped = reg.instruments["holter.dropped"]
    totals = {cell.tags: cell.collect() for cell in dropped.series()}
    assert totals == {(("reason", "not_finite"),): 4, (("reason", "negative"),): 1}


def test_count_drop_never_raises_even_in_strict_mode() -> None:
    reg = Registry(strict=True)
    reg.count_drop("store_error", 10)
    dropped = reg.instruments["holter.dropped"]
    assert [cell.collect() for cell in dropped.series()] == [10]


def test_drops_are_logged_once_per_reason(caplog) -> None:
    with holter.testing.monitor(strict=False) as mon, caplog.at_level(logging.WARNING, "holter"):
        c = mon.counter("c")
        for _ in range(3):
            c.inc(math.nan)
            c.inc(-1)
            c.inc("x")
        mon.gauge("g").set(math.inf)
        records = [r for r in caplog.records if "holter dropped a value" in r.getMessage()]
        reasons = sorted(r.args[0] for r in records)
        assert reasons == ["negative", "not_a_number", "not_finite"]
        assert _dropped_by_reason(mon) == {"not_finite": 4, "negative": 3, "not_a_number": 3}


# -- fork ----------------------------------------------------------------------------------


def test_registry_reset_after_fork_forgets_interval_data_keeps_gauges(mon) -> None:
    c = mon.counter("c")
    h = mon.histogram("h")
    g = mon.gauge("g")
    c.inc(10)
    c.inc(user="a")
    h.observe(100.0)
    g.set(7)
    mon.registry.reset_after_fork()
    c.inc(2)
    h.observe(1.0)
    mon.flush()
    assert mon.query("c").count == 2
    hs = mon.query("h")
    assert (hs.count, hs.max) == (1, 1.0)
    assert mon.query("g").last == 7  # a gauge's value is state, kept across the fork


def test_query_of_a_series_that_never_recorded_is_an_error(mon) -> None:
    mon.counter("never")
    with pytest.raises(q.QueryError):
        mon.query("never")
