"""Critical path and self time over hand-built traces (times in ns).

The critical path walks back from the root's end: at each moment the critical span
is the child that finished last before that moment, or the parent itself when no
child runs on the path. Its segments tile the root's interval exactly, so the
contributions add up to the root's duration.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from holter.analysis.critical_path import critical_path, roots, self_times
from holter.cli.traces import trace_tree


def span(sid: str, parent: str | None, start: int, end: int) -> dict:
    return {"trace_id": "ab" * 16, "span_id": sid, "parent_id": parent, "name": f"op.{sid}",
            "start_ns": start, "duration_ns": end - start}


def path(records: list[dict], root: str | None = None) -> list[tuple[str, int]]:
    return [(step.span_id, step.contribution_ns) for step in critical_path(records, root)]


def assert_tiles_root(records: list[dict], root_id: str) -> None:
    """The path's segments are disjoint, inside each span, and cover the root exactly."""
    root = next(r for r in records if r["span_id"] == root_id)
    by_id = {r["span_id"]: r for r in records}
    steps = critical_path(records, root_id)
    segments = []
    for step in steps:
        s = by_id[step.span_id]
        assert step.contribution_ns == sum(b - a for a, b in step.segments)
        assert step.contribution_ns > 0
        assert step.name == s["name"]
        for a, b in step.segments:
            assert s["start_ns"] <= a < b <= s["start_ns"] + s["duration_ns"]
            segments.append((a, b))
    segments.sort()
    cursor = root["start_ns"]
    for a, b in segments:
        assert a == cursor, f"gap or overlap at {cursor}: next segment {(a, b)}"
        cursor = b
    assert cursor == root["start_ns"] + root["duration_ns"]
    assert sum(step.contribution_ns for step in steps) == root["duration_ns"]


SEQUENTIAL = [span("root", None, 0, 100), span("a", "root", 10, 40), span("b", "root", 50, 90)]
PARALLEL = [span("root", None, 0, 100), span("long", "root", 10, 90),
            span("short", "root", 10, 50), span("mid", "root", 20, 80)]
OVERLAPPING = [span("root", None, 0, 100), span("a", "root", 10, 60), span("b", "root", 40, 90)]
OUTLIVES_PARENT = [span("root", None, 0, 100), span("a", "root", 50, 150),
                   span("g", "a", 120, 140)]
NESTED = [span("root", None, 0, 100), span("a", "root", 10, 90), span("b", "a", 20, 80),
          span("c", "b", 30, 70), span("b2", "a", 20, 50), span("d", "root", 92, 96)]

SCENARIOS = {
    "sequential": (SEQUENTIAL, [("root", 30), ("a", 30), ("b", 40)]),
    "parallel": (PARALLEL, [("root", 20), ("long", 80)]),
    "overlapping": (OVERLAPPING, [("root", 20), ("a", 30), ("b", 50)]),
    "child outlives parent": (OUTLIVES_PARENT, [("root", 50), ("a", 50)]),
    "nested": (NESTED, [("root", 10 + 2 + 4), ("a", 10 + 10), ("b", 10 + 10), ("c", 40),
                        ("d", 4)]),
}


@pytest.mark.parametrize(("records", "expected"), list(SCENARIOS.values()), ids=list(SCENARIOS))
def test_critical_path(records: list[dict], expected: list[tuple[str, int]]) -> None:
    assert path(records) == expected
    assert path(records, "root") == expected
    assert_tiles_root(records, "root")


def test_sequential_segments_of_the_parent() -> None:
    steps = {s.span_id: s for s in critical_path(SEQUENTIAL)}
    assert steps["root"].segments == ((0, 10), (40, 50), (90, 100))
    assert steps["a"].segments == ((10, 40),)
    assert steps["b"].segments == ((50, 90),)


def test_the_shorter_parallel_child_is_off_the_path() -> None:
    ids = [sid for sid, _ in path(PARALLEL)]
    assert "short" not in ids and "mid" not in ids
    # "not just the longest child": the one that ends last decides, however long it is
    records = [span("root", None, 0, 100), span("long.early", "root", 5, 70),
               span("short.late", "root", 75, 95)]
    assert path(records) == [("root", 5 + 5 + 5), ("long.early", 65), ("short.late", 20)]


def test_overlapping_children_are_cut_where_the_next_takes_over() -> None:
    steps = {s.span_id: s for s in critical_path(OVERLAPPING)}
    assert steps["b"].segments == ((40, 90),)
    assert steps["a"].segments == ((10, 40),)


def test_a_child_ending_after_its_parent_is_clipped() -> None:
    steps = {s.span_id: s for s in critical_path(OUTLIVES_PARENT)}
    assert steps["a"].segments == ((50, 100),)
    assert "g" not in steps  # it ran after the parent's end: off the path


