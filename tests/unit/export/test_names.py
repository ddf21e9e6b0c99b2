"""Prometheus name mapping: deterministic, documented, never failing."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from holter.export.names import (
    NameMapper,
    base_name,
    clean_name,
    escape_label_value,
    format_value,
    label_name,
    labels_of,
    unit_suffix,
)


@pytest.mark.parametrize(("name", "expected"), [
    ("http.requests", "http_requests"),
    ("a/b-c.d", "a_b_c_d"),
    ("a..b", "a_b"),
    ("9lives", "_9lives"),
    ("ok_name:sub", "ok_name:sub"),
    ("", "holter_metric"),
    ("é", "holter_metric"),
])
def test_clean_name(name: str, expected: str) -> None:
    assert clean_name(name) == expected


@pytest.mark.parametrize(("unit", "suffix"), [
    ("s", "seconds"), ("ms", "milliseconds"), ("By", "bytes"), ("1", "ratio"),
    ("%", "percent"), ("{request}", ""), ("By/s", "bytes_per_seconds"),
    ("req/s", "req_per_seconds"),
    ("weird unit!", "weird_unit"), (None, ""), ("", ""),
])
def test_unit_suffix(unit: str | None, suffix: str) -> None:
    assert unit_suffix(unit) == suffix


def test_base_names_and_type_suffixes() -> None:
    assert base_name("http.latency", "ms", "histogram") == "http_latency_milliseconds"
    assert base_name("wait_seconds", "s", "gauge") == "wait_seconds"  # not repeated
    assert base_name("bytes.sent_total", "By", "counter") == "bytes_sent_bytes"
    mapper = NameMapper()
    assert mapper.family("jobs", "counter", "").samples() == ("jobs_total",)
    assert mapper.family("lat", "histogram", "s").samples() == (
        "lat_seconds", "lat_seconds_sum", "lat_seconds_count")
    assert NameMapper("histogram").family("lat", "histogram", "s").samples()[0] == \
        "lat_seconds_bucket"


def test_collisions_are_resolved_the_same_whatever_the_order() -> None:
    metrics = [("a.b", "counter", ""), ("a_b", "counter", ""), ("a-b", "gauge", ""),
               ("x", "gauge", ""), ("x_count", "gauge", ""), ("x", "histogram", "")]
    results = []
    for order in itertools.permutations(metrics):
        mapper = NameMapper()
        mapper.update(order)
        results.append({m: mapper.family(*m) for m in metrics})
    assert all(r == results[0] for r in results)
    families = results[0]
    samples = [s for f in families.values() for s in f.samples()]
    assert len(samples) == len(set(samples)), "two metrics share a sample name"
    assert families[("a-b", "gauge", "")].name == "a_b"  # sorts first: keeps the name
    assert families[("a.b", "counter", "")].name.startswith("a_b_")


@given(st.text(min_size=0, max_size=40), st.sampled_from(["counter", "gauge", "histogram"]),
       st.text(max_size=10))
def test_any_name_maps_to_a_valid_prometheus_name(name: str, kind: str, unit: str) -> None:
    import re

    family = NameMapper().family(name, kind, unit)
    for sample in family.samples():
        assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", sample), sample


def test_labels() -> None:
    assert label_name("http.method") == "http_method"
    assert label_name("app") == "tag_app"
    assert label_name("le") == "tag_le"
    assert label_name("__secret") == "tag_secret"
    assert labels_of({"a.b": "1", "a_b": "2"}) == {"a_b": "1"}  # the key sorting first wins


def test_escaping_and_values() -> None:
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert format_value(3.0) == "3"
    assert format_value(0.25) == "0.25"
    assert format_value(float("inf")) == "+Inf"
    assert format_value(float("-inf")) == "-Inf"
    assert format_value(float("nan")) == "NaN"
    assert format_value(1e20) == "1e+20"
