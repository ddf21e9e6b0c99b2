"""Spans: ids, fields, tags, events, status, ending exactly once, and unfinished spans.

Every test records through a real monitor into a real SQLite store and reads back
through the query API, so what is checked is what the CLI would show.
"""

from __future__ import annotations

import asyncio
import random
import re
import time

import pytest

import holter
import holter.testing
from holter.analysis.critical_path import critical_path
from holter.store import query as q
from holter.store.sqlite import Store

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
SPAN_ID = re.compile(r"^[0-9a-f]{16}$")
SLACK_NS = 10**9  # wall clock vs the store's start times (anchored to the monotonic clock)


def stored(mon, trace_id: str) -> list[dict]:
    mon.flush()
    return q.trace(mon.store, trace_id)


def by_name(rows: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for row in rows:
        assert row["name"] not in out, f"span {row['name']!r} stored twice"
        out[row["name"]] = row
    return out


class LookupFailed(Exception):
    pass


# -- ids ------------------------------------------------------------------------------


def test_ids_are_lowercase_hex_random_and_distinct(mon) -> None:
    made = []
    for _ in range(200):
        with mon.span("root") as root, mon.span("child") as child:
            pass
        made.append((root, child))
    mon.flush()
    listed = q.traces(mon.store, "1h", limit=1000)
    assert len(listed) == 200
    trace_ids: set[str] = set()
    span_ids: set[str] = set()
    for t in listed:
        rows = q.trace(mon.store, t["trace_id"])
        assert len(rows) == 2
        for row in rows:
            assert TRACE_ID.match(row["trace_id"]), row["trace_id"]
            assert SPAN_ID.match(row["span_id"]), row["span_id"]
            assert row["trace_id"] == t["trace_id"]
            span_ids.add(row["span_id"])
        trace_ids.add(t["trace_id"])
    assert len(trace_ids) == 200
    assert len(span_ids) == 400
    assert trace_ids == {root.trace_id_hex for root, _ in made}
    assert span_ids == {s.span_id_hex for pair in made for s in pair}
    # random: every bit of the span ids, and of the low 56 bits of the trace ids (what
    # W3C Trace Context level 2 requires to be random), takes both values.
    for values, bits in (([int(s, 16) for s in span_ids], 64),
                         ([int(t, 16) for t in trace_ids], 56)):
        for bit in range(bits):
            ones = sum((v >> bit) & 1 for v in values)
            assert 0 < ones < len(values), f"bit {bit} never changes"
    for t in trace_ids:
        assert int(t, 16) != 0
    for s in span_ids:
        assert int(s, 16) != 0


def test_seeding_the_global_random_module_does_not_repeat_ids(mon) -> None:
    state = random.getstate()
    try:
        random.seed(1234)
        with mon.span("first") as first:
            pass
        random.seed(1234)
        with mon.span("second") as second:
            pass
    finally:
        random.setstate(state)
    assert first.trace_id != second.trace_id
    assert first.span_id != second.span_id


# -- fields, tags, events ---------------------------------------------------------------


def test_span_fields_tags_events_and_parent(mon) -> None:
    before = time.time_ns()
    with mon.span("handle_request", user="u1", attempt=2) as root:
        assert holter.current_span() is root
        root.set_tag("rows", 3).set_tag("ratio", 0.5).set_tag("cached", False)
        root.log("cache miss", key="k1", size=10)
        with mon.span("db.query") as child:
            assert holter.current_span() is child
            time.sleep(0.002)
        assert holter.current_span() is root
    after = time.time_ns()
    assert holter.current_span() is None

    rows = by_name(stored(mon, root.trace_id_hex))
    assert set(rows) == {"handle_request", "db.query"}
    r, c = rows["handle_request"], rows["db.query"]
    assert mon.run_id is not None
    for row in (r, c):
        assert row["trace_id"] == root.trace_id_hex == child.trace_id_hex
        assert row["status"] == "ok"
        assert row["error_type"] is None
        assert row["error_message"] is None
        assert row["run_id"] == mon.run_id
        assert row["duration_ns"] > 0
    assert r["span_id"] == root.span_id_hex
    assert c["span_id"] == child.span_id_hex
    assert r["parent_id"] is None
    assert c["parent_id"] == r["span_id"]
    assert child.parent_id == root.span_id
    # start: wall-clock ns; duration: ns, the child inside its parent
    assert before - SLACK_NS <= r["start_ns"] <= c["start_ns"] <= after + SLACK_NS
    assert c["duration_ns"] >= 2_000_000
    assert c["duration_ns"] < r["duration_ns"]
    assert c["start_ns"] + c["duration_ns"] <= r["start_ns"] + r["duration_ns"]
    assert r["duration_ns"] == root.duration_ns
    assert c["duration_ns"] == child.duration_ns
    # tags keep their types
    assert r["tags"] == {"user": "u1", "attempt": 2, "rows": 3, "ratio": 0.5, "cached": False}
    assert r["tags"]["cached"] is False
    assert c["tags"] == {}
    # events: timestamped, with fields
    assert len(r["events"]) == 1
    event = r["events"][0]
    assert event["message"] == "cache miss"
    assert event["fields"] == {"key": "k1", "size": 10}
    assert r["start_ns"] - SLACK_NS <= event["t_ns"] <= r["start_ns"] + r["duration_ns"] + SLACK_NS
    assert c["events"] == []


def test_nested_spans_form_one_tree(mon) -> None:
    with mon.span("a") as a:
        with mon.span("b") as b, mon.span("c") as c:
            pass
        with mon.span("d") as d:
            pass
    rows = by_name(stored(mon, a.trace_id_hex))
    assert {n: r["parent_id"] for n, r in rows.items()} == {
        "a": None, "b": a.span_id_hex, "c": b.span_id_hex, "d": a.span_id_hex,
    }
    assert len({s.span_id for s in (a, b, c, d)}) == 4


def test_explicit_context_overrides_the_current_span(mon) -> None:
    with mon.span("other") as other:
        pass
    with mon.span("current") as current:
        with mon.span("adopted", context=other) as adopted:
            assert holter.current_span() is adopted
        with mon.span("normal") as normal:
            pass
    assert adopted.trace_id == other.trace_id
    assert adopted.parent_id == other.span_id
    assert normal.parent_id == current.span_id
    # context=None means "the current span, or a new trace"
    with mon.span("fresh", context=None) as fresh:
        pass
    assert fresh.parent_id is None
    assert fresh.trace_id not in {other.trace_id, current.trace_id}


# -- status -----------------------------------------------------------------------------


def test_exception_marks_the_span_error_and_is_reraised_unchanged(mon) -> None:
    err = LookupFailed("no such user: u1")
    with pytest.raises(LookupFailed) as info, mon.span("outer") as outer, mon.span("inner"):
        raise err
    assert info.value is err
    assert info.value.args == ("no such user: u1",)
    # the traceback still ends where the program raised it
    assert info.traceback[-1].name == (
        "test_exception_marks_the_span_error_and_is_reraised_unchanged")
    assert holter.current_span() is None
    rows = by_name(stored(mon, outer.trace_id_hex))
    for name in ("outer", "inner"):
        assert rows[name]["status"] == "error"
        # not a built-in: named with its module, so look-alike classes stay apart
        assert rows[name]["error_type"] == f"{LookupFailed.__module__}.LookupFailed"
        assert rows[name]["error_message"] == "no such user: u1"


def test_exception_caught_inside_the_parent_marks_only_the_child(mon) -> None:
    with mon.span("parent") as parent:
        try:
            with mon.span("child"):
                raise KeyError("k")
        except KeyError:
            pass
        with mon.span("sibling"):
            pass
    rows = by_name(stored(mon, parent.trace_id_hex))
    assert rows["parent"]["status"] == "ok"
    assert rows["sibling"]["status"] == "ok"
    assert rows["child"]["status"] == "error"
    assert rows["child"]["error_type"] == "KeyError"


def test_set_error_by_hand(mon) -> None:
    with mon.span("manual") as span:
        span.set_error("Timeout", "upstream took too long")
    with mon.span("from.exception") as other:
        other.set_error(ValueError("bad input"))
    row = stored(mon, span.trace_id_hex)[0]
    assert (row["status"], row["error_type"], row["error_message"]) == (
        "error", "Timeout", "upstream took too long")
    row = stored(mon, other.trace_id_hex)[0]
    assert (row["status"], row["error_type"], row["error_message"]) == (
        "error", "ValueError", "bad input")


class StrFails(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


def test_exception_whose_str_raises_still_passes_through_unchanged(mon) -> None:
    err = StrFails()
    with pytest.raises(StrFails) as info, mon.span("odd"):
        raise err
    assert info.value is err


def test_traced_decorator_sync_and_async(mon) -> None:
    @mon.traced("tool.run", tool="lint")
    def run_tool(n: int) -> int:
        with mon.span("tool.step"):
            return n * 2

    @mon.traced()
    async def fetch(n: int) -> int:
        await asyncio.sleep(0)
        return run_tool(n) + 1

    @mon.traced("tool.fail")
    def fail() -> None:
        raise OSError("disk")

    assert run_tool.__name__ == "run_tool"
    assert fetch.__name__ == "fetch"
    assert asyncio.run(fetch(3)) == 7
    with pytest.raises(OSError, match="disk"):
        fail()
    mon.flush()
    fetch_name = "test_traced_decorator_sync_and_async.<locals>.fetch"
    listed = {t["root_name"]: t for t in q.traces(mon.store, "1h", limit=100)}
    assert set(listed) == {fetch_name, "tool.fail"}
    rows = by_name(q.trace(mon.store, listed[fetch_name]["trace_id"]))
    assert set(rows) == {fetch_name, "tool.run", "tool.step"}
    assert rows["tool.run"]["parent_id"] == rows[fetch_name]["span_id"]
    assert rows["tool.step"]["parent_id"] == rows["tool.run"]["span_id"]
    assert rows["tool.run"]["tags"] == {"tool": "lint"}
    fail_row = q.trace(mon.store, listed["tool.fail"]["trace_id"])[0]
    assert (fail_row["status"], fail_row["error_type"]) == ("error", "OSError")


def test_async_with(mon) -> None:
    async def main():
        async with mon.span("async.outer") as outer:
            async with mon.span("async.inner") as inner:
                assert holter.current_span() is inner
            assert holter.current_span() is outer
        return outer, inner

    outer, inner = asyncio.run(main())
    assert inner.parent_id == outer.span_id
    assert len(stored(mon, outer.trace_id_hex)) == 2


# -- ending exactly once ----------------------------------------------------------------


def test_end_twice_keeps_the_first_duration_and_writes_once(mon) -> None:
    span = mon.span("twice")
    assert not span.ended
    time.sleep(0.001)
    span.end()
    first = span.duration_ns
    assert span.ended and first > 0
    time.sleep(0.003)
    span.end()
    assert span.duration_ns == first

    with mon.span("ended.inside.with") as inside:
        inside.end()
        kept = inside.duration_ns
        time.sleep(0.003)
    assert inside.duration_ns == kept

    rows = stored(mon, span.trace_id_hex)
    assert len(rows) == 1
    assert rows[0]["duration_ns"] == first
    rows = stored(mon, inside.trace_id_hex)
    assert len(rows) == 1
    assert rows[0]["duration_ns"] == kept
    for name in ("twice", "ended.inside.with"):
        assert mon.query("span.duration", "1h", tags={"name": name}).count == 1


def test_parent_ended_before_its_children(mon) -> None:
    with mon.span("parent") as parent:
        with mon.span("child") as child:
            parent.end()
            time.sleep(0.003)
        assert holter.current_span() is parent
        with mon.span("late.sibling"):
            pass
    assert holter.current_span() is None
    assert parent.duration_ns < child.duration_ns + (child.start_ns - parent.start_ns)
    rows = by_name(stored(mon, parent.trace_id_hex))
    assert set(rows) == {"parent", "child", "late.sibling"}
    p, c = rows["parent"], rows["child"]
    assert p["duration_ns"] == parent.duration_ns
    assert c["duration_ns"] == child.duration_ns  # the child keeps its own end
    assert c["duration_ns"] >= 3_000_000
    assert c["start_ns"] + c["duration_ns"] > p["start_ns"] + p["duration_ns"]
    assert rows["late.sibling"]["parent_id"] == p["span_id"]
    assert all(r["status"] == "ok" for r in rows.values())
    # the critical path clips the child to its parent's end
    path = critical_path(list(rows.values()), p["span_id"])
    assert sum(step.contribution_ns for step in path) == p["duration_ns"]


def test_spans_ended_by_hand_in_any_order(mon) -> None:
    parent = mon.span("manual.parent")
    child = mon.span("manual.child", context=parent)
    grandchild = mon.span("manual.grandchild", context=child)
    assert holter.current_span() is None  # created, not entered
    parent.end()
    grandchild.end()
    time.sleep(0.001)
    child.end()
    rows = by_name(stored(mon, parent.trace_id_hex))
    assert rows["manual.child"]["parent_id"] == rows["manual.parent"]["span_id"]
    assert rows["manual.grandchild"]["parent_id"] == rows["manual.child"]["span_id"]
    assert rows["manual.child"]["duration_ns"] == child.duration_ns
    assert holter.current_span() is None


def test_exiting_out_of_order_leaves_no_ended_span_current(mon) -> None:
    parent = mon.span("ooo.parent").__enter__()
    child = mon.span("ooo.child").__enter__()
    parent.__exit__(None, None, None)
    child.__exit__(None, None, None)
    assert parent.ended and child.ended
    current = holter.current_span()
    assert current is None, f"{current!r} is still current after every span exited"


def test_span_entered_in_one_task_and_exited_in_another(mon) -> None:
    async def exit_in_child_task():
        span = mon.span("handoff.down")
        span.__enter__()

        async def finish() -> None:
            await asyncio.sleep(0)
            span.__exit__(None, None, None)

        await asyncio.create_task(finish())
        return span

    async def exit_in_parent_task():
        box = {}

        async def begin() -> None:
            box["span"] = mon.span("handoff.up").__enter__()

        await asyncio.create_task(begin())
        await asyncio.sleep(0)
        box["span"].__exit__(None, None, None)
        return box["span"]

    for span in (asyncio.run(exit_in_child_task()), asyncio.run(exit_in_parent_task())):
        assert span.ended
        rows = stored(mon, span.trace_id_hex)
        assert len(rows) == 1
        assert rows[0]["duration_ns"] == span.duration_ns > 0
        assert rows[0]["status"] == "ok"
    assert holter.current_span() is None


# -- unfinished -------------------------------------------------------------------------


def test_span_open_when_the_monitor_stops_is_written_unfinished(db_path: str) -> None:
    with holter.testing.monitor(db=db_path) as mon:
        left = mon.span("left.open", job="j1")
        with mon.span("step", context=left):
            time.sleep(0.002)
        left.log("halfway")
        mon.flush()  # the finished child is written first
        time.sleep(0.002)
        run_id = mon.run_id
    assert not left.ended
    left.end()  # after stop: harmless
    store = Store.open(db_path)
    try:
        rows = by_name(q.trace(store, left.trace_id_hex))
        listed = q.traces(store, "1h")
    finally:
        store.close()
    open_row, step = rows["left.open"], rows["step"]
    assert open_row["status"] == "unfinished"
    assert open_row["duration_ns"] >= 4_000_000  # its duration so far
    assert open_row["parent_id"] is None
    assert open_row["run_id"] == run_id
    assert open_row["tags"] == {"job": "j1"}
    assert [e["message"] for e in open_row["events"]] == ["halfway"]
    assert step["status"] == "ok"
    assert step["parent_id"] == open_row["span_id"]
    assert len(listed) == 1
    assert listed[0]["root_name"] == "left.open"
    assert listed[0]["unfinished"] == 1
    assert listed[0]["spans"] == 2