def test_a_missing_parent_gives_two_roots_judged_by_the_longest() -> None:
    records = [span("r1", None, 0, 100), span("x", "r1", 10, 50),
               span("orphan", "lost", 200, 500), span("p", "orphan", 250, 300)]
    assert roots(records) == ["r1", "orphan"]
    assert path(records) == [("orphan", 250), ("p", 50)]
    assert path(records, "r1") == [("r1", 60), ("x", 40)]
    assert_tiles_root(records, "orphan")
    assert_tiles_root(records, "r1")
    tree = trace_tree(records)
    assert [(s["span_id"], s["depth"]) for s in tree["spans"]] == [
        ("r1", 0), ("x", 1), ("orphan", 0), ("p", 1)]


def test_deep_trace_needs_no_recursion() -> None:
    depth = 10_000
    records = [span(f"s{i}", f"s{i - 1}" if i else None, i, 2 * depth - i) for i in range(depth)]
    steps = critical_path(records)
    assert len(steps) == depth
    assert [s.span_id for s in steps] == [f"s{i}" for i in range(depth)]
    assert all(s.contribution_ns == 2 for s in steps)
    assert sum(s.contribution_ns for s in steps) == 2 * depth
    assert roots(records) == ["s0"]
    own = self_times(records)
    assert set(own.values()) == {2}
    tree = trace_tree(records)
    assert tree["spans"][-1]["depth"] == depth - 1
    assert len(tree["critical_path"]) == depth


def test_edge_cases() -> None:
    assert critical_path([]) == []
    assert self_times([]) == {}
    assert path([span("only", None, 5, 25)]) == [("only", 20)]
    # identical parallel children: one of them is on the path, never both
    twins = [span("root", None, 0, 100), span("t1", "root", 10, 90), span("t2", "root", 10, 90)]
    ids = [sid for sid, _ in path(twins)]
    assert ids[0] == "root" and len(ids) == 2 and ids[1] in {"t1", "t2"}
    assert_tiles_root(twins, "root")
    # zero-length children and a child that starts after the parent ended
    odd = [span("root", None, 0, 100), span("z", "root", 50, 50), span("after", "root", 120, 130)]
    assert path(odd) == [("root", 100)]
    # bad data: a span naming itself as parent, and a cycle, do not loop forever
    loop = [span("a", "b", 0, 100), span("b", "a", 10, 50), span("c", "c", 0, 10)]
    assert 0 < sum(c for _, c in path(loop, "a")) <= 100
    assert set(self_times(loop)) == {"a", "b", "c"}


def test_a_child_starting_before_its_parent_is_clipped() -> None:
    records = [span("root", None, 0, 100), span("skewed", "root", -10, 50)]
    assert path(records) == [("skewed", 50), ("root", 50)]
    assert_tiles_root(records, "root")


# -- self time --------------------------------------------------------------------------


def test_self_times() -> None:
    assert self_times(SEQUENTIAL) == {"root": 30, "a": 30, "b": 40}
    # parallel children are not subtracted twice: their union is 10..90
    assert self_times(PARALLEL) == {"root": 20, "long": 80, "short": 40, "mid": 60}
    assert self_times(OVERLAPPING) == {"root": 20, "a": 50, "b": 50}
    # a child outliving its parent is clipped to the parent
    assert self_times(OUTLIVES_PARENT) == {"root": 50, "a": 80, "g": 20}
    # only direct children count
    assert self_times(NESTED) == {"root": 16, "a": 20, "b": 20, "c": 40, "b2": 30, "d": 4}
    # a parent fully covered by children has no self time
    covered = [span("root", None, 0, 100), span("a", "root", 0, 60), span("b", "root", 50, 100)]
    assert self_times(covered)["root"] == 0


# -- properties -------------------------------------------------------------------------


@st.composite
def traces(draw: st.DrawFn) -> list[dict]:
    """A random tree: children start inside their parent and may end after it."""
    records = [span("s0", None, 0, draw(st.integers(1, 1000)))]
    for i in range(1, draw(st.integers(1, 25))):
        parent = records[draw(st.integers(0, i - 1))]
        p_start = parent["start_ns"]
        p_end = p_start + parent["duration_ns"]
        start = draw(st.integers(p_start, p_end))
        end = draw(st.integers(start, p_end + draw(st.sampled_from([0, 0, 0, 50]))))
        records.append(span(f"s{i}", parent["span_id"], start, end))
    return records


@settings(max_examples=150, deadline=None)
@given(traces())
def test_the_path_tiles_the_root_of_any_trace(records: list[dict]) -> None:
    assert_tiles_root(records, "s0")
    assert critical_path(records) == critical_path(records, "s0")
    own = self_times(records)
    for r in records:
        assert 0 <= own[r["span_id"]] <= r["duration_ns"]
