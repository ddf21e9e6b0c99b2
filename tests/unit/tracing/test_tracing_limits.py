"""Bounds on what a span stores: tag values, tag and event counts, text lengths.

Tag values that are not str/int/float/bool are stored by ``repr``; long text is cut
to ``MAX_TAG_LEN`` with a ``…`` marker; tags past ``MAX_TAGS`` and events past
``MAX_EVENTS`` are dropped and counted in ``holter.truncated`` /
``holter.events_dropped``. Nothing a span carries can make the store unbounded or
make a flush fail.
"""

from __future__ import annotations

import pytest

from holter.core.tracing import MAX_EVENTS, MAX_TAG_LEN, MAX_TAGS
from holter.store import query as q

MARK = "…"


class Thing:
    def __repr__(self) -> str:
        return "Thing<7>"


class Huge:
    def __repr__(self) -> str:
        return "H" * 10_000


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def only(mon, span) -> dict:
    mon.flush()
    rows = q.trace(mon.store, span.trace_id_hex)
    assert len(rows) == 1
    return rows[0]


def assert_cut(text: object, first: str) -> None:
    assert isinstance(text, str)
    assert len(text) == MAX_TAG_LEN
    assert text.endswith(MARK)
    assert text.startswith(first * 10)


def test_tag_values_that_are_not_primitive_are_stored_by_repr(mon) -> None:
    with mon.span("tags", listy=[1, 2], thing=Thing()) as span:
        span.set_tag("none", None)
        span.set_tag("dict", {"a": 1})
        span.set_tag("tuple", ("x", 2))
        span.set_tag("huge", Huge())
        span.set_tag("broken", Unprintable())
        span.set_tag("long", "x" * 10_000)
        span.set_tag("exact", "y" * MAX_TAG_LEN)
        span.set_tag("flag", True)
        span.set_tag("count", 7)
        span.set_tag("big", 2**80)
        span.set_tag("pi", 3.25)
    tags = only(mon, span)["tags"]
    assert tags["listy"] == "[1, 2]"
    assert tags["thing"] == "Thing<7>"
    assert tags["none"] == "None"
    assert tags["dict"] == "{'a': 1}"
    assert tags["tuple"] == "('x', 2)"
    assert_cut(tags["huge"], "H")
    assert isinstance(tags["broken"], str) and "Unprintable" in tags["broken"]
    assert_cut(tags["long"], "x")
    assert tags["exact"] == "y" * MAX_TAG_LEN  # at the bound: kept whole
    assert tags["flag"] is True
    assert tags["count"] == 7 and type(tags["count"]) is int
    assert tags["big"] == 2**80
    assert tags["pi"] == 3.25


def test_more_tags_than_the_bound_are_dropped_and_counted(mon) -> None:
    with mon.span("busy") as span:
        for i in range(MAX_TAGS + 10):
            span.set_tag(f"k{i}", i)
        span.set_tag("k0", "updated")  # a kept tag can still change
    tags = only(mon, span)["tags"]
    assert tags["holter.truncated"] == 10
    assert {k for k in tags if k != "holter.truncated"} == {f"k{i}" for i in range(MAX_TAGS)}
    assert tags["k0"] == "updated"


def test_more_events_than_the_bound_are_dropped_and_counted(mon) -> None:
    with mon.span("chatty") as span:
        for i in range(MAX_EVENTS + 7):
            span.log(f"event {i}", i=i)
    row = only(mon, span)
    assert [e["message"] for e in row["events"]] == [f"event {i}" for i in range(MAX_EVENTS)]
    assert [e["fields"]["i"] for e in row["events"]] == list(range(MAX_EVENTS))
    assert row["tags"]["holter.events_dropped"] == 7
    times = [e["t_ns"] for e in row["events"]]
    assert times == sorted(times)


def test_long_event_text_and_field_values_are_cut(mon) -> None:
    with mon.span("verbose") as span:
        span.log("m" * 10_000, detail="d" * 10_000, obj=Thing(), n=3)
    event = only(mon, span)["events"][0]
    assert_cut(event["message"], "m")
    assert_cut(event["fields"]["detail"], "d")
    assert event["fields"]["obj"] == "Thing<7>"
    assert event["fields"]["n"] == 3


def test_a_long_error_message_is_cut(mon) -> None:
    with pytest.raises(ValueError), mon.span("loud.failure") as span:
        raise ValueError("e" * 10_000)
    row = only(mon, span)
    assert row["status"] == "error"
    assert row["error_type"] == "ValueError"
    assert_cut(row["error_message"], "e")


def test_tags_given_at_creation_are_bounded_too(mon) -> None:
    with mon.span("many.kwargs", **{f"k{i}": i for i in range(MAX_TAGS + 36)}) as span:
        pass
    tags = only(mon, span)["tags"]
    assert len(tags) <= MAX_TAGS + 1
    assert tags["holter.truncated"] == 36


def test_event_fields_are_bounded(mon) -> None:
    with mon.span("wide.event") as span:
        span.log("snapshot", **{f"f{i}": i for i in range(1000)})
    fields = only(mon, span)["events"][0]["fields"]
    assert len(fields) <= MAX_TAGS + 1


def test_a_span_does_not_change_after_it_ended(mon) -> None:
    span = mon.span("sealed", before=1)
    span.end()
    span.set_tag("after", 2)
    span.log("late event")
    span.set_error("Late", "too late")
    row = only(mon, span)
    assert row["tags"] == {"before": 1}
    assert row["events"] == []
    assert row["status"] == "ok"


SURROGATE = b"caf\xff".decode("utf-8", "surrogateescape")  # e.g. a filename from os.listdir


@pytest.mark.parametrize("where", ["error message", "span name", "tag value"])
def test_text_with_lone_surrogates_does_not_block_the_store(mon, where: str) -> None:
    name = f"open {SURROGATE}" if where == "span name" else "open.file"
    with pytest.raises(FileNotFoundError), mon.span(name) as span:
        if where == "tag value":
            span.set_tag("path", SURROGATE)
        raise FileNotFoundError(f"no such file: {SURROGATE if where == 'error message' else 'x'}")
    mon.counter("after.span").inc()
    assert mon.flush() is True
    row = only(mon, span)
    assert row["status"] == "error"
    assert mon.query("after.span", "1h").count == 1
